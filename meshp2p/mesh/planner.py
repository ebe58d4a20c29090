"""How one model is served: on one node (solo), or split by layers over several (pipeline).

(~470 lines, most of them the numbered rules below and their error messages: one rule book, read in one place.)

The planner runs on the node that wants to serve the model (`local`), over its view of the other peers. It takes
plain facts and returns a `Plan`; it starts nothing. This node is taken to have the model and to serve (the
caller plans only models it has); its own role and RTT are not checked. Rules, in order (users will ask why a plan
looks the way it does; every answer is here):

1. Solo when one node can hold the model: capacity_mb >= FIT_HEADROOM x size_mb (1.1 x; the rest is KV cache and
   compute buffers). Capacity is what a node may use: VRAM where it has a GPU, else RAM, already capped by
   --max-vram. This node is preferred when it fits. When it does not but another node does, the plan is solo on
   that node (`host` is that peer) and the caller routes requests there instead of splitting: one network hop per
   request is far cheaper than one per layer boundary per token. Such a node must be able to serve (role not in
   NON_SERVING_ROLES) and hold its own copy of the same file (see rule 2); its RTT does not matter here (it is only
   an API hop).
   Several such nodes: lowest known RTT first (unknown RTT last), then most capacity, then peer_id.
2. Otherwise a pipeline. Candidate workers are the peers that
   - are close: a known RTT <= MAX_RTT_MS. Every generated token crosses every shard boundary, so slower peers
     stay API clients; an unknown (unmeasured) RTT counts as too slow, as does a negative or NaN one;
   - can serve: role not in NON_SERVING_ROLES ("client", and "bootstrap", which runs no models);
   - have the same file on disk: each worker loads its layers from its own copy of the GGUF, no weights cross the
     network, so the peer must offer the model (`has_model`) *and* its file's content id (`PeerFacts.content_id`,
     SHA-256 prefix and size, protocols/model-id.md) must equal this node's (`ModelFacts.content_id`). A same-named
     file that differs (another quantisation, say) would load other weights or none; a peer whose id is not known
     yet (still hashing, or an older node) is left out until it is. No id on this node's side: no peer matches;
   - have some capacity (capacity_mb > 0).
   They are ranked by RTT, then larger capacity, then peer_id, and added in that order to this node until the
   total capacity >= FIT_HEADROOM x size_mb. The host (the node running llama-server, whose shard comes first) is
   the member with the most capacity; ties go to this node, then to the earlier-ranked peer. When the host is
   not this node the plan says so and the caller routes there: that node then plans for itself. RTTs are
   measured from this node and stand in for the host's. If even every candidate together falls short, `plan`
   raises PlanError saying how many MB are missing and why peers were left out.
3. Layers are split in proportion to capacity: shard i gets n_layers x capacity_i / total of the n_layers
   blocks, rounded by largest remainder (floors first; the layers left over go to the largest fractional parts,
   ties to the earlier shard, so the host first). Ranges are contiguous, in shard order: the host holds the first
   blocks, then each worker in ranking order. Every block is assigned exactly once. A shard's share can exceed
   its exact proportion by less than one layer; the headroom absorbs that.
   Every shard gets at least one layer: a member whose share rounds to 0 is dropped (the lowest-ranked first),
   and the members are chosen again without it, so the final set still meets rule 2's capacity total (or the
   plan fails). A model with fewer blocks than the split would need members fails the same way.
   `Shard.fraction` is the shard's share of the *layers*, not of capacity: handed to llama.cpp as
   `--tensor-split` (`Plan.tensor_split()`), the integer ranges are reproduced exactly instead of llama.cpp
   rounding capacity shares its own way. Fractions sum to 1.
   A Mixture-of-Experts model is split by *bytes* instead (`ModelFacts.layer_bytes`, from the tensor table): its
   blocks are mostly experts, and the embeddings and output head, which stay on the host, can be a large part of
   what the host holds. Shard i's bytes (the host's counting `host_bytes`) are made as close as whole blocks
   allow to its capacity's share of the model's bytes: each boundary between shards is put after the block
   whose running total is nearest to the running share (ties: after the later block, so the earlier shard gets
   the block). A shard can then end up with no block, and is dropped as above.
   The output head (llama.cpp's layer n_layers under `-ngl`) is in no range: it stays on the host (pinned with
   `-ot ...=CPU`, see the llama.cpp notes), so the per-token logits never cross the network, only activations
   do (measured on gemma-270m: ~1.08 MB a token with the head remote, ~31 KB with it on the host).
4. `force_split` (the CLI's --split, for tests and benchmarks) skips rule 1: a pipeline even when the model fits,
   over exactly `force_workers` workers (the first that many candidates in rule 2's order; default: all of
   them). Workers are the members other than the host, so when a peer hosts, this node counts as one.
   Capacities still set the proportions and the host, the total must still meet the headroom, and a member
   whose share rounds to 0 is replaced by the next candidate. Too few candidates, or none, is a PlanError.
5. `replan_needed` (asked by the host of a running plan, with its current view of the other peers) is True when
   - a worker of the plan is gone from the view or can no longer serve as one: it has no copy of the same file any
     more, became a client or bootstrap node, has no capacity, or its RTT is unknown or above KEEP_RTT_MS.
     KEEP_RTT_MS is above MAX_RTT_MS on purpose (hysteresis): a worker near the cap must not reload a whole
     pipeline on every jittery ping;
   - or, for a pipeline that was not forced, one node in the view can now hold the model alone (rule 1).
   Nothing else triggers a replan: not a closer, bigger or new peer, not a better split. Reloading a pipeline
   takes minutes of downtime; only losing a worker, or the chance to stop splitting, pays for that.
   The host's own departure is not checked here: the host is the caller, and nodes that route to a remote host
   see it leave through the mesh view.
6. `recruits`: when no plan is possible with the members that hold the file, the peers that would make one if they
   held it (its docstring): the host names them in its status and they fetch the file (app/recruitment.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from meshp2p.errors import MeshP2PError
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.status import Role

#: A node can hold a model when its capacity is at least this multiple of the model's file size (exact: 1.1).
FIT_HEADROOM = Fraction(11, 10)
#: Workers farther than this round trip from the host are not added to a pipeline.
MAX_RTT_MS = 80.0
#: A worker already in a running plan is kept until its round trip passes this (hysteresis, rule 5).
KEEP_RTT_MS = 2 * MAX_RTT_MS
#: Roles that never hold layers or host a model.
NON_SERVING_ROLES = frozenset({Role.CLIENT, Role.BOOTSTRAP})

PlanKind = Literal["solo", "pipeline"]


class PlanError(MeshP2PError):
    """The model cannot be placed on this mesh as it is (not enough capacity, or no worker to split over)."""


@dataclass(frozen=True)
class ModelFacts:
    model_id: str
    size_mb: int
    #: Transformer blocks (llama.cpp's n_layer); the output head is not one of them.
    n_layers: int
    #: This node's file for the model; peers must hold a file with the same id (rule 2). None: not hashed yet.
    content_id: ContentId | None = None
    #: Real bytes of each block, and outside the blocks (embeddings, output head: on the host). Given for a MoE
    #: model, whose blocks are mostly experts and far from alike in size to the trunk (rule 3); () splits by count.
    layer_bytes: tuple[int, ...] = ()
    host_bytes: int = 0


@dataclass(frozen=True)
class PeerFacts:
    peer_id: str
    #: What the node may use for models: VRAM with a GPU, else RAM, already capped by --max-vram.
    capacity_mb: int
    #: Round trip from this node; None when not measured (counts as too slow for a pipeline).
    rtt_ms: float | None
    #: Offers a model under this model id (any file).
    has_model: bool
    role: Role
    #: Content id of the file it offers under this model id, as it gossips it; None when it gossips none.
    content_id: ContentId | None = None


@dataclass(frozen=True)
class Shard:
    """Blocks first_layer..last_layer (inclusive) on one node; `fraction` is its share of all blocks."""

    peer_id: str
    first_layer: int
    last_layer: int
    fraction: float

    @property
    def layer_count(self) -> int:
        return self.last_layer - self.first_layer + 1


@dataclass(frozen=True)
class Plan:
    """Where a model runs. The host's shard is first and the host also holds the output head.

    `model_size_mb`, `forced` and `content_id` are kept so `replan_needed` can check the workers and tell when the
    plan could become solo.
    """

    model_id: str
    host: str
    kind: PlanKind
    shards: tuple[Shard, ...]
    model_size_mb: int
    forced: bool = False
    #: The host's file: workers (and a later solo host) must hold the same one.
    content_id: ContentId | None = None

    @property
    def workers(self) -> tuple[str, ...]:
        """Peers other than the host, in shard order (empty for solo)."""
        return tuple(s.peer_id for s in self.shards if s.peer_id != self.host)

    def tensor_split(self) -> tuple[float, ...]:
        """llama.cpp `--tensor-split` proportions in shard order: [host, worker1, worker2, ...]."""
        return tuple(s.fraction for s in self.shards)


def needed_mb(size_mb: int) -> int:
    """Capacity a model needs: FIT_HEADROOM x its size, rounded up to a whole MB."""
    return math.ceil(FIT_HEADROOM * size_mb)


def _fits(capacity_mb: int, size_mb: int) -> bool:
    return capacity_mb >= needed_mb(size_mb)


def _known_rtt(peer: PeerFacts) -> float | None:
    rtt = peer.rtt_ms
    return rtt if rtt is not None and math.isfinite(rtt) and rtt >= 0 else None


def has_same_file(peer: PeerFacts, content_id: ContentId | None) -> bool:
    """Does the peer offer the model with exactly this file (rule 2)? A name alone is not enough."""
    return peer.has_model and content_id is not None and peer.content_id == content_id


def _can_serve(peer: PeerFacts, content_id: ContentId | None) -> bool:
    return peer.role not in NON_SERVING_ROLES and has_same_file(peer, content_id) and peer.capacity_mb > 0


def can_host_solo(peer: PeerFacts, size_mb: int, content_id: ContentId | None) -> bool:
    """Could this peer serve the model (`size_mb`, this file) alone (rule 1)? Its RTT does not matter."""
    return _can_serve(peer, content_id) and _fits(peer.capacity_mb, size_mb)


def is_candidate_worker(peer: PeerFacts, content_id: ContentId | None, *, max_rtt_ms: float = MAX_RTT_MS) -> bool:
    """May this peer hold layers of a pipeline of this file (rule 2)? An unknown RTT counts as too slow."""
    rtt = _known_rtt(peer)
    return _can_serve(peer, content_id) and rtt is not None and rtt <= max_rtt_ms


def rank_workers(peers: Sequence[PeerFacts], content_id: ContentId | None) -> list[PeerFacts]:
    """Candidate workers in the order they join a pipeline: lowest RTT, then larger capacity, then peer_id."""

    def key(peer: PeerFacts) -> tuple[float, int, str]:
        rtt = _known_rtt(peer)
        return (math.inf if rtt is None else rtt, -peer.capacity_mb, peer.peer_id)

    return sorted((p for p in peers if is_candidate_worker(p, content_id)), key=key)


def split_layers(n_layers: int, capacities_mb: Sequence[int]) -> tuple[int, ...]:
    """Blocks per shard, proportional to capacity, by largest remainder (rule 3). Counts may be 0 here.

    Exact integer arithmetic: the same inputs give the same split on every machine. A negative capacity counts
    as 0; if all are 0 the blocks are shared equally.
    """
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}")
    if not capacities_mb:
        raise ValueError("no shard to split layers over")
    weights = [max(0, c) for c in capacities_mb]
    if sum(weights) == 0:
        weights = [1] * len(weights)
    total = sum(weights)
    counts = [n_layers * w // total for w in weights]
    remainders = [n_layers * w % total for w in weights]
    left = n_layers - sum(counts)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:left]:
        counts[i] += 1
    return tuple(counts)


def split_layers_by_bytes(layer_bytes: Sequence[int], host_bytes: int,
                          capacities_mb: Sequence[int]) -> tuple[int, ...]:
    """Blocks per shard so that each shard's bytes (the first, the host's, counting `host_bytes`) are nearest to
    its capacity's share of all the bytes (rule 3, MoE). Counts may be 0 here. Exact integer arithmetic."""
    if not capacities_mb:
        raise ValueError("no shard to split layers over")
    weights = [max(0, c) for c in capacities_mb]
    if sum(weights) == 0:
        weights = [1] * len(weights)
    total_weight = sum(weights)
    total = max(0, host_bytes) + sum(layer_bytes)
    # running[k]: the host's part plus blocks 0..k-1, i.e. the bytes before a boundary placed at block k.
    running = [max(0, host_bytes)]
    for size in layer_bytes:
        running.append(running[-1] + size)
    counts = []
    start = 0
    share = 0
    for weight in weights[:-1]:
        share += weight
        target = total * share  # compared against running[k] * total_weight: no division, no rounding
        best = min(range(start, len(layer_bytes) + 1),
                   key=lambda k: (abs(running[k] * total_weight - target), -k))
        counts.append(best - start)
        start = best
    counts.append(len(layer_bytes) - start)
    return tuple(counts)


def _shards(n_layers: int, members: Sequence[PeerFacts], counts: Sequence[int]) -> tuple[Shard, ...]:
    shards = []
    first = 0
    for member, count in zip(members, counts, strict=True):
        shards.append(Shard(member.peer_id, first, first + count - 1, count / n_layers))
        first += count
    return tuple(shards)


def _solo(model: ModelFacts, host: PeerFacts) -> Plan:
    return Plan(model.model_id, host.peer_id, "solo", (Shard(host.peer_id, 0, model.n_layers - 1, 1.0),),
                model_size_mb=model.size_mb, content_id=model.content_id)


def _solo_elsewhere(model: ModelFacts, peers: Sequence[PeerFacts]) -> PeerFacts | None:
    def key(peer: PeerFacts) -> tuple[bool, float, int, str]:
        rtt = _known_rtt(peer)
        return (rtt is None, rtt or 0.0, -peer.capacity_mb, peer.peer_id)

    return min((p for p in peers if can_host_solo(p, model.size_mb, model.content_id)), key=key, default=None)


def skip_reason(peer: PeerFacts, content_id: ContentId | None) -> str | None:
    """Why a peer is not a candidate worker ("with another file under that name", ...), or None if it is one."""
    if peer.role in NON_SERVING_ROLES:
        return f"{peer.role}s"
    if not peer.has_model:
        return "without the model"
    if content_id is None:
        return "unmatched while this node's file is not hashed yet"
    if peer.content_id is None:
        return "whose file is not hashed yet"
    if peer.content_id != content_id:
        return "with another file under that name"
    if peer.capacity_mb <= 0:
        return "without capacity"
    if not is_candidate_worker(peer, content_id):
        return f"slower than {MAX_RTT_MS:g} ms or unmeasured"
    return None


def _skipped_reasons(peers: Sequence[PeerFacts], content_id: ContentId | None) -> str:
    """Why peers are not candidate workers, for error messages ("3 slower than 80 ms or unmeasured, ...")."""
    reasons: dict[str, int] = {}
    for peer in peers:
        reason = skip_reason(peer, content_id)
        if reason is None:
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    return ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))


def _who(members: Sequence[PeerFacts], local: PeerFacts) -> str:
    """"the 2 nodes that can take part (this node and 1 peer)", for error messages."""
    peers = sum(1 for m in members if m.peer_id != local.peer_id)
    parts = (["this node"] if len(members) > peers else []) + ([f"{peers} peer{'s' * (peers != 1)}"] if peers else [])
    nodes = len(members)
    return f"the {nodes} node{'s' * (nodes != 1)} that can take part ({' and '.join(parts) or 'none'})"


def _shortfall(model: ModelFacts, local: PeerFacts, members: Sequence[PeerFacts], peers: Sequence[PeerFacts],
               dropped: set[str]) -> PlanError:
    need = needed_mb(model.size_mb)
    have = sum(max(0, m.capacity_mb) for m in members)
    notes = []
    skipped = _skipped_reasons(peers, model.content_id)
    if skipped:
        notes.append(f"left out: {skipped}")
    if dropped:
        notes.append(f"{len(dropped)} too small for a whole one of its {model.n_layers} layers")
    detail = f" ({'; '.join(notes)})" if notes else ""
    return PlanError(
        f"{model.model_id} ({model.size_mb} MB) needs {need} MB ({float(FIT_HEADROOM):g} x its size); "
        f"{_who(members, local)} {'has' if len(members) == 1 else 'have'} {have} MB: "
        f"{need - have} MB missing{detail}",
        hint=f"add nodes that have the same model file within {MAX_RTT_MS:g} ms of this one, use a smaller "
             "quantisation, or raise --max-vram on nodes with memory to spare",
    )


def _members(model: ModelFacts, local: PeerFacts, ranked: Sequence[PeerFacts], peers: Sequence[PeerFacts],
             dropped: set[str], *, force_split: bool, force_workers: int | None) -> list[PeerFacts]:
    """Rule 2 (or 4): this node (unless dropped) and the workers, in ranking order."""
    base = [local] if local.peer_id not in dropped else []
    eligible = [p for p in ranked if p.peer_id not in dropped]
    if force_split:
        if force_workers is None:
            members = base + eligible
            if len(members) < 2:
                skipped = _skipped_reasons(peers, model.content_id)
                raise PlanError(f"cannot split {model.model_id}: no peer can be a worker"
                                f"{f' (left out: {skipped})' if skipped else ''}",
                                hint="a worker needs its own copy of the same model file, a serving role and an RTT "
                                     f"within {MAX_RTT_MS:g} ms of this node")
        else:
            wanted = force_workers + 1 - len(base)
            if len(eligible) < wanted:
                raise PlanError(f"--split {force_workers} needs {force_workers} workers for {model.model_id} but "
                                f"only {max(0, len(base) + len(eligible) - 1)} can hold layers",
                                hint="split over fewer workers, or add nodes that have the same model file (within "
                                     f"{MAX_RTT_MS:g} ms of this one)")
            members = base + eligible[:wanted]
        if sum(max(0, m.capacity_mb) for m in members) < needed_mb(model.size_mb):
            raise _shortfall(model, local, members, peers, dropped)
        return members
    members = list(base)
    total = sum(max(0, m.capacity_mb) for m in members)
    for peer in eligible:
        if total >= needed_mb(model.size_mb):
            break
        members.append(peer)
        total += peer.capacity_mb
    if total < needed_mb(model.size_mb):
        raise _shortfall(model, local, members, peers, dropped)
    return members


def _pipeline(model: ModelFacts, local: PeerFacts, peers: Sequence[PeerFacts], *, force_split: bool,
              force_workers: int | None) -> Plan:
    ranked = rank_workers(peers, model.content_id)
    dropped: set[str] = set()
    while True:
        members = _members(model, local, ranked, peers, dropped, force_split=force_split,
                           force_workers=force_workers)
        # max() keeps the first of equals: this node, then the earlier-ranked peer.
        host = max(members, key=lambda m: m.capacity_mb)
        ordered = [host, *(m for m in members if m is not host)]
        capacities = [m.capacity_mb for m in ordered]
        counts = (split_layers_by_bytes(model.layer_bytes, model.host_bytes, capacities)
                  if model.layer_bytes else split_layers(model.n_layers, capacities))
        empty = [m for m, n in zip(ordered, counts, strict=True) if n == 0]
        if not empty:
            return Plan(model.model_id, host.peer_id, "pipeline", _shards(model.n_layers, ordered, counts),
                        model_size_mb=model.size_mb, forced=force_split, content_id=model.content_id)
        dropped.add(empty[-1].peer_id)


def plan(model: ModelFacts, local: PeerFacts, peers: Sequence[PeerFacts], *, force_split: bool = False,
         force_workers: int | None = None) -> Plan:
    """Where `model` runs, by the rules of the module docstring; PlanError when it cannot be placed.

    `local` is this node, assumed able to serve the model (the caller plans models it has); its role and RTT are
    not checked. `peers` are the other nodes as this node sees them (an entry for `local`'s id is ignored; a later
    entry for the same peer replaces an earlier one). `force_workers` only applies with `force_split`.
    """
    if model.n_layers < 1:
        raise ValueError(f"{model.model_id}: a model needs at least one layer, got {model.n_layers}")
    if model.size_mb < 0:
        raise ValueError(f"{model.model_id}: negative size {model.size_mb} MB")
    if model.layer_bytes and len(model.layer_bytes) != model.n_layers:
        raise ValueError(f"{model.model_id}: {len(model.layer_bytes)} block sizes for {model.n_layers} blocks")
    if force_workers is not None and not force_split:
        raise ValueError("force_workers only applies with force_split")
    if force_workers is not None and force_workers < 1:
        raise PlanError(f"--split {force_workers}: a split needs at least one worker",
                        hint="give --split a number of workers >= 1, or leave it out")
    others = list({p.peer_id: p for p in peers if p.peer_id != local.peer_id}.values())
    if not force_split:
        if _fits(local.capacity_mb, model.size_mb):
            return _solo(model, local)
        elsewhere = _solo_elsewhere(model, others)
        if elsewhere is not None:
            return _solo(model, elsewhere)
    return _pipeline(model, local, others, force_split=force_split, force_workers=force_workers)


def recruits(model: ModelFacts, local: PeerFacts, peers: Sequence[PeerFacts]) -> list[str]:
    """Rule 6: the peers to ask to fetch this model's file so that a split becomes possible, or [] when none is
    needed (`plan` succeeds) or none would do.

    When the members that hold the file fall short (rule 2's PlanError), peers that could be workers but for the
    file (a serving role, capacity, a known RTT <= MAX_RTT_MS; no copy of this file, or another file under the
    name) are added in rule 2's ranking order, after every holder, until the capacity suffices. They fetch the
    file from the members that hold it (protocols/model-fetch.md) and, once they offer it, rule 2 takes them as
    workers: weights still never cross the network at load, they came before, once, checked against the content id.
    No content id on this node's side yet: nobody is recruited (there is no file to name).
    """
    if model.content_id is None:
        return []
    try:
        plan(model, local, peers)
        return []
    except PlanError:
        pass
    others = list({p.peer_id: p for p in peers if p.peer_id != local.peer_id}.values())
    total = max(0, local.capacity_mb) + sum(p.capacity_mb for p in rank_workers(others, model.content_id))
    chosen: list[str] = []
    for peer in rank_workers([dataclasses.replace(p, has_model=True, content_id=model.content_id)
                              for p in others if not has_same_file(p, model.content_id)], model.content_id):
        if total >= needed_mb(model.size_mb):
            break
        chosen.append(peer.peer_id)
        total += peer.capacity_mb
    return chosen if total >= needed_mb(model.size_mb) else []


def replan_needed(old: Plan, peers_now: Mapping[str, PeerFacts]) -> bool:
    """Should the host of `old` plan again, given its current view of the other peers (rule 5)?"""
    for worker in old.workers:
        peer = peers_now.get(worker)
        if peer is None or not is_candidate_worker(peer, old.content_id, max_rtt_ms=KEEP_RTT_MS):
            return True
    if old.kind != "pipeline" or old.forced:
        return False
    return any(can_host_solo(p, old.model_size_mb, old.content_id) for p in peers_now.values())
