"""When a member writes and reads the mesh's DHT records (`RecordSchedule`, `now` passed in).

- A listed mesh's member republishes its node record and provider records every REPUBLISH_S (each republish is a
  few DHT walks, ~20 KAD RPCs each; 120 s still leaves two chances before a RECORD_TTL_S record expires).
- The view's leader checks every LISTING_REFRESH_S whether the listing changed (cheap: no I/O unless it did), and
  writes it then, or when the copy it wrote is REPUBLISH_S old.
- On a named mesh the leader looks the listing up every HEAL_SPLIT_S: two nodes that created the same mesh at the
  same moment find each other and merge (one lookup per part of a split mesh is enough).
"""

from __future__ import annotations

from dataclasses import dataclass

RECORD_TTL_S = 300
REPUBLISH_S = 120.0
LISTING_REFRESH_S = 5.0
HEAL_SPLIT_S = 30.0


@dataclass(frozen=True)
class RecordWork:
    """What to do at one check."""

    republish: bool
    check_listing: bool
    heal: bool


class RecordSchedule:
    def __init__(self, now: float, *, listed: bool, named: bool) -> None:
        self.listed, self.named = listed, named
        self.refresh_s, self.republish_s, self.heal_s = LISTING_REFRESH_S, REPUBLISH_S, HEAL_SPLIT_S
        self._next_check = now
        self._last_republish = now - self.republish_s
        self._last_heal = now - self.heal_s

    def next_at(self) -> float:
        return self._next_check

    def due(self, now: float, *, leader: bool) -> RecordWork:
        """The work of the check at `now` (call at `next_at`); the next check is scheduled and what is returned
        counts as done."""
        self._next_check = now + self.refresh_s
        republish = self.listed and now - self._last_republish >= self.republish_s
        heal = self.named and leader and now - self._last_heal >= self.heal_s
        if republish:
            self._last_republish = now
        if heal:
            self._last_heal = now
        return RecordWork(republish=republish, check_listing=self.listed, heal=heal)

    def listing_stale(self, published_at: float, now: float) -> bool:
        """The listing this leader wrote at `published_at` is to be written again even if unchanged."""
        return now - published_at >= self.republish_s
