"""Who serves what: when a standby node (or a host with room to spare) starts serving another model.

Every node runs `plan_promotions` on its own gossiped view of the mesh and the merged demand map. The views are
(nearly) the same everywhere and the function is deterministic, so the nodes agree on who should act without a
single extra message: no voting, no leader, no locks.

What needs a new server, in priority order (ties: higher demand first, then model id):
(a) orphaned: a model last served at most ORPHAN_MEMORY_S ago that has no server now (its last server left).
    It is taken up whether or not it has demand right now: someone was using it a moment ago.
(b) wanted: a model with demand (> 0 req/min in the demand map) that nobody serves.
(c) hot: a served model that needs another replica. per_server(m) = demand(m) / max(1, servers(m)); a served
    model is hot when per_server(m) >= HOT_MIN_REQ_PER_MIN and per_server(m) >= HOT_IMBALANCE x the median
    per_server of the other served models (or there are no other served models). Hottest (per server) first.
A node that is loading a model counts as its server (`NodeInfo.loading`): a load already under way is not
started again elsewhere, and its replica already shares the load.

Who may take it: a node whose role is "standby" or "host" (clients, workers of a pipeline and bootstrap nodes
never promote), that has the model on disk (`available`), does not serve or load it yet, is not loading anything
else, and has free_mb >= FIT_HEADROOM x the model's size (an unknown size does not disqualify). A node that
failed to load a model should drop it from `available` for a while, so the ranking moves past it.

Stampede avoidance: the eligible candidates for a model are ranked by a key every node computes alike:
standby before host, then most free memory (in FREE_MB_RANK_STEP_MB steps, so jitter between two status
messages does not reorder them), then lowest load, then a hash of (peer_id, model_id), which spreads different
models over otherwise equal nodes. The k-th ranked candidate (0-based) may promote once
now - unserved_since[model] >= k x PROMOTION_GRACE_S: the first goes at once, and if the model still needs a
server PROMOTION_GRACE_S later (the first one died, or is stuck), the next one goes, and so on. An orphaned model
therefore has its first taker at once and two backups within 10 s (of the decision; loading takes longer).
The tie-break deliberately has no time epoch in it: an order that rotates every few seconds would let a second
node see itself first while the first one's "loading" status is still on its way, which is the stampede this
avoids; a first candidate that never acts is already passed over by the grace rule.

This only works if a promotion is visible at once: the promoting node must list the model in its own
`loading` (and gossip it) from the moment it decides, or the grace rule sends the next candidates after it while
it loads.

Each node promotes at most one model per decision. Several needs are handled in parallel: walking the needs in
priority order, the first-ranked candidate of each need is set aside, so the next need goes to someone else.

`NeedTracker` keeps the two timers the caller owes `plan_promotions` (when each model was last served, and since
when each model has needed a server).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from meshp2p.mesh.planner import FIT_HEADROOM
from meshp2p.mesh.view import MeshView
from meshp2p.wire.status import Role

HOT_MIN_REQ_PER_MIN = 10.0
HOT_IMBALANCE = 3.0
PROMOTION_GRACE_S = 5.0
#: A model whose last server left longer ago than this is no longer orphaned (only wanted, if it has demand).
ORPHAN_MEMORY_S = 300.0
FREE_MB_RANK_STEP_MB = 1024
PROMOTING_ROLES = (Role.STANDBY, Role.HOST)
#: Roles whose `loaded` models count as served (a client or bootstrap node serves nothing).
SERVER_ROLES = frozenset({Role.HOST, Role.WORKER, Role.STANDBY})

Reason = Literal["orphaned", "wanted", "hot"]
_EMPTY: Mapping[str, float] = MappingProxyType({})
_EMPTY_SIZES: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True)
class NodeInfo:
    """One node as election sees it; `loading` are models it has started loading but does not serve yet."""

    peer_id: str
    role: Role
    loaded: frozenset[str]
    available: frozenset[str]
    capacity_mb: int
    free_mb: int
    load: float
    loading: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MeshSnapshot:
    peers: tuple[NodeInfo, ...]

    def node(self, peer_id: str) -> NodeInfo | None:
        return next((n for n in self.peers if n.peer_id == peer_id), None)


@dataclass(frozen=True)
class Promotion:
    model_id: str
    reason: Reason


@dataclass(frozen=True)
class Need:
    """A model that needs one more server, and why."""

    model_id: str
    reason: Reason


def snapshot_from_view(view: MeshView) -> MeshSnapshot:
    """Election's input from the gossiped view. Status carries free memory only, so capacity equals free here."""
    peers = []
    for peer in view.peers.values():
        status = peer.status
        memory_mb = status.vram_mb or status.ram_mb
        peers.append(NodeInfo(peer.peer_id, status.role, frozenset(status.loaded), frozenset(status.available),
                              capacity_mb=memory_mb, free_mb=memory_mb, load=status.load,
                              loading=frozenset(status.loading)))
    return MeshSnapshot(tuple(sorted(peers, key=lambda n: n.peer_id)))


def server_counts(view: MeshSnapshot) -> dict[str, int]:
    """Servers per model, nodes loading it included (see the module docstring)."""
    counts: dict[str, int] = {}
    for node in view.peers:
        if node.role in SERVER_ROLES:
            for model_id in node.loaded | node.loading:
                counts[model_id] = counts.get(model_id, 0) + 1
    return counts


def _demand_of(demand: Mapping[str, float], model_id: str) -> float:
    rate = demand.get(model_id, 0.0)
    return rate if math.isfinite(rate) and rate > 0 else 0.0


def per_server_demand(view: MeshSnapshot, demand: Mapping[str, float]) -> dict[str, float]:
    """req/min per server of every served model."""
    return {m: _demand_of(demand, m) / max(1, n) for m, n in server_counts(view).items()}


def hot_models(view: MeshSnapshot, demand: Mapping[str, float]) -> list[str]:
    """Served models that need another replica (rule (c)), hottest per server first."""
    loads = per_server_demand(view, demand)
    hot = []
    for model_id, load in loads.items():
        others = [v for m, v in loads.items() if m != model_id]
        if load >= HOT_MIN_REQ_PER_MIN and (not others or load >= HOT_IMBALANCE * statistics.median(others)):
            hot.append(model_id)
    return sorted(hot, key=lambda m: (-loads[m], m))


def needs(view: MeshSnapshot, demand: Mapping[str, float], *, now: float,
          recently_served: Mapping[str, float]) -> list[Need]:
    """Every model that needs one more server, in the priority order of the module docstring."""
    served = server_counts(view)

    def by_demand(model_id: str) -> tuple[float, str]:
        return (-_demand_of(demand, model_id), model_id)

    orphaned = sorted((m for m, seen in recently_served.items()
                       if m not in served and now - seen <= ORPHAN_MEMORY_S), key=by_demand)
    taken = set(orphaned)
    wanted = sorted((m for m in demand if _demand_of(demand, m) > 0 and m not in served and m not in taken),
                    key=by_demand)
    return ([Need(m, "orphaned") for m in orphaned] + [Need(m, "wanted") for m in wanted]
            + [Need(m, "hot") for m in hot_models(view, demand)])


def is_eligible(node: NodeInfo, model_id: str, model_sizes_mb: Mapping[str, int]) -> bool:
    """May this node start serving `model_id` (see the module docstring)?"""
    if node.role not in PROMOTING_ROLES or node.loading:
        return False
    if model_id not in node.available or model_id in node.loaded:
        return False
    size_mb = model_sizes_mb.get(model_id)
    return size_mb is None or node.free_mb >= FIT_HEADROOM * size_mb


def _tiebreak(peer_id: str, model_id: str) -> int:
    digest = hashlib.sha256(f"{peer_id}\x00{model_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def rank_candidates(view: MeshSnapshot, model_id: str, *,
                    model_sizes_mb: Mapping[str, int] = _EMPTY_SIZES) -> list[NodeInfo]:
    """Eligible nodes for `model_id`, in the order they may take it (identical on every node with this view)."""

    def key(node: NodeInfo) -> tuple[int, int, float, int, str]:
        load = node.load if math.isfinite(node.load) else math.inf
        return (PROMOTING_ROLES.index(node.role), -(node.free_mb // FREE_MB_RANK_STEP_MB), load,
                _tiebreak(node.peer_id, model_id), node.peer_id)

    return sorted((n for n in view.peers if is_eligible(n, model_id, model_sizes_mb)), key=key)


def plan_promotions(
    view: MeshSnapshot,
    demand: Mapping[str, float],
    *,
    self_id: str,
    now: float,
    recently_served: Mapping[str, float] = _EMPTY,
    unserved_since: Mapping[str, float] = _EMPTY,
    model_sizes_mb: Mapping[str, int] = _EMPTY_SIZES,
) -> Promotion | None:
    """The one model this node should start serving now, if any.

    `recently_served`: model -> when it last had a server; `unserved_since`: model -> since when it has needed a
    server (a model missing there counts as needing one since `now`, so only the first candidate acts).
    `NeedTracker` keeps both. Acting on the result, the caller lists the model in this node's `loading` at once.
    """
    me = view.node(self_id)
    if me is None or me.role not in PROMOTING_ROLES or me.loading:
        return None
    set_aside: set[str] = set()
    for need in needs(view, demand, now=now, recently_served=recently_served):
        ranked = [n for n in rank_candidates(view, need.model_id, model_sizes_mb=model_sizes_mb)
                  if n.peer_id not in set_aside]
        if not ranked:
            continue
        waited_s = max(0.0, now - unserved_since.get(need.model_id, now))
        for k, node in enumerate(ranked):
            if waited_s < k * PROMOTION_GRACE_S:
                break
            if node.peer_id == self_id:
                return Promotion(need.model_id, need.reason)
        set_aside.add(ranked[0].peer_id)
    return None


@dataclass
class NeedTracker:
    """The timers `plan_promotions` needs, fed one snapshot at a time; `observe` before each plan."""

    last_served: dict[str, float] = field(default_factory=dict)
    need_since: dict[str, float] = field(default_factory=dict)

    def observe(self, view: MeshSnapshot, demand: Mapping[str, float], now: float,
                served_at: Mapping[str, float] = _EMPTY) -> list[Need]:
        """Update the timers from this snapshot, and from `served_at` (MeshView.served_at: when each model was
        last reported served, which covers a server that came and went between two observations); returns
        the current needs."""
        for model_id, seen in served_at.items():
            if seen > self.last_served.get(model_id, -math.inf):
                self.last_served[model_id] = seen
        for node in view.peers:
            if node.role in SERVER_ROLES:
                for model_id in node.loaded:
                    self.last_served[model_id] = now
        for model_id in [m for m, seen in self.last_served.items() if now - seen > ORPHAN_MEMORY_S]:
            del self.last_served[model_id]
        current = needs(view, demand, now=now, recently_served=self.last_served)
        wanted_now = {n.model_id for n in current}
        self.need_since = {m: self.need_since.get(m, now) for m in wanted_now}
        return current
