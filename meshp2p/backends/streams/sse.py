"""Server-sent events (the WHATWG `text/event-stream` format) as whole events, however the bytes are cut.

A model's stream reaches us in chunks that split events anywhere: inside a JSON body, between an `event:` line and
its `data:` line, inside a `\\r\\n`. Failover must see whole events, rewrite some and drop others, so `SseParser`
takes bytes in (`feed`) and hands whole `SseEvent`s out, h11 style: no I/O, nothing from trio. `serialize` writes an
event back. An event is kept as its fields (`event`, `data`, a comment) so that an event passed on unchanged is
written as llama-server wrote it, give or take the line ending.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_EVENT_END = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class SseEvent:
    """One event: its `event:` name (None when it has none, as OpenAI's chat chunks), its `data:` lines joined by
    newlines (None for an event that is only a comment, as llama-server's `:` keep-alive ping)."""

    data: str | None = None
    event: str | None = None
    comment: str | None = None

    def json(self) -> Any:
        """The data as JSON; None when there is none or it is not JSON (`[DONE]`)."""
        if self.data is None:
            return None
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def event_of(data: dict[str, Any], *, event: str | None = None) -> SseEvent:
    """An event carrying `data` as compact JSON, as llama-server writes it."""
    return SseEvent(json.dumps(data, ensure_ascii=False, separators=(",", ":")), event)


def serialize(event: SseEvent) -> bytes:
    """The event as it goes on the wire, ending with the blank line that ends an event."""
    lines: list[str] = []
    if event.comment is not None:
        lines += [":" + line for line in event.comment.split("\n")]
    if event.event is not None:
        lines.append("event: " + event.event)
    if event.data is not None:
        lines += ["data: " + line for line in _LINE_END.split(event.data)]
    return ("\n".join(lines) + "\n\n").encode()


class SseParser:
    """Bytes in, whole events out. `close()` gives the last event when the stream ended without its blank line
    (only for a stream that ended well: an event cut by a break must not be delivered, so a broken stream is
    simply not closed)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk
        out: list[SseEvent] = []
        while (end := _EVENT_END.search(self._buffer)) is not None:
            block, self._buffer = self._buffer[: end.start()], self._buffer[end.end():]
            event = parse_block(block)
            if event is not None:
                out.append(event)
        return out

    def close(self) -> list[SseEvent]:
        block, self._buffer = self._buffer, b""
        event = parse_block(block) if block.strip() else None
        return [event] if event is not None else []


def parse_block(block: bytes) -> SseEvent | None:
    """One event's lines (without the blank line) as an event; None for lines that make none."""
    name: str | None = None
    data: list[str] = []
    comments: list[str] = []
    for line in _LINE_END.split(block.decode("utf-8", "replace")):
        if not line:
            continue
        field, colon, value = line.partition(":")
        if not field and colon:
            comments.append(value)
            continue
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data and name is None:
        return SseEvent(comment="\n".join(comments)) if comments else None
    return SseEvent("\n".join(data) if data else None, name)
