"""Tokens in and out of an answer, read from the `usage` it carries, whole or streamed. Bytes in, numbers out.

The families name them differently: OpenAI's chat and completions `prompt_tokens` / `completion_tokens`; the
Responses API and Anthropic `input_tokens` / `output_tokens`. Streams carry usage in their events: OpenAI's final
chunk (llama-server sends it; OpenAI's clients ask with `stream_options.include_usage`), the Responses API's
`response.completed` (under `response`), Anthropic's `message_start` (input, under `message`) and `message_delta`
(output so far, cumulative). For each side the last number seen wins, which is right for all of them.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

#: A whole answer longer than this is not parsed for usage (embeddings of big batches): only its request counts.
MAX_PARSED_BYTES = 4 * 1024 * 1024
_IN_NAMES = ("prompt_tokens", "input_tokens")
_OUT_NAMES = ("completion_tokens", "output_tokens")


def usage_of(document: Any) -> tuple[int | None, int | None]:
    """(tokens in, tokens out) of one answer or event; None for a side it does not say."""
    if not isinstance(document, dict):
        return None, None
    usage = document.get("usage")
    if not isinstance(usage, dict):
        for inner in ("response", "message"):  # Responses' response.completed, Anthropic's message_start
            if isinstance(document.get(inner), dict):
                return usage_of(document[inner])
        return None, None
    return _first_int(usage, _IN_NAMES), _first_int(usage, _OUT_NAMES)


def _first_int(usage: dict[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


class TokenCounter:
    """Fed an answer's body as it is sent (`feed`), says its tokens at the end (`result`).

    A stream (`text/event-stream`) is scanned line by line, and only `data:` lines that mention `usage` are
    parsed, so a long stream costs a substring search per line; a whole JSON answer is kept (up to
    MAX_PARSED_BYTES) and parsed once.
    """

    def __init__(self, *, stream: bool) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._too_long = False
        self.tokens_in: int | None = None
        self.tokens_out: int | None = None

    def feed(self, chunk: bytes) -> None:
        if self._too_long:
            return
        self._buffer += chunk
        if self.stream:
            *lines, rest = bytes(self._buffer).split(b"\n")
            self._buffer = bytearray(rest)
            for line in lines:
                self._line(line)
        if len(self._buffer) > MAX_PARSED_BYTES:
            self._too_long, self._buffer = True, bytearray()

    def result(self) -> tuple[int, int]:
        if self.stream:
            self._line(bytes(self._buffer))
        elif not self._too_long and self._buffer:
            with contextlib.suppress(ValueError):
                self._take(json.loads(self._buffer))
        self._buffer = bytearray()
        return self.tokens_in or 0, self.tokens_out or 0

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:") or b'"usage"' not in line:
            return
        with contextlib.suppress(ValueError):
            self._take(json.loads(line[5:]))

    def _take(self, document: Any) -> None:
        tokens_in, tokens_out = usage_of(document)
        if tokens_in is not None:
            self.tokens_in = tokens_in
        if tokens_out is not None:
            self.tokens_out = tokens_out
