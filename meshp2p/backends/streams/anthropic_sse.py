"""Anthropic message events (`/v1/messages`) across servers.

The stream is `message_start`, then content blocks (`content_block_start`, `content_block_delta`...,
`content_block_stop`, each with its `index`), then `message_delta` (stop reason, output usage) and `message_stop`;
`ping` and `error` may come between. The client keeps the first server's `message_start` (its `message.id` and its
input usage, counted on the request as the client sent it); a replacement's `message_start`, and its
`content_block_start` for the text block the client has open, are dropped, and its block indices are mapped onto
the client's. An answer continues as a final assistant message holding the text so far (after any prefill the
client gave), which llama-server continues as a prefill; `message_delta`'s output count is made the whole answer's.
"""

from __future__ import annotations

from typing import Any

from meshp2p.backends.streams.sse import SseEvent, event_of
from meshp2p.backends.streams.tracker import Delivered, adjusted_usage, fewer_tokens, with_assistant_text

_DROP, _CHANGED = object(), object()
_TOOL_BLOCKS = ("tool_use", "server_tool_use")
_THINKING_BLOCKS = ("thinking", "redacted_thinking")


class AnthropicTracker:
    """One Messages stream over as many servers as it takes."""

    def __init__(self) -> None:
        self.delivered = Delivered()
        self.id: Any = None
        self._blocks = 0
        self._server_blocks: dict[Any, int] = {}
        self._open_text: int | None = None
        self._started = False
        self._delta_sent = False
        self._stop_sent = False

    def take(self, event: SseEvent) -> list[SseEvent]:
        data = event.json()
        if not isinstance(data, dict):
            return [event]
        kind = data.get("type") or event.event
        if kind == "message_start":
            if self._started:
                return []
            self._started = True
            message = data.get("message")
            self.id = message.get("id") if isinstance(message, dict) else None
            return [event]
        if kind == "content_block_start":
            return self._block_start(event, data)
        if kind in ("content_block_delta", "content_block_stop"):
            server_index = data.get("index")
            index = self._server_blocks.get(server_index, server_index)
            changed = index != server_index
            if kind == "content_block_delta":
                outcome = self._note_delta(data.get("delta"))
                if outcome is _DROP:
                    return []
                changed |= outcome is _CHANGED
            elif index == self._open_text:
                self.delivered.closing = True
            if not changed:
                return [event]
            data["index"] = index
            return [event_of(data, event=event.event)]
        if kind == "message_delta":
            self._delta_sent = True
            if self.delivered.replaced and isinstance(data.get("usage"), dict):
                adjusted_usage(data["usage"], self.delivered, prompt="input_tokens", answer="output_tokens")
                return [event_of(data, event=event.event)]
        elif kind == "message_stop":
            self._stop_sent = True
        return [event]

    def _block_start(self, event: SseEvent, data: dict[str, Any]) -> list[SseEvent]:
        block = data.get("content_block")
        kind = block.get("type") if isinstance(block, dict) else None
        server_index = data.get("index")
        if kind == "text" and self.delivered.replaced and self._open_text is not None:
            self._server_blocks[server_index] = self._open_text
            return []
        if kind in _TOOL_BLOCKS:
            self.delivered.tool_call = True
        elif kind in _THINKING_BLOCKS:
            self.delivered.reasoning = True
        index = self._blocks
        self._blocks += 1
        self._server_blocks[server_index] = index
        if kind == "text":
            self._open_text = index
        if index == server_index:
            return [event]
        data["index"] = index
        return [event_of(data, event=event.event)]

    def _note_delta(self, delta: Any) -> object:
        """Note one delta, cutting a replacement's repeat of its prefill out of a text delta: `_DROP` when nothing
        of it is new, `_CHANGED` when it was cut, else None."""
        kind = delta.get("type") if isinstance(delta, dict) else None
        if kind == "text_delta" and isinstance(delta, dict):
            text = delta.get("text")
            if isinstance(text, str) and text:
                delta["text"] = new = self.delivered.add_text(text)
                return _DROP if not new else _CHANGED if new != text else None
        elif kind == "input_json_delta":
            self.delivered.tool_call = True
        elif kind in ("thinking_delta", "signature_delta"):
            self.delivered.reasoning = True
        return None

    def done(self) -> list[SseEvent] | None:
        if self._stop_sent:
            return []
        return [event_of({"type": "message_stop"}, event="message_stop")] if self._delta_sent else None

    def refusal(self) -> str | None:
        return self.delivered.refusal()

    def continuation(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        if self.refusal() is not None:
            return None
        body = fewer_tokens(payload, self.delivered)
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        continued = with_assistant_text(messages, self.delivered.text)
        if continued is None:
            return None
        body["messages"] = continued
        return body

    def next_server(self) -> None:
        self.delivered.next_server(echo=self.delivered.text)
        self._server_blocks = {}
