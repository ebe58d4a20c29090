"""Tokens in and out, read from each family's `usage`, whole and streamed (split at any byte)."""

from __future__ import annotations

import json

from meshp2p.access.tokens import TokenCounter, usage_of
from meshp2p.access.usage import UsageBook


def _stream(events: list[dict[str, object]]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def _count(body: bytes, *, stream: bool, step: int) -> tuple[int, int]:
    counter = TokenCounter(stream=stream)
    for i in range(0, len(body), step):
        counter.feed(body[i:i + step])
    return counter.result()


def test_each_familys_usage_names() -> None:
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 5}}) == (3, 5)
    assert usage_of({"usage": {"input_tokens": 7, "output_tokens": 2}}) == (7, 2)
    assert usage_of({"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 9}}}) \
        == (4, 9)
    assert usage_of({"type": "message_start", "message": {"usage": {"input_tokens": 6, "output_tokens": 1}}}) == (6, 1)
    assert usage_of({"choices": []}) == (None, None) and usage_of([1]) == (None, None)


def test_whole_and_streamed_answers_split_anywhere() -> None:
    whole = json.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 8}}).encode()
    anthropic = _stream([{"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}},
                         {"type": "content_block_delta", "delta": {"text": "hi usage"}},
                         {"type": "message_delta", "usage": {"output_tokens": 20}}])
    for step in (1, 7, 4096):
        assert _count(whole, stream=False, step=step) == (11, 8)
        assert _count(anthropic, stream=True, step=step) == (12, 20)
    assert _count(b"not json", stream=False, step=3) == (0, 0)


def test_usage_book_counts_and_round_trips() -> None:
    book = UsageBook()
    book.request("k1", 5.0)
    book.tokens("k1", 3, 4)
    book.tokens("k1", 1, 1)
    assert book.dirty and book.of("k1").tokens_in == 4 and book.of("nobody").requests == 0
    again = UsageBook.from_json(json.loads(json.dumps(book.to_json())))
    assert again.of("k1") == book.of("k1") and not again.dirty
