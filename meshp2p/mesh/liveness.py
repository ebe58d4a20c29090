"""Which members to dial, and when: a node holds a connection to every member of its view (that is how it sees
one leave, p2p/liveness.py), and keeps dialing, with backoff, the ones it is not connected to.

Rules (`RedialSchedule`, `now` passed in):
- every CONNECT_CHECK_S, each wanted member (in the view, or gone on a lost connection a moment ago) that we hold no
  connection to and whose backoff has passed is dialed;
- a failed dial doubles that member's backoff, from CONNECT_CHECK_S up to CONNECT_BACKOFF_MAX_S; a dial that
  reaches it clears it;
- members no longer wanted are forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

#: How often members we hold no connection to are dialed; a failing one is retried with backoff up to the max.
CONNECT_CHECK_S = 2.0
CONNECT_BACKOFF_MAX_S = 60.0


class RedialSchedule:
    def __init__(self, now: float) -> None:
        self.check_s = CONNECT_CHECK_S
        self.backoff_max_s = CONNECT_BACKOFF_MAX_S
        self._next_check = now + self.check_s
        self._retry: dict[str, tuple[float, float]] = {}  # peer -> (next try, current backoff)

    def next_at(self) -> float:
        return self._next_check

    def due(self, wanted: Collection[str], connected: Callable[[str], bool], now: float) -> list[str]:
        """The members to dial now (call at `next_at`); schedules the next check."""
        self._next_check = now + self.check_s
        for peer in set(self._retry) - set(wanted):
            del self._retry[peer]
        return sorted(p for p in wanted if self._retry.get(p, (0.0, 0.0))[0] <= now and not connected(p))

    def failed(self, peer: str, now: float) -> None:
        backoff = min(2 * self._retry.get(peer, (0.0, self.check_s / 2))[1], self.backoff_max_s)
        self._retry[peer] = (now + backoff, backoff)

    def reached(self, peer: str) -> None:
        self._retry.pop(peer, None)

    def backoff_s(self, peer: str) -> float | None:
        """The current backoff of a member whose dials fail, for status and tests."""
        entry = self._retry.get(peer)
        return None if entry is None else entry[1]
