"""The demand map: how many API requests per minute each model gets, across the whole mesh.

Every node counts the requests its API receives per model id in a `DemandCounter`, including models nobody
serves (they are "wanted": the reason a standby node loads a model), and gossips its recent rates on the
`demand` topic every few seconds. Each node merges the reports, its own included (applied as a report from
itself), in a `DemandMap`: a peer's report replaces its previous one and expires DEMAND_TTL_S after it arrived,
so the demand of a node that left fades out within two minutes. Election reads the merged totals.

Counting uses DEMAND_BUCKET_S time buckets, so memory is bounded (DEMAND_WINDOW_S / DEMAND_BUCKET_S buckets per
model, at most MAX_MODELS_TRACKED models, least recently requested evicted first) and a request leaves the
window between 55 and 60 s after it was made.

Reports come from other nodes, so `DemandMap.apply` drops what it cannot use instead of failing, with the
report writer's own rule (`clean_rates` in wire/demand.py, which also holds the gossip body and its strict
reader): sums stay finite whatever a peer sends.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from meshp2p.wire.demand import clean_rates, valid_model_id

DEMAND_WINDOW_S = 60.0
DEMAND_BUCKET_S = 5.0
DEMAND_TTL_S = 120.0
MAX_MODELS_TRACKED = 256
#: Reports are signed gossip, so peers are bounded by membership; this bounds memory against a flood anyway.
MAX_DEMAND_PEERS = 4096

_BUCKETS = round(DEMAND_WINDOW_S / DEMAND_BUCKET_S)
_PER_MIN = 60.0 / DEMAND_WINDOW_S


class DemandCounter:
    """This node's own request counts per model over the last DEMAND_WINDOW_S, in requests per minute."""

    def __init__(self) -> None:
        # model id -> (bucket index, count), oldest first; the dict is ordered least recently requested first.
        self._models: OrderedDict[str, deque[tuple[int, int]]] = OrderedDict()

    def record(self, model_id: str, now: float) -> bool:
        """Count one request; False (not counted) for a model id that could never be gossiped."""
        if not valid_model_id(model_id):
            return False
        bucket = math.floor(now / DEMAND_BUCKET_S)
        buckets = self._models.get(model_id)
        if buckets is None:
            if len(self._models) >= MAX_MODELS_TRACKED:
                self._models.popitem(last=False)
            buckets = self._models[model_id] = deque(maxlen=_BUCKETS)
        else:
            self._models.move_to_end(model_id)
        if buckets and buckets[-1][0] >= bucket:
            # Same bucket, or a clock that stepped back: count it in the newest bucket rather than reorder.
            last, count = buckets[-1]
            buckets[-1] = (last, count + 1)
        else:
            buckets.append((bucket, 1))
        return True

    def rates(self, now: float) -> dict[str, float]:
        """Requests per minute per model over the window; models with no request in it are forgotten."""
        oldest = math.floor(now / DEMAND_BUCKET_S) - _BUCKETS
        result: dict[str, float] = {}
        for model_id in list(self._models):
            count = sum(c for b, c in self._models[model_id] if b > oldest)
            if count:
                result[model_id] = count * _PER_MIN
            else:
                del self._models[model_id]
        return result


@dataclass(frozen=True)
class _Report:
    rates: dict[str, float]
    at: float


class DemandMap:
    """The mesh's demand: the latest report of each peer (this node included) until it is DEMAND_TTL_S old."""

    def __init__(self) -> None:
        self._reports: OrderedDict[str, _Report] = OrderedDict()

    def apply(self, peer_id: str, rates: Mapping[str, float], now: float) -> bool:
        """Store `peer_id`'s report; False if one received later is already held (gossip can reorder)."""
        held = self._reports.get(peer_id)
        if held is not None and held.at > now:
            return False
        self._reports.pop(peer_id, None)
        self._reports[peer_id] = _Report(clean_rates(rates), now)
        while len(self._reports) > MAX_DEMAND_PEERS:
            self._reports.popitem(last=False)
        return True

    def expire(self, now: float) -> list[str]:
        """Forget reports older than DEMAND_TTL_S; returns whose."""
        gone = [p for p, r in self._reports.items() if now - r.at > DEMAND_TTL_S]
        for peer_id in gone:
            del self._reports[peer_id]
        return gone

    def total(self, now: float) -> dict[str, float]:
        """Requests per minute per model, summed over live reports."""
        totals: dict[str, float] = {}
        for report in self._reports.values():
            if now - report.at > DEMAND_TTL_S:
                continue
            for model_id, rate in report.rates.items():
                totals[model_id] = totals.get(model_id, 0.0) + rate
        return totals

    def wanted(self, now: float, served: Collection[str]) -> list[str]:
        """Models with demand that no node serves, hottest first (ties by model id, so every node agrees)."""
        totals = self.total(now)
        return sorted((m for m in totals if m not in served), key=lambda m: (-totals[m], m))

