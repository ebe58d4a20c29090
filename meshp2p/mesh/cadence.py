"""When a node gossips its status and its demand: the timing rules as machines, `now` passed in (aioquic style).

Each gossip message costs every member CPU (receive, verify, forward), so an idle mesh stays quiet, and what
matters goes out at once.

Status (`StatusCadence`):
- at start, and whenever our status changes (what `key` the caller derives from it: rtt_ms and load drift, so they
  are left out) or `announce` is called (we just changed what we serve);
- repeated after STATUS_REPEAT_GAPS_S (1, 2, 4 s) at start and for changes in the first YOUNG_S: gossipsub may lose
  a message while the node's gossip mesh forms (a peer whose subscription it has not heard of yet gets nothing);
- otherwise at least every STATUS_INTERVAL_S, the keepalive that keeps us in views we have no connection in.
A change is noticed when the caller next `observe`s, which it does at least every STATUS_CHECK_S.

Demand (`DemandCadence`): every DEMAND_INTERVAL_S while we have some; once it ends, an empty report
DEMAND_EMPTY_REPEATS times so peers drop ours at once, then silence. A node that never had demand sends nothing.

The trio loops in app/mesh_gossip.py only sleep until `next_at()` and send when `due(now)`; tests drive these
machines with plain numbers (tests/mesh/test_cadence.py).
"""

from __future__ import annotations

from collections.abc import Hashable

from meshp2p.mesh import view

#: A new status (at start, or changed while the node is young) is sent again after these gaps (seconds).
STATUS_REPEAT_GAPS_S: tuple[float, ...] = (1.0, 2.0, 4.0)
#: How long after start changes are repeated too. Later, gossipsub's own repair (IHAVE/IWANT) covers a lost
#: message, and repeating every change would cost every member 4 copies per change (at 50 members on one 2-core
#: machine, ~3 s of CPU per change instead of ~1 s: tools/bench/gossip_convergence.py).
YOUNG_S = 30.0
#: How often our own status is looked at for a change worth sending before the next keepalive.
STATUS_CHECK_S = 1.0
DEMAND_INTERVAL_S = 5.0
#: An empty demand report is sent this many times after our demand ends (one may be lost), then no more.
DEMAND_EMPTY_REPEATS = 2


class StatusCadence:
    def __init__(self, now: float) -> None:
        # Read at construction, so a benchmark that stretches the module constants paces every new node.
        self.repeat_gaps = STATUS_REPEAT_GAPS_S
        self.young_s = YOUNG_S
        self.keepalive_s = view.STATUS_INTERVAL_S
        self.check_s = STATUS_CHECK_S
        self.started_at = now
        self._repeats = 0
        self._sent_key: Hashable | None = None
        self._pending = True  # the first status goes out at start
        self._next_send = now

    def observe(self, key: Hashable, now: float) -> None:
        """Our status now (as its key): a change from what we sent last makes a send due."""
        if key != self._sent_key:
            self._changed(now)

    def announce(self, now: float) -> None:
        """Send at once, changed or not."""
        self._changed(now)

    def due(self, now: float) -> bool:
        return self._pending or now >= self._next_send

    def sent(self, key: Hashable, now: float) -> None:
        """A status with `key` went out at `now`: schedule its repeat or the keepalive."""
        gap = self.repeat_gaps[self._repeats] if self._repeats < len(self.repeat_gaps) else self.keepalive_s
        self._repeats += 1
        self._sent_key, self._pending, self._next_send = key, False, now + gap

    def next_at(self, now: float) -> float:
        """When to look again: the next scheduled send, or the next check for a change, whichever is sooner."""
        if self._pending:
            return now
        return min(self._next_send, now + self.check_s)

    def _changed(self, now: float) -> None:
        young = now - self.started_at < self.young_s
        self._repeats = 0 if young else len(self.repeat_gaps)
        self._pending = True


class DemandCadence:
    def __init__(self, now: float) -> None:
        self.interval_s = DEMAND_INTERVAL_S
        self.empty_repeats = DEMAND_EMPTY_REPEATS
        self._empty_left = 0
        self._next = now

    def due(self, now: float) -> bool:
        return now >= self._next

    def report(self, has_demand: bool, now: float) -> bool:
        """It is time to report (`due`): whether to send this report (our rates, or an empty one), and the next
        report is scheduled either way."""
        self._next = now + self.interval_s
        if has_demand:
            self._empty_left = self.empty_repeats
            return True
        if self._empty_left > 0:
            self._empty_left -= 1
            return True
        return False

    def next_at(self) -> float:
        return self._next
