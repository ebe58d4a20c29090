"""What every stream format's tracker shares: the seam failover drives, and the record of what was delivered.

A tracker sits between the servers of one answer and its client. It is pure (events in, events out, no I/O) and
does three things for its format:

- `take(event)`: note what the event delivers (`Delivered`), rewrite it so the client reads one stream (the first
  server's ids, one numbering, the fields the official SDKs index by) and return what the client gets: usually the
  event, nothing for a replacement server's opening events the client already had;
- `continuation(payload)`: the request body that makes another server continue the answer where it broke (the text
  so far given to the model as what it already said), or None when it cannot be continued honestly, and `refusal()`
  says why: a tool call or reasoning was in flight (replaying it would give the client its deltas twice, or a
  different call), or the answer had begun to close;
- `done()`: the events that finish a stream whose answer was whole when it broke (None when it was not).

`next_server()` tells it that the events that follow come from a replacement.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Protocol

from meshp2p.backends.streams.sse import SseEvent

#: The request fields that bound the answer's length, in each family (llama-server reads them all).
MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "n_predict")


class StreamTracker(Protocol):
    def take(self, event: SseEvent) -> list[SseEvent]:
        """What the client gets for `event`."""
        ...

    def done(self) -> list[SseEvent] | None:
        """The events that end a stream whose answer was whole when it broke; None when it was not."""
        ...

    def refusal(self) -> str | None:
        """Why the answer cannot be continued on another server; None when it can."""
        ...

    def continuation(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The body that continues the answer on another server (None: see `refusal`)."""
        ...

    def next_server(self) -> None:
        """The events that follow come from a replacement server."""
        ...


@dataclass
class Delivered:
    """What the client has been given so far, whichever server gave it."""

    #: The answer's visible text (content deltas; a completion's text).
    text: str = ""
    #: Text deltas delivered: llama-server sends one per token, so this is the answer's token count.
    tokens: int = 0
    #: Tokens counted by the servers that broke (the rest of the count comes from the last server's usage).
    tokens_before: int = 0
    tool_call: bool = False
    reasoning: bool = False
    #: The answer had begun to close (its text block or item finished) when it broke.
    closing: bool = False
    servers: int = 1
    #: What a replacement server is expected to repeat first: llama-server b11434 streams a prefilled assistant
    #: text back as the start of its first content delta (` u'1}}}}X` + `#`), which the client already has.
    echo: str = ""

    def refusal(self) -> str | None:
        if self.tool_call:
            return "a tool call was in flight (its deltas are never replayed)"
        if self.reasoning:
            return "the model was reasoning (reasoning is never replayed)"
        if self.closing:
            return "the answer was closing"
        return None

    def next_server(self, *, echo: str = "") -> None:
        """The events that follow come from a replacement, which may first repeat `echo` (its prefill)."""
        self.tokens_before = self.tokens
        self.servers += 1
        self.echo = echo

    def add_text(self, piece: str) -> str:
        """Note a text delta and return what of it is new: a replacement's repeat of its prefill is cut off. (A
        replacement whose first text does not start with the prefill is taken not to repeat it.)"""
        if self.echo:
            if piece.startswith(self.echo):
                piece, self.echo = piece[len(self.echo):], ""
            elif self.echo.startswith(piece):
                self.echo = self.echo[len(piece):]
                return ""
            else:
                self.echo = ""
        if piece:
            self.text += piece
            self.tokens += 1
        return piece

    @property
    def replaced(self) -> bool:
        """Whether the events now come from a replacement server."""
        return self.servers > 1


def fewer_tokens(payload: dict[str, Any], delivered: Delivered) -> dict[str, Any]:
    """A copy of `payload` that asks for what is left of the answer's token budget (at least one)."""
    body = copy.deepcopy(payload)
    for key in MAX_TOKEN_FIELDS:
        if isinstance(body.get(key), int) and not isinstance(body[key], bool):
            body[key] = max(1, body[key] - delivered.tokens)
    return body


def with_assistant_text(messages: list[Any], text: str) -> list[Any] | None:
    """`messages` ending with an assistant message that holds `text` after what it held (a prefill the client
    gave itself stays in front): llama-server continues a final assistant message instead of starting a new one,
    and refuses two assistant messages in a row. None when the last message's content has a shape we cannot extend.
    """
    out = list(messages)
    if not text:
        return out
    last = out[-1] if out else None
    if not (isinstance(last, dict) and last.get("role") == "assistant"):
        return [*out, {"role": "assistant", "content": text}]
    if last.get("tool_calls"):
        return None
    content = last.get("content")
    if content is None or isinstance(content, str):
        out[-1] = {**last, "content": (content or "") + text}
        return out
    if isinstance(content, list):
        out[-1] = {**last, "content": [*content, {"type": "text", "text": text}]}
        return out
    return None


def adjusted_usage(usage: Any, delivered: Delivered, *, prompt: str, answer: str) -> None:
    """Make the last server's usage (in place) the answer's: its output count plus what the servers before it
    delivered, and its prompt count less the text they delivered, which it read as part of its prompt. (Re-tokenized,
    that text may not be exactly `tokens_before` tokens; the count is the closest the stream can know.)"""
    if not isinstance(usage, dict) or not delivered.tokens_before:
        return
    if isinstance(usage.get(answer), int):
        usage[answer] += delivered.tokens_before
    if isinstance(usage.get(prompt), int):
        usage[prompt] = max(0, usage[prompt] - delivered.tokens_before)
    if isinstance(usage.get("total_tokens"), int) and isinstance(usage.get(prompt), int) \
            and isinstance(usage.get(answer), int):
        usage["total_tokens"] = usage[prompt] + usage[answer]
