"""Rate limits: requests per minute (a sliding 60 s window) and requests in flight, per key or client address.

Pure: `now` is passed in, nothing sleeps. The window keeps each admitted request's time and admits a new one while
fewer than `limit` fall in the last 60 s, so "600 per minute" holds over every minute, not only aligned ones; when
full, the retry-after is when the oldest request leaves the window. A limit counts only admitted requests: a
refused client that keeps asking does not push its own retry time back.

Counters of idle subjects are dropped by `sweep(now)`, so a node that met a million addresses does not keep them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable

WINDOW_S = 60.0
#: What a client told "too many in flight" waits: a stream may end any moment, and nothing says when.
BUSY_RETRY_S = 1


class RequestWindow:
    """At most `limit` requests per WINDOW_S for each subject."""

    def __init__(self) -> None:
        self._times: dict[Hashable, deque[float]] = {}

    def admit(self, subject: Hashable, limit: int, now: float) -> int | None:
        """Count a request of `subject` and return None, or return the whole seconds to wait (≥ 1) without
        counting it."""
        times = self._times.setdefault(subject, deque())
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        if len(times) >= limit:
            return max(1, math.ceil(times[0] + WINDOW_S - now))
        times.append(now)
        return None

    def sweep(self, now: float) -> None:
        for subject in [s for s, t in self._times.items() if not t or t[-1] <= now - WINDOW_S]:
            del self._times[subject]

    def __len__(self) -> int:
        return len(self._times)


class InFlight:
    """At most `limit` requests of each subject at once; each admitted request is released once, when it ends."""

    def __init__(self) -> None:
        self._count: dict[Hashable, int] = {}

    def acquire(self, subject: Hashable, limit: int) -> bool:
        count = self._count.get(subject, 0)
        if count >= limit:
            return False
        self._count[subject] = count + 1
        return True

    def release(self, subject: Hashable) -> None:
        count = self._count.get(subject, 0) - 1
        if count > 0:
            self._count[subject] = count
        else:
            self._count.pop(subject, None)

    def __getitem__(self, subject: Hashable) -> int:
        return self._count.get(subject, 0)
