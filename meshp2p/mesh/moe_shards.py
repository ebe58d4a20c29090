"""Which experts each member of a `--moe shard` group keeps: a pure plan from plain numbers.

A shard is the model's whole trunk plus, in every layer, the same number of experts (a GGUF has one
`expert_count`). The group serves one model id; each shard answers whole sessions on its own, with no traffic
between nodes. Rules, in order:

1. Members are sorted by peer id (duplicates dropped), so every member that sees the same group and the same
   usage numbers computes the same plan.
2. A member keeps `k = (capacity - trunk) // bytes of one expert in every layer` experts per layer, at most all.
3. The quality guard: a member whose `k` is below `max(experts_used, ceil(min_fraction * n_expert))` is refused
   (its shard would route among too few experts), with the reason; the others plan without it. No member left:
   PlanError saying why and what to do.
4. Coverage: every expert of every layer lives on at least one shard, so the group as a whole is the model. The
   members' slots (the sum of their `k`) must reach `n_expert`, else PlanError.
5. A shared core of the `c` most-used experts of each layer is on every shard, `c` as large as coverage allows:
   `c = min(min k, (sum k - n_expert) // (members - 1))` (a lone member keeps all it can hold, which must be all).
6. The other experts, most used first, are dealt one at a time to the shard with the most free slots (ties to the
   lower peer id), so the heavy ones land on different shards; free slots left are filled with the most-used
   experts the shard lacks. Within a layer the kept list is in expert order.

Each shard's `traffic_share` is the part of the calibration's routed traffic (all layers) that falls on experts it
holds: what fraction of the router's choices it can still make as the whole model would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from meshp2p.mesh.planner import PlanError

#: The guard's default: a shard keeps at least half of each layer's experts. Below that the router's top-k
#: choices fall off the shard too often; the benchmark (tools/bench/moe_bench.py) measures what a fraction costs.
DEFAULT_MIN_EXPERT_FRACTION = 0.5


@dataclass(frozen=True)
class ShardModel:
    n_expert: int
    experts_used: int
    #: Bytes every shard carries whatever its experts (embeddings, attention, norms, routers, shared experts).
    trunk_bytes: int
    #: Bytes of one expert in each layer (all its projections).
    expert_bytes: tuple[int, ...]
    #: Router traffic per layer per expert (inference/calibration.py): only the order matters.
    usage: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ShardMember:
    peer_id: str
    #: Memory this member gives its shard, bytes.
    capacity_bytes: int


@dataclass(frozen=True)
class ShardAssignment:
    peer_id: str
    #: The kept experts of each layer, in expert order; every layer the same length.
    experts: tuple[tuple[int, ...], ...]
    shard_bytes: int
    traffic_share: float

    @property
    def experts_per_layer(self) -> int:
        return len(self.experts[0]) if self.experts else 0


@dataclass(frozen=True)
class ShardPlan:
    shards: tuple[ShardAssignment, ...]
    #: The core (on every shard) of each layer, most used first.
    core: tuple[tuple[int, ...], ...]
    #: Members left out by the guard, with why.
    refused: tuple[tuple[str, str], ...]

    def shard_of(self, peer_id: str) -> ShardAssignment | None:
        return next((s for s in self.shards if s.peer_id == peer_id), None)

    def covers_every_expert(self, n_expert: int) -> bool:
        layers = len(self.core)
        return all({e for s in self.shards for e in s.experts[layer]} == set(range(n_expert))
                   for layer in range(layers))


def min_experts(n_expert: int, experts_used: int, min_fraction: float) -> int:
    """The fewest experts per layer the guard lets a shard keep."""
    return min(n_expert, max(experts_used, math.ceil(min_fraction * n_expert - 1e-9)))


def plan_shards(model: ShardModel, members: Sequence[ShardMember], *,
                min_fraction: float = DEFAULT_MIN_EXPERT_FRACTION) -> ShardPlan:
    """The group's plan (rules in the module docstring); PlanError when no plan keeps quality and coverage."""
    n, layers = model.n_expert, len(model.usage)
    if layers != len(model.expert_bytes) or any(len(layer) != n for layer in model.usage):
        raise PlanError("the expert usage does not match the model's layers and experts")
    floor = min_experts(n, model.experts_used, min_fraction)
    per_expert = sum(model.expert_bytes)
    unique = sorted({m.peer_id: m for m in members}.values(), key=lambda m: m.peer_id)
    keep: dict[str, int] = {}
    refused: list[tuple[str, str]] = []
    for member in unique:
        room = member.capacity_bytes - model.trunk_bytes
        k = min(n, room // per_expert) if per_expert > 0 and room > 0 else (n if per_expert == 0 else 0)
        if k < floor:
            refused.append((member.peer_id, (
                f"its {member.capacity_bytes / 1e6:.1f} MB hold {max(k, 0)} of {n} experts per layer next to the "
                f"{model.trunk_bytes / 1e6:.1f} MB trunk; a shard needs at least {floor} "
                f"(--moe-min-experts {min_fraction:g}, never fewer than the {model.experts_used} used per token)")))
        else:
            keep[member.peer_id] = int(k)
    if not keep:
        reasons = "; ".join(f"{peer[-8:]}: {why}" for peer, why in refused) or "the group has no members"
        raise PlanError(f"no member can hold a shard of good enough quality ({reasons})",
                        hint="give the nodes more memory (--max-vram-gb), lower --moe-min-experts, or serve the "
                             "model with the exact layer split (no --moe shard)")
    slots = sum(keep.values())
    if slots < n:
        raise PlanError(
            f"the group's {len(keep)} shard(s) hold {slots} expert slots per layer; covering all {n} experts needs "
            f"{n}", hint="add nodes in --moe shard mode or memory, or serve the model with the exact layer split")
    peers = list(keep)
    order = {p: i for i, p in enumerate(peers)}
    c = min(keep.values()) if len(peers) == 1 else min(min(keep.values()), (slots - n) // (len(peers) - 1))
    kept: dict[str, list[list[int]]] = {p: [] for p in peers}
    cores: list[tuple[int, ...]] = []
    for layer in range(layers):
        row = model.usage[layer]
        ranked = sorted(range(n), key=lambda e: (-row[e], e))
        core, rest = ranked[:c], ranked[c:]
        cores.append(tuple(core))
        chosen = {p: set(core) for p in peers}
        free = {p: keep[p] - c for p in peers}
        for expert in rest:
            target = max(peers, key=lambda p: (free[p], -order[p]))
            chosen[target].add(expert)
            free[target] -= 1
        for p in peers:
            for expert in rest:
                if free[p] == 0:
                    break
                if expert not in chosen[p]:
                    chosen[p].add(expert)
                    free[p] -= 1
            kept[p].append(sorted(chosen[p]))
    total = sum(sum(layer) for layer in model.usage) or 1
    shards = tuple(
        ShardAssignment(
            peer_id=p, experts=tuple(tuple(layer) for layer in kept[p]),
            shard_bytes=model.trunk_bytes + keep[p] * per_expert,
            traffic_share=round(sum(model.usage[layer][e] for layer in range(layers) for e in kept[p][layer])
                                / total, 4))
        for p in peers)
    return ShardPlan(shards, tuple(cores), tuple(refused))
