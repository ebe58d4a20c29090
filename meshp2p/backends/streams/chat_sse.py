"""OpenAI chat and completion chunks (`/v1/chat/completions`, `/v1/completions`) across servers.

The events are `data: {chunk}` lines and a last `data: [DONE]`. Every chunk of one stream carries one `id` and
`created`; a replacement server's chunks are given the first server's. Its opening role-only delta
(`{"role": "assistant", "content": null}`) is dropped when the client already had one. An answer continues as
the prompt plus the text so far (completions) or a final assistant message holding it, which llama-server continues
(chat); a usage chunk is made the whole answer's (tracker.adjusted_usage).
"""

from __future__ import annotations

from typing import Any

from meshp2p.backends.endpoints import CHAT_PATH
from meshp2p.backends.streams.sse import SseEvent, event_of
from meshp2p.backends.streams.tracker import Delivered, adjusted_usage, fewer_tokens, with_assistant_text

DONE = "[DONE]"
_DROP, _CHANGED = object(), object()


class ChatTracker:
    """One chat or completion stream (`path` says which), over as many servers as it takes."""

    def __init__(self, path: str) -> None:
        self.chat = path == CHAT_PATH
        self.delivered = Delivered()
        self.id: str | None = None
        self.created: int | None = None
        self._role_sent = False
        self._finish_sent = False
        self._done_sent = False
        self._choices: set[Any] = set()

    def take(self, event: SseEvent) -> list[SseEvent]:
        if event.data is not None and event.data.strip() == DONE:
            self._done_sent = True
            return [event]
        data = event.json()
        if not isinstance(data, dict) or "error" in data:
            return [event]
        if self.id is None:
            self.id, self.created = data.get("id"), data.get("created")
        rewritten = self.delivered.replaced and (data.get("id"), data.get("created")) != (self.id, self.created)
        if rewritten:
            data["id"], data["created"] = self.id, self.created
        drop = False
        for choice in data.get("choices") or []:
            if isinstance(choice, dict):
                note = self._note(choice)
                drop |= note is _DROP
                rewritten |= note is _CHANGED
        if drop and len(data.get("choices") or []) == 1:
            return []
        if self.delivered.replaced and isinstance(data.get("usage"), dict):
            adjusted_usage(data["usage"], self.delivered, prompt="prompt_tokens", answer="completion_tokens")
            rewritten = True
        return [event_of(data, event=event.event)] if rewritten else [event]

    def _note(self, choice: dict[str, Any]) -> object:
        """Note what one choice delivers, cutting a replacement's repeat of its prefill out of it: `_DROP` when
        nothing of it is new (a role-only delta the client had, a delta that only repeats), `_CHANGED` when it was
        cut, else None."""
        self._choices.add(choice.get("index") or 0)
        if choice.get("finish_reason") is not None:
            self._finish_sent = True
        if not self.chat:
            text = choice.get("text")
            if isinstance(text, str) and text:
                self.delivered.add_text(text)
            return None
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return None
        content = delta.get("content")
        outcome: object = None
        if isinstance(content, str) and content:
            new = self.delivered.add_text(content)
            if new != content:
                delta["content"] = new
                outcome = _CHANGED if new or choice.get("finish_reason") is not None else _DROP
        if delta.get("tool_calls"):
            self.delivered.tool_call = True
            return None
        if delta.get("reasoning_content"):
            self.delivered.reasoning = True
            return None
        if delta.get("role") and not content:
            again = self._role_sent
            self._role_sent = True
            return _DROP if again else None
        return outcome

    def done(self) -> list[SseEvent] | None:
        if self._done_sent:
            return []
        return [SseEvent(DONE)] if self._finish_sent else None

    def refusal(self) -> str | None:
        why = self.delivered.refusal()
        if why is None and len(self._choices) > 1:
            return "the answer has several choices"
        return why

    def continuation(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        if self.refusal() is not None:
            return None
        body = fewer_tokens(payload, self.delivered)
        if not self.chat:
            if not isinstance(body.get("prompt"), str):
                return None
            body["prompt"] += self.delivered.text
            return body
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        continued = with_assistant_text(messages, self.delivered.text)
        if continued is None:
            return None
        body["messages"] = continued
        return body

    def next_server(self) -> None:
        self.delivered.next_server(echo=self.delivered.text if self.chat else "")
