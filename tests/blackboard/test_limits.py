"""Blackboard policy: configurable limits, the per-author sliding-window rate, the replay filter, and the gate."""

from __future__ import annotations

import pytest

from meshp2p.blackboard import BLACKBOARD_REASONS, BlackboardLimits, PostGate, RateLimiter, ReplayFilter
from meshp2p.errors import ConfigError
from meshp2p.wire import WIRE_REASONS, Identity
from meshp2p.wire.blackboard import Post, decode_post, encode_post

A = Identity.from_seed(bytes(range(32)))
B = Identity.from_seed(bytes(range(32, 64)))
NOW = 1_750_000_000.0


def post(ident: Identity = A, text: str = "hello", now: float = NOW) -> Post:
    return decode_post(encode_post(ident, text=text, now=now), now=now, ttl_s=3600)


def test_defaults_follow_the_issue() -> None:
    limits = BlackboardLimits()
    assert (limits.rate_per_min, limits.max_text_bytes, limits.ttl_s, limits.capacity) == (10, 4096, 172800, 500)


@pytest.mark.parametrize(
    "changes",
    [
        {"rate_per_min": 0},
        {"rate_per_min": 1.5},
        {"max_text_bytes": 0},
        {"max_text_bytes": 4097},
        {"ttl_s": 10},
        {"capacity": 0},
        {"capacity": True},
    ],
)
def test_bad_limits_are_config_errors_with_a_hint(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        BlackboardLimits(**changes)  # type: ignore[arg-type]
    assert info.value.hint


def test_reasons_are_wire_reasons_plus_over_rate() -> None:
    assert {"over_rate"} == BLACKBOARD_REASONS - WIRE_REASONS
    assert {"oversized", "bad_signature", "expired", "future", "replay", "malformed"} <= BLACKBOARD_REASONS


def test_rate_is_a_sliding_window_per_author() -> None:
    rate = RateLimiter(10)
    assert all(rate.allow("a", now=NOW + i) for i in range(10))  # 10 posts over 9 s
    assert not rate.allow("a", now=NOW + 10)
    assert rate.allow("b", now=NOW + 10), "another author has their own budget"
    assert not rate.allow("a", now=NOW + 59.999)
    assert rate.allow("a", now=NOW + 60), "the first post left the window"
    assert not rate.allow("a", now=NOW + 60.5)
    assert rate.allow("a", now=NOW + 61)


def test_refused_posts_do_not_count() -> None:
    rate = RateLimiter(2)
    assert rate.allow("a", now=NOW) and rate.allow("a", now=NOW)
    for i in range(100):  # a flood while over the limit does not push the window forward
        assert not rate.allow("a", now=NOW + i * 0.5)
    assert rate.allow("a", now=NOW + 60)


def test_rate_memory_is_bounded() -> None:
    rate = RateLimiter(3, max_authors=100)
    for i in range(1000):
        rate.allow(f"author-{i}", now=NOW)
    assert len(rate) == 100
    assert rate.allow("author-0", now=NOW), "forgotten authors start over"


def test_replay_filter_is_bounded_and_forgets_the_oldest() -> None:
    seen = ReplayFilter(max_ids=3)
    for i in range(4):
        seen.add(bytes([i]) * 16)
    assert bytes([0]) * 16 not in seen and bytes([3]) * 16 in seen and len(seen) == 3
    seen.add(bytes([1]) * 16)  # refreshed: now the newest
    seen.add(bytes([4]) * 16)
    assert bytes([1]) * 16 in seen and bytes([2]) * 16 not in seen


def test_gate_checks_size_then_replay_then_rate() -> None:
    gate = PostGate(BlackboardLimits(rate_per_min=2, max_text_bytes=10))
    first, second, third = (post(text=f"post {i}", now=NOW + i) for i in range(3))
    assert gate.admit(first, now=NOW) is None
    assert gate.admit(first, now=NOW) == "replay", "a duplicate does not spend the author's budget"
    assert gate.admit(second, now=NOW + 1) is None
    assert gate.admit(third, now=NOW + 2) == "over_rate"
    assert gate.admit(third, now=NOW + 61) is None, "refused posts are not remembered as seen"
    assert gate.admit(post(text="more than ten bytes"), now=NOW) == "oversized"
    assert gate.admit(post(B, text="from B"), now=NOW + 2) is None


def test_gate_lets_sync_posts_past_the_rate() -> None:
    gate = PostGate(BlackboardLimits(rate_per_min=1))
    posts = [post(text=f"old {i}", now=NOW - 3600 + i) for i in range(5)]
    assert [gate.admit(p, now=NOW, rate_limited=False) for p in posts] == [None] * 5
    assert gate.admit(posts[0], now=NOW, rate_limited=False) == "replay"
