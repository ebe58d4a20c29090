"""Serving a Mixture-of-Experts model as one shard of a `--moe shard` group (opt-in; the default is the layer split).

Every member runs its own llama-server on a GGUF with the whole trunk and some of the experts, under the model's
own id: the shards are one model id in /v1/models and in routing, and a session sticks to one shard by the
routing's rendezvous hash of its session key (mesh/routing.py), moving to its second choice when its shard leaves.

1. Calibrate: the expert usage of the file (inference/calibration.py: llama-imatrix, else the weight-norm
   estimate), cached per content id. A member that cannot hold the whole file (the planner's rule 1 over what it
   offers: app/local.py's `fits_alone`) does not run llama-imatrix alone: it starts from the estimate and, when
   mesh/split_calibration.py names it, runs llama-imatrix over a layer split of the file (app/split_calibration.py)
   and joins with those counts; the other members get them by step 3. A split calibration that fails (no plan,
   the run gives no counts) is logged and tried again (PLAN_RETRY_S, SPLIT_RETRY_S); the estimate stands
   meanwhile.
2. Join: announce `moe_shards[content id] = {cap_bytes, usage}` in status (protocols/gossip.md). The group is the
   members that announce the same content id with the same usage tag. The tag, not the counts: the counts of a
   30B model are too big for status gossip, and calibration is deterministic (same file, same built-in text, one
   thread, pinned llama.cpp), so members mostly compute equal counts themselves and the tag lets each check it.
3. Share: a member whose numbers are not the group's measured ones (the estimate, where llama-imatrix is missing
   or failed; or counts from another build) asks a peer for them over `/meshp2p/moe-usage/1.0.0`
   (protocols/moe-usage.md; whom, by mesh/moe_usage.py: the lowest peer id's measured tag wins), checks them
   against its own file, caches them and announces their tag: the group forms on one set of numbers, and the
   estimate is used only when no member has measured counts. Every member answers such asks (app/node.py). The
   asking runs in a task of its own beside the plan loop: a peer that does not answer holds up only the asking.
4. Plan (mesh/moe_shards.py) from the group's entries, the same on every member, once the group has settled
   (mesh/moe_settle.py: unchanged for a few seconds, so members starting together plan once, not at each
   arrival); write this node's shard with write_expert_shard into `$MESHP2P_HOME/moe/` (keyed by content id and
   expert set, reused) and serve it.
5. Watch the view: when the group changes, plan again; the shard is rewritten and restarted only if this node's
   experts change. When the group can no longer cover every expert (a 2-way group lost a member), the remaining
   shards keep serving what they hold (degraded coverage, said in /api/status) rather than nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from meshp2p.app.status import MoeShardMemberStatus, MoeShardStatus
from meshp2p.home import meshp2p_home
from meshp2p.inference.calibration import (
    SOURCE_IMATRIX,
    SOURCE_WEIGHT_NORM,
    CalibrationFailed,
    ExpertUsage,
    cached_usage,
    expert_usage,
    store_usage,
)
from meshp2p.inference.fleet import ServerFleet
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.models import ModelSpec
from meshp2p.inference.moe_shard import write_expert_shard
from meshp2p.mesh.moe_settle import GroupSettle
from meshp2p.mesh.moe_shards import (
    DEFAULT_MIN_EXPERT_FRACTION,
    ShardMember,
    ShardModel,
    ShardPlan,
    plan_shards,
)
from meshp2p.mesh.moe_usage import AskBackoff, usage_to_ask
from meshp2p.mesh.planner import FIT_HEADROOM, PlanError
from meshp2p.mesh.split_calibration import Announced, split_calibrator
from meshp2p.mesh.view import MeshView
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.moe_usage import Counts, UsageAnswer
from meshp2p.wire.status import ShardOffer

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

REPLAN_CHECK_S = 1.0
#: A calibration over a layer split: planned again this often while no split is possible (cheap, pure), and run
#: again this long after a run that gave no counts (expensive: the whole text through the whole model).
PLAN_RETRY_S = 2.0
SPLIT_RETRY_S = 30.0
#: Memory headroom a shard keeps, as for a solo model (app/local.py's fit rule).
SHARD_HEADROOM = FIT_HEADROOM


@dataclass(frozen=True)
class MoeShardConfig:
    """`meshp2p up --moe shard`: MoE models this node serves are served as shards of a group."""

    min_fraction: float = DEFAULT_MIN_EXPERT_FRACTION
    #: Bytes this node gives each shard (`--moe-shard-mb`); None: its offered memory less the headroom.
    capacity_bytes: int | None = None


def shard_capacity_bytes(config: MoeShardConfig, memory_mb: tuple[int, int]) -> int:
    """What this node gives each shard: `--moe-shard-mb`, else its offered memory (VRAM, else RAM) / headroom."""
    if config.capacity_bytes is not None:
        return config.capacity_bytes
    ram_mb, vram_mb = memory_mb
    return int((vram_mb or ram_mb) * 2**20 / SHARD_HEADROOM)


class CalibrateOverSplit(Protocol):
    """How a member that cannot hold the model measures its usage over a layer split (app/split_calibration.py):
    the counts, or PlanError / CalibrationFailed."""

    async def calibrate(self, cid: ContentId, n_layers: int, n_expert: int) -> ExpertUsage: ...


class AskUsage(Protocol):
    """How a member asks a peer for its measured usage of a file, checked against this node's file's shape and,
    when given, the digest the peer gossiped (p2p/moe_usage.py's `ask_usage` over the node's overlay)."""

    async def __call__(self, peer_id: str, content_id: ContentId, *, n_layers: int, n_expert: int,
                       digest: str | None) -> UsageAnswer | None: ...


def shard_path(content_id: ContentId, experts: tuple[tuple[int, ...], ...]) -> Path:
    """Where this expert set of this file is cached: one file per (content id, expert set)."""
    digest = hashlib.sha256(repr(experts).encode()).hexdigest()[:16]
    return meshp2p_home() / "moe" / f"{content_id.digest.hex()}-{content_id.size}-{digest}.gguf"


def shard_model(spec: ModelSpec, usage: ExpertUsage) -> ShardModel:
    """The planner's numbers for `spec` (its layout from the tensor table)."""
    layout = spec.layout
    if layout is None or not layout.is_moe or not layout.experts:
        raise PlanError(f"{spec.id} is not a Mixture-of-Experts model", hint="--moe shard is for MoE models only")
    if len(spec.files) > 1:
        raise PlanError(f"{spec.id} is a split GGUF ({len(spec.files)} files); shards are cut from one file",
                        hint="merge it with `llama-gguf-split --merge`, or serve it with the exact layer split")
    n_layers = len(layout.layer_bytes)
    per_expert = layout.expert_bytes // (layout.experts * n_layers) if n_layers else 0
    return ShardModel(n_expert=layout.experts, experts_used=layout.experts_used or 1,
                      trunk_bytes=layout.trunk_bytes, expert_bytes=(per_expert,) * n_layers, usage=usage.counts)


class ShardGroupMember:
    """This node's part of one model's shard group: calibrate, join, take the group's measured usage from a peer
    when its own is not it, plan, write and serve, re-plan."""

    def __init__(self, spec: ModelSpec, fleet: ServerFleet, view: MeshView, *,
                 content_id: Callable[[], ContentId | None], offers: dict[ContentId, ShardOffer],
                 imatrix: Path | None, capacity_bytes: int, min_fraction: float = DEFAULT_MIN_EXPERT_FRACTION,
                 announce: Callable[[], None] = lambda: None, ask: AskUsage | None = None,
                 settle: GroupSettle | None = None, alone: bool = True,
                 split: CalibrateOverSplit | None = None) -> None:
        """`ask`: how to get a peer's measured usage (step 3); None: this member plans with its own numbers.
        `settle`: when the group is formed enough for a first plan (mesh/moe_settle.py; tests pass a shorter one).
        `alone`: this node can hold the whole model, so it calibrates it alone; else, with `split`, over a layer
        split when mesh/split_calibration.py names it (step 1)."""
        self.spec = spec
        self.fleet = fleet
        self.view = view
        self.content_id = content_id
        self.offers = offers
        self.imatrix = imatrix
        self.capacity_bytes = capacity_bytes
        self.min_fraction = min_fraction
        self.announce = announce
        self.ask = ask
        self.backoff = AskBackoff()
        self.settle = settle if settle is not None else GroupSettle()
        self.alone = alone
        self.split = split
        #: When the members waiting for a split calibration are formed (the same rule as the plan's, step 1).
        self.split_settle = GroupSettle(self.settle.settle_s, self.settle.max_wait_s)
        #: The file's content id once hashed, and its (layers, experts) from its GGUF header.
        self.cid: ContentId | None = None
        self.shape = (0, 0)
        self.usage: ExpertUsage | None = None
        self.plan: ShardPlan | None = None
        self.serving: tuple[tuple[int, ...], ...] | None = None
        self.last_error: str | None = "calibrating"

    def snapshot(self) -> MoeShardStatus:
        """For /api/status: the group, each member's experts and share of router traffic, the calibration."""
        plan, cid = self.plan, self.content_id()
        return MoeShardStatus(
            model=self.spec.id, content_id=None if cid is None else cid.text,
            calibration=None if self.usage is None else self.usage.described,
            calibration_from=None if self.usage is None else self.usage.origin,
            usage=None if self.usage is None else self.usage.tag, min_fraction=self.min_fraction,
            core=() if plan is None else plan.core,
            members=() if plan is None else tuple(
                MoeShardMemberStatus(peer_id=s.peer_id, experts_per_layer=s.experts_per_layer,
                                     experts=s.experts, traffic_share=s.traffic_share, shard_bytes=s.shard_bytes)
                for s in plan.shards),
            refused=() if plan is None else plan.refused,
            serving=self.serving is not None, last_error=self.last_error)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        self.cid = cid = await self._content_id()
        header = await trio.to_thread.run_sync(read_gguf_header, self.spec.path)
        self.shape = (header.block_count or 0, header.expert_count or 0)
        usage = await trio.to_thread.run_sync(partial(expert_usage, self.spec.path, cid, self.imatrix,
                                                      alone=self.alone))
        if usage.source == SOURCE_WEIGHT_NORM:
            log.warning("%s: router weight-norm estimate only, until a member gives measured router statistics",
                        self.spec.id)
        self._join(cid, usage)
        try:
            async with trio.open_nursery() as nursery:
                if self.ask is not None:
                    nursery.start_soon(self._keep_asking, cid)
                if not self.alone and self.split is not None and self.imatrix is not None \
                        and usage.source != SOURCE_IMATRIX:
                    nursery.start_soon(self._calibrate_over_split, cid, self.split)
                while True:
                    await self._step(cid, self._usage())
                    await trio.sleep_until(self._next_look(trio.current_time()))
        finally:
            self.offers.pop(cid, None)
            if self.serving is not None:
                self.fleet.stop(self.spec.id)

    def _next_look(self, now: float) -> float:
        """The next REPLAN_CHECK_S, or sooner when the group settles before it."""
        settles_at = self.settle.next_at()
        return now + REPLAN_CHECK_S if settles_at is None else min(now + REPLAN_CHECK_S, max(now, settles_at))

    async def _keep_asking(self, cid: ContentId) -> None:
        """Step 3 in a task of its own: an ask may wait 30 s (p2p/moe_usage.py) on a peer that does not answer, and
        the plan loop must go on watching the group meanwhile (a member leaving is acted on at once). Counts that
        arrive are joined with here; the loop plans with them at its next look."""
        while True:
            await self._adopt(cid)
            await trio.sleep(REPLAN_CHECK_S)

    async def _calibrate_over_split(self, cid: ContentId, split: CalibrateOverSplit) -> None:
        """Step 1 for a model this node cannot hold: until this member plans with measured counts (its own or a
        peer's), calibrate over a layer split whenever mesh/split_calibration.py names this node and the members
        waiting have settled."""
        split_error: str | None = None
        while self._usage().source != SOURCE_IMATRIX:
            me = self.view.peers.get(self.view.self_id)
            if me is None:  # this node's own status is not in its view yet: its capacity is what others see
                await trio.sleep(REPLAN_CHECK_S)
                continue
            own = Announced(self._usage().tag, me.status.vram_mb or me.status.ram_mb)
            announced = {peer.peer_id: Announced(offer.usage, peer.status.vram_mb or peer.status.ram_mb)
                         for peer in self.view.peers.values() if (offer := peer.status.moe_shards.get(cid)) is not None}
            chosen = split_calibrator(self.view.self_id, own, announced)
            if chosen is None:
                return  # a member measured: step 3 takes its counts
            settled = self.split_settle.observe(frozenset({**announced, self.view.self_id: own}.items()),
                                                trio.current_time())
            if chosen != self.view.self_id or not settled:
                await trio.sleep(REPLAN_CHECK_S)
                continue
            n_layers, n_expert = self.shape
            try:
                measured = await split.calibrate(cid, n_layers, n_expert)
            except PlanError as exc:
                # No split yet (workers still hashing, their RTT not measured): planning again is cheap.
                if exc.message != split_error:
                    log.info("%s: cannot calibrate over a layer split yet (%s): the router weight-norm estimate "
                             "stands meanwhile", self.spec.id, exc.message)
                split_error = exc.message
                await trio.sleep(PLAN_RETRY_S)
                continue
            except CalibrationFailed as exc:
                log.warning("%s: calibrating over a layer split failed (%s): keeping the router weight-norm "
                            "estimate, trying again in %g s", self.spec.id, exc.message, SPLIT_RETRY_S)
                await trio.sleep(SPLIT_RETRY_S)
                continue
            if self._usage().source == SOURCE_IMATRIX:
                return  # a peer's counts arrived meanwhile: the group already plans with them
            await trio.to_thread.run_sync(store_usage, cid, measured)
            log.info("%s: calibrated over a layer split (%s)", self.spec.id, measured.tag)
            self._join(cid, measured)

    def _join(self, cid: ContentId, usage: ExpertUsage) -> None:
        """Plan with `usage` from now on, and announce its tag: the group is whoever announces the same."""
        self.usage = usage
        log.info("%s: expert usage from %s (%s); joining its shard group with %.1f MB", self.spec.id,
                 usage.described, usage.tag, self.capacity_bytes / 1e6)
        self.offers[cid] = ShardOffer(self.capacity_bytes, usage.tag)
        self.announce()

    def _usage(self) -> ExpertUsage:
        assert self.usage is not None  # set before the loop that calls this starts
        return self.usage

    async def _adopt(self, cid: ContentId) -> None:
        """Step 3: when mesh/moe_usage.py names peers whose measured usage this member should plan with, ask
        them in turn; the first that answers with counts that pass every check is cached and joined with."""
        usage = self._usage()
        if self.ask is None:
            return
        announced = {peer.peer_id: offer.usage for peer in self.view.peers.values()
                     if (offer := peer.status.moe_shards.get(cid)) is not None}
        holders = [peer.peer_id for peer in self.view.peers.values() if cid in peer.status.files.values()]
        wanted = usage_to_ask(self.view.self_id, usage.tag, announced, holders)
        if wanted is None:
            return
        n_layers, n_expert = self.shape
        for peer in wanted.peers:
            if not self.backoff.ready(peer, trio.current_time()):
                continue
            answer = await self.ask(peer, cid, n_layers=n_layers, n_expert=n_expert, digest=wanted.digest)
            if answer is None:
                self.backoff.failed(peer, trio.current_time(), wanted.retry_s)
                continue
            shared = ExpertUsage(answer.source, answer.counts, origin=peer)
            await trio.to_thread.run_sync(store_usage, cid, shared)
            log.info("%s: %s gave its measured expert usage (%s), replacing this node's %s", self.spec.id,
                     peer[-8:], shared.tag, usage.described)
            self._join(cid, shared)
            return

    async def _content_id(self) -> ContentId:
        """Members are matched by file: wait until ours is hashed (polled: the hasher signals nothing)."""
        while (cid := self.content_id()) is None:
            self.last_error = "hashing the model file before joining its shard group"
            await trio.sleep(0.2)
        return cid

    def group(self, cid: ContentId, usage: ExpertUsage) -> list[ShardMember]:
        """Members announcing this file with the same usage tag (this node included once announced)."""
        members = []
        for peer in self.view.peers.values():
            offer = peer.status.moe_shards.get(cid)
            if offer is not None and offer.usage == usage.tag:
                members.append(ShardMember(peer.peer_id, offer.capacity_bytes))
        if not any(m.peer_id == self.view.self_id for m in members):
            members.append(ShardMember(self.view.self_id, self.capacity_bytes))
        return members

    async def _step(self, cid: ContentId, usage: ExpertUsage) -> None:
        members = self.group(cid, usage)
        if not self.settle.observe((usage.tag, frozenset(members)), trio.current_time()):
            self.last_error = f"waiting for the group to settle ({len(members)} member(s) so far)"
            return
        try:
            plan = plan_shards(shard_model(self.spec, usage), members, min_fraction=self.min_fraction)
        except PlanError as exc:
            if exc.message != self.last_error:
                log.warning("%s: no shard plan (%s)%s", self.spec.id, exc.message,
                            "; keeping the shard served here" if self.serving else "")
            self.last_error = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return
        self.plan = plan
        mine = plan.shard_of(self.view.self_id)
        if mine is None:
            reason = dict(plan.refused).get(self.view.self_id, "not in the plan")
            if self.last_error != reason:
                log.error("%s: this node's shard is refused: %s", self.spec.id, reason)
            self.last_error = reason
            await self._serve(None, cid)
            return
        self.last_error = None
        await self._serve(mine.experts, cid)

    async def _serve(self, experts: tuple[tuple[int, ...], ...] | None, cid: ContentId) -> None:
        if experts == self.serving:
            return
        if self.serving is not None:
            self.fleet.stop(self.spec.id)
            self.serving = None
            self.announce()
        if experts is None:
            return
        n_expert = (self.spec.layout.experts if self.spec.layout else None) or 0
        whole = all(layer == tuple(range(n_expert)) for layer in experts)
        # A shard of every expert is the original file: served as it is, no copy.
        path = self.spec.path if whole else shard_path(cid, experts)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            report = await trio.to_thread.run_sync(write_expert_shard, self.spec.path, path, experts)
            log.info("%s: wrote its shard (%d experts per layer, %.1f MB) to %s", self.spec.id,
                     report.experts_kept, report.bytes_written / 1e6, path)
        shard = self.spec if whole else dataclasses.replace(self.spec, path=path, size_bytes=path.stat().st_size,
                                                            files=())
        await self.fleet.start(shard)
        self.serving = experts
        log.info("%s: serving a shard with %d of %d experts per layer", self.spec.id, len(experts[0]), n_expert)
        self.announce()


async def measured_usage(members: Sequence[ShardGroupMember], offered: Callable[[ContentId], Path | None],
                         cid: ContentId) -> tuple[str, Counts] | None:
    """What this node answers a peer's ask for `cid` with (p2p/moe_usage.py): a shard member's measured usage, else
    the measured usage cached for a file it offers (calibrated once, served another way now), else None."""
    for member in members:
        if member.cid == cid and member.usage is not None and member.usage.source == SOURCE_IMATRIX:
            return member.usage.source, member.usage.counts
    path = offered(cid)
    if path is None:
        return None
    cached = await trio.to_thread.run_sync(cached_usage, path, cid)
    return None if cached is None else (cached.source, cached.counts)
