"""The demand map: how many API requests per minute each model gets, across the whole mesh.

Every node counts the requests its API receives per model id in a `DemandCounter`, including models nobody
serves (they are "wanted": the reason a standby node loads a model), and gossips its recent rates on the
`demand` topic every few seconds. Each node merges the reports, its own included (applied as a report from
itself), in a `DemandMap`: a peer's report replaces its previous one and expires DEMAND_TTL_S after it arrived,
so the demand of a node that left fades out within two minutes. Election reads the merged totals.

Counting uses DEMAND_BUCKET_S time buckets, so memory is bounded (DEMAND_WINDOW_S / DEMAND_BUCKET_S buckets per
model, at most MAX_MODELS_TRACKED models, least recently requested evicted first) and a request leaves the
window between 55 and 60 s after it was made.

Reports come from other nodes, so `DemandMap.apply` drops what it cannot use instead of failing: rates that
are negative, zero, NaN or infinite, model ids that are empty or over MAX_MODEL_ID_CHARS, and all but the
MAX_MODELS_PER_REPORT hottest models; rates above MAX_REQ_PER_MIN are clamped, so sums stay finite.
The gossip body reader (`demand_from_body`) is strict instead: a malformed body is rejected whole.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

DEMAND_TYPE = "demand"
DEMAND_WINDOW_S = 60.0
DEMAND_BUCKET_S = 5.0
DEMAND_TTL_S = 120.0
MAX_MODELS_TRACKED = 256
MAX_MODELS_PER_REPORT = 64
MAX_MODEL_ID_CHARS = 128
#: Far above any real mesh; only there so a hostile or buggy report cannot push sums to infinity.
MAX_REQ_PER_MIN = 1_000_000.0
#: Reports are signed gossip, so peers are bounded by membership; this bounds memory against a flood anyway.
MAX_DEMAND_PEERS = 4096

_BUCKETS = round(DEMAND_WINDOW_S / DEMAND_BUCKET_S)
_PER_MIN = 60.0 / DEMAND_WINDOW_S


def _valid_model_id(model_id: object) -> bool:
    return type(model_id) is str and 0 < len(model_id) <= MAX_MODEL_ID_CHARS


class DemandCounter:
    """This node's own request counts per model over the last DEMAND_WINDOW_S, in requests per minute."""

    def __init__(self) -> None:
        # model id -> (bucket index, count), oldest first; the dict is ordered least recently requested first.
        self._models: OrderedDict[str, deque[tuple[int, int]]] = OrderedDict()

    def record(self, model_id: str, now: float) -> bool:
        """Count one request; False (not counted) for a model id that could never be gossiped."""
        if not _valid_model_id(model_id):
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


def clean_rates(rates: Mapping[str, float]) -> dict[str, float]:
    """The usable part of a report: see the module docstring for what is dropped and clamped."""
    clean: dict[str, float] = {}
    for model_id, rate in rates.items():
        value: object = rate
        if not _valid_model_id(model_id) or type(value) not in (int, float):
            continue
        number = float(rate)
        if math.isfinite(number) and number > 0:
            clean[model_id] = min(number, MAX_REQ_PER_MIN)
    if len(clean) > MAX_MODELS_PER_REPORT:
        hottest = sorted(clean.items(), key=lambda mr: (-mr[1], mr[0]))[:MAX_MODELS_PER_REPORT]
        clean = dict(hottest)
    return clean


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


def demand_to_body(rates: Mapping[str, float]) -> dict[str, Any]:
    """The `demand` gossip body for our rates; cleaned the same way receivers clean, so it always decodes."""
    return {"rates": clean_rates(rates)}


def demand_from_body(body: object) -> dict[str, float]:
    """Strict reader for a `demand` body; raises ValueError on anything malformed. Unknown keys are ignored."""
    if type(body) is not dict:
        raise ValueError("demand body is not a map")
    rates: object = body.get("rates")
    if type(rates) is not dict:
        raise ValueError("demand body has no 'rates' map")
    if len(rates) > MAX_MODELS_PER_REPORT:
        raise ValueError(f"demand body has {len(rates)} models > {MAX_MODELS_PER_REPORT}")
    result: dict[str, float] = {}
    for model_id, rate in rates.items():
        if not _valid_model_id(model_id):
            raise ValueError(f"demand model id {model_id!r} is not 1..{MAX_MODEL_ID_CHARS} characters of text")
        if type(rate) is not float or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"demand rate for {model_id!r} is not a finite float >= 0: {rate!r}")
        result[model_id] = rate
    return result
