"""OpenAI Responses events (`/v1/responses`) across servers, and made whole for the official SDK on every stream.

llama-server b11434 writes the events' names and bodies but leaves out fields OpenAI's SDK indexes by: no
`sequence_number` anywhere, no `output_index` / `content_index` on item, part and text events, no `logprobs` on
text events, and response objects without `created_at`, `model`, `output`, `tools`, `tool_choice`,
`parallel_tool_calls` (openai's `client.responses.stream()` helper fails on the first delta:
`output.content[None]`). So every Responses stream passes through `ResponsesTracker`, failover or not:

- events are numbered 0, 1, 2... (`sequence_number`) in the order the client gets them;
- output items are numbered in the order they were added (`output_index`; llama-server's order: reasoning, the
  message, then function calls) and each text event points at its item's only part (`content_index` 0);
- response objects get the fields the types require (this stream's id, `created_at`, the request's model...).

Across servers: the client keeps the first server's `response.id` and item ids; a replacement's
`response.created` / `response.in_progress`, and its `output_item.added` / `content_part.added` for the message the
client already has open, are dropped; the text of the final events (`output_text.done`, `content_part.done`,
`output_item.done`, `response.completed`) is the text the client was given, whoever gave it. An answer continues
as the input (a list) with the partial assistant message appended, which llama-server continues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshp2p.backends.streams.sse import SseEvent, event_of
from meshp2p.backends.streams.tracker import Delivered, adjusted_usage, fewer_tokens

#: The usage details openai's `ResponseUsage` requires, which llama-server leaves out (0: none of them happen).
_USAGE_DETAILS = {"input_tokens_details": ("cached_tokens", "cache_write_tokens"),
                  "output_tokens_details": ("reasoning_tokens",)}


@dataclass
class _Item:
    """One output item as the client knows it."""

    type: str
    id: Any
    text: str = ""
    has_part: bool = False


class ResponsesTracker:
    """One Responses stream over as many servers as it takes; `payload` is the request (its model and tools fill
    the response objects), `created_at` the time the stream began."""

    def __init__(self, payload: dict[str, Any], *, created_at: int) -> None:
        self.delivered = Delivered()
        self.id: Any = None
        self.created_at = created_at
        self._defaults = {
            "model": payload.get("model"),
            "tools": payload["tools"] if isinstance(payload.get("tools"), list) else [],
            "tool_choice": payload.get("tool_choice", "auto"),
            "parallel_tool_calls": payload.get("parallel_tool_calls", True),
        }
        self._seq = 0
        self._items: list[_Item] = []
        self._server_items: dict[Any, int] = {}
        self._open_message: int | None = None
        self._created_sent = False
        self._completed_sent = False

    # The events, each to what the client gets.

    def take(self, event: SseEvent) -> list[SseEvent]:
        data = event.json()
        if not isinstance(data, dict):
            return [event]
        kind = data.get("type") or event.event
        if kind is None and isinstance(data.get("error"), dict):
            kind = "error"  # llama-server ends a failed Responses stream with a bare `{"error": {...}}`
            data.update(type="error", message=data["error"].get("message"), code=data["error"].get("code"),
                        param=None)
        keep = self._rewrite(str(kind), data)
        if not keep:
            return []
        data["sequence_number"] = self._seq
        self._seq += 1
        return [event_of(data, event=event.event if event.event is not None else str(kind))]

    def _rewrite(self, kind: str, data: dict[str, Any]) -> bool:
        """Note and rewrite one event in place; False drops it."""
        if kind in ("response.created", "response.in_progress", "response.queued"):
            if self.delivered.replaced or (kind == "response.created" and self._created_sent):
                return False
            self._created_sent = True
            self._response(data, final=False)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._completed_sent = True
            self._response(data, final=True)
        elif kind == "response.output_item.added":
            return self._item_added(data)
        elif kind == "response.content_part.added":
            item = self._point(data)
            if item.has_part:
                return False
            item.has_part = True
            _default_part(data.get("part"), "")
        elif kind == "response.output_text.delta":
            item = self._point(data)
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                data["delta"] = new = self.delivered.add_text(delta)
                if not new:
                    return False  # only the replacement repeating its prefill
                item.text += new
            data.setdefault("logprobs", [])
        elif kind in ("response.output_text.done", "response.content_part.done"):
            item = self._point(data)
            self.delivered.closing = True
            if kind == "response.output_text.done":
                data["text"] = item.text
                data.setdefault("logprobs", [])
            else:
                _default_part(data.get("part"), item.text)
        elif kind == "response.output_item.done":
            self.delivered.closing = True
            raw = data.get("item")
            if isinstance(raw, dict):
                index = self._index(raw.get("id"))
                data["output_index"] = index
                self._final_item(raw, index)
        elif kind.startswith(("response.reasoning", "response.function_call_arguments")):
            self._point(data)
            if kind.startswith("response.reasoning"):
                self.delivered.reasoning = True
            else:
                self.delivered.tool_call = True
        elif "item_id" in data:
            self._point(data)
        return True

    def _item_added(self, data: dict[str, Any]) -> bool:
        raw = data.get("item")
        if not isinstance(raw, dict):
            return True
        kind = str(raw.get("type"))
        if kind == "message" and self.delivered.replaced and self._open_message is not None:
            # The replacement opens the message the client has open: the same item, under the first server's id.
            self._server_items[raw.get("id")] = self._open_message
            return False
        if kind == "function_call":
            self.delivered.tool_call = True
        elif kind == "reasoning":
            self.delivered.reasoning = True
        index = len(self._items)
        self._items.append(_Item(kind, raw.get("id")))
        self._server_items[raw.get("id")] = index
        if kind == "message":
            self._open_message = index
        data["output_index"] = index
        return True

    def _index(self, server_id: Any) -> int:
        """The client's output index of the current server's item `server_id` (the open message, or the last item,
        for one it never announced)."""
        index = self._server_items.get(server_id)
        if index is None:
            index = self._open_message if self._open_message is not None else max(0, len(self._items) - 1)
            if not self._items:
                self._items.append(_Item("message", server_id))
        return index

    def _point(self, data: dict[str, Any]) -> _Item:
        """Give an event about an item the client's `output_index`, `content_index` and item id."""
        index = self._index(data.get("item_id"))
        item = self._items[index]
        data["item_id"] = item.id
        data["output_index"] = index
        data.setdefault("content_index", 0)
        return item

    def _final_item(self, raw: dict[str, Any], index: int) -> None:
        """A finished output item as the client knows it: its first id, and for the message the text given."""
        item = self._items[index]
        raw["id"] = item.id
        if raw.get("type") == "message":
            content = raw.get("content")
            if isinstance(content, list) and content and isinstance(content[0], dict):
                _default_part(content[0], item.text)
            elif item.text:
                raw["content"] = [_default_part({"type": "output_text"}, item.text)]

    def _response(self, data: dict[str, Any], *, final: bool) -> None:
        response = data.get("response")
        if not isinstance(response, dict):
            response = data["response"] = {}
        if self.id is None:
            self.id = response.get("id")
            if isinstance(response.get("created_at"), int):
                self.created_at = response["created_at"]
        response["id"] = self.id
        response["created_at"] = self.created_at
        response.setdefault("object", "response")
        for key, value in self._defaults.items():
            response.setdefault(key, value)
        if response.get("model") is None:
            response["model"] = self._defaults["model"]
        output = response.get("output")
        if not final or not isinstance(output, list):
            response.setdefault("output", [])
            return
        placed: list[tuple[int, dict[str, Any]]] = []
        for raw in output:
            if isinstance(raw, dict):
                index = self._index(raw.get("id"))
                self._final_item(raw, index)
                placed.append((index, raw))
        response["output"] = [raw for _, raw in sorted(placed, key=lambda pair: pair[0])]
        usage = response.get("usage")
        if isinstance(usage, dict):
            adjusted_usage(usage, self.delivered, prompt="input_tokens", answer="output_tokens")
            for key, zeros in _USAGE_DETAILS.items():
                details = usage.setdefault(key, {})
                if isinstance(details, dict):
                    for name in zeros:
                        details.setdefault(name, 0)

    # Failover.

    def done(self) -> list[SseEvent] | None:
        return [] if self._completed_sent else None

    def refusal(self) -> str | None:
        return self.delivered.refusal()

    def continuation(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        if self.refusal() is not None:
            return None
        body = fewer_tokens(payload, self.delivered)
        given = body.get("input")
        if isinstance(given, str):
            items: list[Any] = [{"role": "user", "content": given}]
        elif isinstance(given, list):
            items = list(given)
        else:
            return None
        if self.delivered.text:
            items.append({"type": "message", "role": "assistant",
                          "content": [{"type": "output_text", "text": self.delivered.text}]})
        body["input"] = items
        return body

    def next_server(self) -> None:
        self.delivered.next_server(echo=self.delivered.text)
        self._server_items = {}


def _default_part(part: Any, text: str) -> dict[str, Any]:
    """An `output_text` part with the fields the SDK's type requires, holding `text` (unless it is another kind)."""
    if not isinstance(part, dict):
        return {}
    part.setdefault("type", "output_text")
    if part["type"] == "output_text":
        part["text"] = text
        part.setdefault("annotations", [])
    return part
