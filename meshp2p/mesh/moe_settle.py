"""When a `--moe shard` group is formed enough to plan: the settle rule, a machine with `now` passed in.

Members that start together appear in each other's views one by one (each after its own hashing and calibration,
and a gossip round), and every arrival changes the plan (mesh/moe_shards.py). Planning at each arrival makes a
node write a shard, load it, then rewrite and reload another moments later: seconds to minutes of disk and load
time for a large model, for nothing. So, for one group:

1. Until the group is formed, a plan waits: the group is formed once what the member sees of it (the members
   and the usage it plans with, `key`) has been unchanged for SETTLE_S, or MAX_SETTLE_WAIT_S after the member
   first looked, whichever comes first (so a steady stream of arrivals cannot hold the first plan back forever).
2. Once formed, it stays formed: every change re-plans at once, as a member leaving must (its sessions have
   moved to the other shards, which must cover its experts again).

The trio loop (app/moe_shards.py) calls `observe(key, now)` each time it looks at its group and plans only when
it returns True; `next_at()` says when to look again while settling. Tests drive it with plain numbers
(tests/mesh/test_moe_settle.py).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

#: Rule 1: how long the group must stay the same before the first plan. Longer than a gossip round and the first
#: status repeat (1 s, mesh/cadence.py), so members announcing within a couple of seconds of each other plan once;
#: short next to writing and loading a shard, which is what a wrong first plan would cost twice.
SETTLE_S = 3.0
#: Rule 1's cap: members joining less than SETTLE_S apart for this long get a plan anyway (re-planned later).
MAX_SETTLE_WAIT_S = 15.0


@dataclass
class GroupSettle:
    """Rules 1 and 2 for one group, as seen by one member."""

    settle_s: float = SETTLE_S
    max_wait_s: float = MAX_SETTLE_WAIT_S
    first_at: float | None = None
    changed_at: float = 0.0
    key: Hashable = None
    formed: bool = False

    def observe(self, key: Hashable, now: float) -> bool:
        """What the member sees of its group now (`key`: equal while the group is the same); True: plan now."""
        if self.first_at is None:
            self.first_at, self.changed_at, self.key = now, now, key
        elif key != self.key:
            self.changed_at, self.key = now, key
        if not self.formed:
            self.formed = now - self.changed_at >= self.settle_s or now - self.first_at >= self.max_wait_s
        return self.formed

    def next_at(self) -> float | None:
        """When the group would be formed if nothing changes; None: formed (or never looked at)."""
        if self.formed or self.first_at is None:
            return None
        return min(self.changed_at + self.settle_s, self.first_at + self.max_wait_s)
