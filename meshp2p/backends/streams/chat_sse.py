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
        opening_again = False
        for choice in data.get("choices") or []:
            if isinstance(choice, dict):
                opening_again |= self._note(choice)
        if opening_again and len(data.get("choices") or []) == 1:
            return []
        if self.delivered.replaced and isinstance(data.get("usage"), dict):
            adjusted_usage(data["usage"], self.delivered, prompt="prompt_tokens", answer="completion_tokens")
            rewritten = True
        return [event_of(data, event=event.event)] if rewritten else [event]

    def _note(self, choice: dict[str, Any]) -> bool:
        """Note what one choice delivers; True for a replacement's role-only delta, which the client had."""
        self._choices.add(choice.get("index"))
        if choice.get("finish_reason") is not None:
            self._finish_sent = True
        if not self.chat:
            text = choice.get("text")
            if isinstance(text, str) and text:
                self.delivered.text += text
                self.delivered.tokens += 1
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.delivered.text += content
            self.delivered.tokens += 1
        if delta.get("tool_calls"):
            self.delivered.tool_call = True
        if delta.get("reasoning_content"):
            self.delivered.reasoning = True
        if delta.get("role") and not content and not delta.get("tool_calls") and not delta.get("reasoning_content"):
            again = self._role_sent
            self._role_sent = True
            return again
        return False

    def done(self) -> list[SseEvent] | None:
        if self._done_sent:
            return []
        return [SseEvent(DONE)] if self._finish_sent else None

    def refusal(self) -> str | None:
        if len(self._choices) > 1:
            return "the answer has several choices"
        return self.delivered.refusal()

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
        self.delivered.next_server()
