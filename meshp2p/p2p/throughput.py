"""When is a transfer too slow to keep waiting for? A sans-IO rule: bytes and `now` come in, a verdict goes out.

A fetch from mesh members that crawls (a member on a thin uplink, `--max-upload-mbps` on the other side, a busy
machine) should give way to the hub instead of holding a node's model back for hours. The rule: once `grace_s`
have passed since the first byte was asked for (opening sessions and the first chunks take a moment), the rate
over the last `window_s` must stay at or above `min_bytes_per_s`; the first time it does not, the transfer is too
slow. A window, not the average since the start, so an early burst does not hide a stall, and one slow second does
not condemn a fetch that is doing well.
"""

from __future__ import annotations

from collections import deque

#: Seconds after the start before the floor applies.
GRACE_S = 5.0
#: The rate is measured over this many seconds.
WINDOW_S = 5.0


class ThroughputFloor:
    def __init__(self, min_bytes_per_s: float, *, start: float, grace_s: float = GRACE_S,
                 window_s: float = WINDOW_S) -> None:
        if min_bytes_per_s <= 0 or window_s <= 0 or grace_s < 0:
            raise ValueError("the floor, the window and the grace must be positive")
        self.min_bytes_per_s = min_bytes_per_s
        self.start = start
        self.grace_s = grace_s
        self.window_s = window_s
        #: (time, bytes so far), oldest first; the oldest kept is at or before the window's start.
        self._samples: deque[tuple[float, int]] = deque([(start, 0)])

    def observe(self, total_bytes: int, now: float) -> None:
        """The transfer has moved `total_bytes` in all by `now`."""
        self._samples.append((now, total_bytes))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def rate(self, now: float) -> float:
        """Bytes per second over the last window (or since the start, if shorter)."""
        since, before = self._samples[0]
        latest = self._samples[-1][1]
        elapsed = now - since
        return (latest - before) / elapsed if elapsed > 0 else float("inf")

    def too_slow(self, now: float) -> float | None:
        """The rate measured, when it is below the floor after the grace; None while the transfer may go on."""
        if now - self.start < max(self.grace_s, self.window_s):  # a whole window, after the grace
            return None
        self.observe(self._samples[-1][1], now)
        rate = self.rate(now)
        return rate if rate < self.min_bytes_per_s else None

    def next_check_at(self, now: float) -> float:
        """When asking again can give another answer: at the end of the grace, then once a second."""
        return max(now + 1.0, self.start + max(self.grace_s, self.window_s))
