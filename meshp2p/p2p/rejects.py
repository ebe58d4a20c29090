"""Counted refusals: every hostile or broken input a node turns away, by source and reason (`dht:expired`,
`tunnel:not_member`, ...). The counts are reported in status; nothing refused is ever fatal."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class RejectCounter:
    """How many hostile or broken inputs were refused, by source and reason (`dht:expired`, ...)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, source: str, reason: str) -> None:
        self.counts[f"{source}:{reason}"] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
