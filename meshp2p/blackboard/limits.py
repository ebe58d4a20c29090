"""What a node accepts onto its blackboard beyond the wire rules: text size, rate per author, replays.

Pure and in memory, `now` passed in (unix seconds). The store is the authority on replays across restarts
(`BlackboardStore.add` returns False for an id it holds); `ReplayFilter` answers the common case, a post
delivered twice in a few minutes, without a disk read. Rejections carry a `RejectReason`: a wire reason from
`decode_post`, or `over_rate`, which only this layer gives.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

from meshp2p.errors import ConfigError
from meshp2p.wire.blackboard import DEFAULT_POST_TTL_S, MAX_POST_AHEAD_S, MAX_TEXT_BYTES, Post
from meshp2p.wire.errors import WireReason

#: The sliding window the rate is counted over.
RATE_WINDOW_S = 60.0
#: Authors (rate limiter) and post ids (replay filter) remembered; the least recently used go first.
MAX_TRACKED_AUTHORS = 4096
MAX_SEEN_IDS = 8192

#: Reasons a post is refused for: what `decode_post` / `post_from_gossip` raise, plus the policy's own.
RejectReason = WireReason | Literal["over_rate"]
#: Every reason a blackboard rejection is counted under, for metrics that pre-register their labels.
BLACKBOARD_REASONS: frozenset[str] = frozenset(
    {"malformed", "oversized", "bad_version", "bad_signature", "expired", "future", "key_mismatch", "replay"}
    | {"over_rate"}
)


@dataclass(frozen=True)
class BlackboardLimits:
    """A node's blackboard policy, set in `$MESHP2P_HOME/config.toml` (app/config.py); defaults per the issue."""

    #: Posts accepted per author in any 60 s window (live posts; the author's own node holds itself to it too).
    rate_per_min: int = 10
    #: May only lower the protocol's 4096-byte limit: peers with the default would drop longer posts anyway.
    max_text_bytes: int = MAX_TEXT_BYTES
    #: Posts older than this are refused and pruned.
    ttl_s: int = DEFAULT_POST_TTL_S
    #: Posts kept: the newest N, older ones pruned.
    capacity: int = 500

    def __post_init__(self) -> None:
        if type(self.rate_per_min) is not int or self.rate_per_min < 1:
            raise ConfigError(f"blackboard rate_per_min={self.rate_per_min!r}", hint="use a whole number ≥ 1")
        if type(self.max_text_bytes) is not int or not 1 <= self.max_text_bytes <= MAX_TEXT_BYTES:
            raise ConfigError(
                f"blackboard max_text_bytes={self.max_text_bytes!r}", hint=f"use 1..{MAX_TEXT_BYTES} (the protocol's)"
            )
        if type(self.ttl_s) is not int or self.ttl_s < MAX_POST_AHEAD_S:
            raise ConfigError(f"blackboard ttl_s={self.ttl_s!r}", hint=f"use at least {MAX_POST_AHEAD_S} seconds")
        if type(self.capacity) is not int or self.capacity < 1:
            raise ConfigError(f"blackboard capacity={self.capacity!r}", hint="keep at least 1 post")


class RateLimiter:
    """At most `rate_per_min` posts per author in any sliding 60 s window, counted at arrival (`now`).

    Arrival time, not the post's `ts`: an author could spread back-dated posts over the whole TTL. Memory is
    bounded: `rate_per_min` times per author, `max_authors` authors, the least recently active forgotten first
    (a forgotten author starts a fresh window, which costs at most one extra burst).
    """

    def __init__(self, rate_per_min: int, *, max_authors: int = MAX_TRACKED_AUTHORS) -> None:
        if rate_per_min < 1 or max_authors < 1:
            raise ValueError("rate_per_min and max_authors must be ≥ 1")
        self._rate = rate_per_min
        self._max_authors = max_authors
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, author: str, *, now: float) -> bool:
        """True, and the post counted, if `author` is under the rate; False (nothing counted) if over it."""
        times = self._times.get(author)
        if times is None:
            times = deque(maxlen=self._rate)
            self._times[author] = times
        while times and times[0] <= now - RATE_WINDOW_S:
            times.popleft()
        self._times.move_to_end(author)
        if len(times) >= self._rate:
            return False
        times.append(now)
        if len(self._times) > self._max_authors:
            self._times.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._times)


class ReplayFilter:
    """Post ids accepted recently (at most `max_ids`, oldest first out): a second delivery is a `replay`."""

    def __init__(self, *, max_ids: int = MAX_SEEN_IDS) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be ≥ 1")
        self._max_ids = max_ids
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, post_id: object) -> bool:
        return post_id in self._seen

    def add(self, post_id: bytes) -> None:
        self._seen[post_id] = None
        self._seen.move_to_end(post_id)
        if len(self._seen) > self._max_ids:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


class PostGate:
    """The policy checks in order, for a post `decode_post` accepted: size, replay, rate.

    Replay comes before rate, so a duplicate never spends its author's budget. Only an accepted post is
    remembered; a refused one may come back (from sync, after the window) and be accepted then.
    """

    def __init__(self, limits: BlackboardLimits, *, max_authors: int = MAX_TRACKED_AUTHORS) -> None:
        self.limits = limits
        self.rate = RateLimiter(limits.rate_per_min, max_authors=max_authors)
        self.seen = ReplayFilter(max_ids=max(MAX_SEEN_IDS, 2 * limits.capacity))

    def admit(self, post: Post, *, now: float, rate_limited: bool = True) -> RejectReason | None:
        """None if accepted (and remembered), else why not. `rate_limited=False` for posts from sync, which are
        old and bounded by the reply size instead."""
        if len(post.text.encode("utf-8")) > self.limits.max_text_bytes:
            return "oversized"
        if post.id in self.seen:
            return "replay"
        if rate_limited and not self.rate.allow(post.author, now=now):
            return "over_rate"
        self.seen.add(post.id)
        return None
