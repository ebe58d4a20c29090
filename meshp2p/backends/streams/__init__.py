"""Streamed answers in each format a model path speaks, kept one stream across servers (tracker.py says how).

`tracker_for` picks the format's tracker for a streamed request: chat and completion chunks (`chat_sse.py`),
Responses events (`responses_sse.py`) and Anthropic message events (`anthropic_sse.py`), all over `sse.py`.
"""

from __future__ import annotations

from typing import Any

from meshp2p.backends.endpoints import CHAT_PATH, COMPLETIONS_PATH, MESSAGES_PATH, RESPONSES_PATH
from meshp2p.backends.streams.anthropic_sse import AnthropicTracker
from meshp2p.backends.streams.chat_sse import ChatTracker
from meshp2p.backends.streams.responses_sse import ResponsesTracker
from meshp2p.backends.streams.tracker import StreamTracker


def tracker_for(path: str, payload: dict[str, Any], *, now: float) -> StreamTracker | None:
    """The tracker of a stream answered at `path` (`now`: when it began); None for a path whose stream is passed
    on as it comes and cannot be continued."""
    path = path.split("?", 1)[0]
    if path in (CHAT_PATH, COMPLETIONS_PATH):
        return ChatTracker(path)
    if path == RESPONSES_PATH:
        return ResponsesTracker(payload, created_at=int(now))
    if path == MESSAGES_PATH:
        return AnthropicTracker()
    return None
