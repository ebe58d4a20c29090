"""A shard member's step 3 (app/moe_shards.py): whom it asks for measured usage, what it does with an answer or
none, and what it answers others with; over a real view and tiny MoE files, with the ask itself stood in for
(the exchange is tests/p2p/test_moe_usage.py's, the whole path tests/e2e/test_moe_shards.py's). And that asking
never holds up the plan loop: a peer over a real overlay that takes the ask and never answers."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.network import network, status, wait_for
from make_tiny_gguf import write_tiny_gguf

from meshp2p.app.moe_shards import ShardGroupMember, measured_usage
from meshp2p.inference.calibration import (
    SOURCE_IMATRIX,
    CalibrationFailed,
    ExpertUsage,
    expert_usage,
    store_usage,
    usage_cache_file,
    weight_norm_usage,
)
from meshp2p.inference.content_id import hash_file
from meshp2p.inference.models import ModelSpec, spec_from_parts
from meshp2p.mesh.moe_settle import GroupSettle
from meshp2p.mesh.planner import PlanError
from meshp2p.mesh.view import MeshView
from meshp2p.p2p.moe_usage import ASK_TIMEOUT_S, ask_usage
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.moe_usage import MOE_USAGE_PROTOCOL_ID, UsageAnswer, usage_digest
from meshp2p.wire.status import ShardOffer

LOW, SELF, HIGH = "12D3KooWAAAA", "12D3KooWMMMM", "12D3KooWZZZZ"
COUNTS = tuple(tuple((7 * layer + e) % 8 for e in range(8)) for layer in range(3))
OTHER = tuple(tuple(e for e in range(8)) for _ in range(3))


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, ContentId]:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    path = write_tiny_gguf(tmp_path / "moe.gguf", "moe", layers=3, seed=7)
    return path, hash_file(path)


class Peers:
    """Stands in for p2p/moe_usage.ask_usage: each peer's answer (None: no counts, refused, or a bad answer)."""

    def __init__(self, answers: dict[str, UsageAnswer | None]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str | None, int, int]] = []

    async def __call__(self, peer_id: str, content_id: ContentId, *, n_layers: int, n_expert: int,
                       digest: str | None) -> UsageAnswer | None:
        self.asked.append((peer_id, digest, n_layers, n_expert))
        return self.answers.get(peer_id)


def _member(path: Path, cid: ContentId, usage: ExpertUsage, peers: Peers,
            announced: dict[str, str]) -> ShardGroupMember:
    view = MeshView(bytes(16), SELF)
    for peer, tag in announced.items():
        view.update(peer, dataclasses.replace(status(), moe_shards={cid: ShardOffer(10**6, tag)}), 0.0)
    spec = spec_from_parts((path,))
    fleet: Any = None  # _adopt never serves
    member = ShardGroupMember(spec, fleet, view, content_id=lambda: cid, offers={}, imatrix=None,
                              capacity_bytes=10**6, ask=peers)
    member.cid, member.shape, member.usage = cid, (3, 8), usage
    return member


def _answer(counts: tuple[tuple[int, ...], ...]) -> UsageAnswer:
    return UsageAnswer(SOURCE_IMATRIX, counts, usage_digest(SOURCE_IMATRIX, counts))


async def test_an_estimating_member_takes_the_measured_counts_caches_them_and_announces_their_tag(model) -> None:
    path, cid = model
    estimate = expert_usage(path, cid, None)
    given = _answer(COUNTS)
    peers = Peers({HIGH: given})
    member = _member(path, cid, estimate, peers, {HIGH: given.tag})
    await member._adopt(cid)
    assert peers.asked == [(HIGH, given.digest, 3, 8)]
    assert member.usage == ExpertUsage(SOURCE_IMATRIX, COUNTS) and member.usage.origin == HIGH
    assert member.offers[cid].usage == given.tag
    assert member.snapshot().calibration == f"imatrix (from {HIGH[-8:]})"
    assert member.snapshot().calibration_from == HIGH
    assert expert_usage(path, cid, None).origin == HIGH  # cached: a restart starts from them
    await member._adopt(cid)
    assert len(peers.asked) == 1, "once it plans with the group's counts it asks nobody"


async def test_a_member_with_other_measured_counts_takes_the_lowest_peer_ids(model) -> None:
    path, cid = model
    own = ExpertUsage(SOURCE_IMATRIX, OTHER)
    low = _answer(COUNTS)
    peers = Peers({LOW: low})
    member = _member(path, cid, own, peers, {LOW: low.tag, HIGH: own.tag})
    await member._adopt(cid)
    assert member.usage is not None and member.usage.tag == low.tag and member.usage.origin == LOW
    # The lowest peer id keeps its own counts whatever the others measured.
    lowest = _member(path, cid, own, Peers({}), {HIGH: low.tag})
    lowest.view.self_id = "12D3KooW0000"
    await lowest._adopt(cid)
    assert lowest.usage == own and lowest.usage.origin is None


async def test_a_peer_without_good_counts_is_skipped_and_left_alone_until_its_retry_time(model) -> None:
    path, cid = model
    given = _answer(COUNTS)
    peers = Peers({LOW: None, HIGH: given})
    member = _member(path, cid, weight_norm_usage(path), peers, {LOW: given.tag, HIGH: given.tag})
    await member._adopt(cid)
    assert [p for p, *_ in peers.asked] == [LOW, HIGH] and member.usage is not None
    assert member.usage.origin == HIGH
    # Nobody answers: the member keeps its estimate and asks each peer once per retry time.
    peers = Peers({})
    member = _member(path, cid, weight_norm_usage(path), peers, {LOW: given.tag, HIGH: given.tag})
    await member._adopt(cid)
    await member._adopt(cid)
    assert [p for p, *_ in peers.asked] == [LOW, HIGH]
    assert member.usage is not None and member.usage.source == "weight-norm"


async def test_what_a_node_answers_with(model) -> None:
    path, cid = model
    other = ContentId(bytes(16), 5)
    measured = ExpertUsage(SOURCE_IMATRIX, COUNTS)
    member = _member(path, cid, measured, Peers({}), {})
    assert await measured_usage([member], lambda c: None, cid) == (SOURCE_IMATRIX, COUNTS)
    assert await measured_usage([member], lambda c: None, other) is None
    member.usage = weight_norm_usage(path)  # the estimate is never given
    assert await measured_usage([member], lambda c: None, cid) is None
    # A file it offers but serves another way: from the calibration cache, measured counts only.
    store_usage(cid, measured)
    assert await measured_usage([], {cid: path}.get, cid) == (SOURCE_IMATRIX, COUNTS)
    store_usage(cid, weight_norm_usage(path))
    assert await measured_usage([], {cid: path}.get, cid) is None
    usage_cache_file(cid).unlink()
    assert await measured_usage([], {cid: path}.get, cid) is None


class Fleet:
    """Stands in for the ServerFleet: what the member started and stopped."""

    def __init__(self) -> None:
        self.started: list[ModelSpec] = []
        self.stopped: list[str] = []

    async def start(self, spec: ModelSpec) -> None:
        self.started.append(spec)

    def stop(self, model_id: str) -> bool:
        self.stopped.append(model_id)
        return True


async def test_a_peer_that_takes_the_ask_and_never_answers_does_not_hold_up_replanning(model) -> None:
    """The member plans, and re-plans when a member leaves, while its ask waits on a peer that never answers."""
    path, cid = model
    measured = _answer(COUNTS)
    release = trio.Event()
    asked = trio.Event()

    async def never_answers(stream: Any) -> None:
        asked.set()
        await release.wait()

    async with network() as net:
        silent = await net.start_overlay()
        silent.overlay.serve(MOE_USAGE_PROTOCOL_ID, never_answers)
        node = await net.start_overlay(bootstrap=(silent.overlay.addrs()[0],))
        view = MeshView(bytes(16), node.peer_id)
        estimate = expert_usage(path, cid, None)  # what the member computes too (cached): its group's tag
        # The silent peer measured the counts (so it is the one to ask); HIGH plans with the estimate, as we do.
        for peer, tag in ((silent.peer_id, measured.tag), (HIGH, estimate.tag)):
            view.update(peer, dataclasses.replace(status(), moe_shards={cid: ShardOffer(10**9, tag)}), 0.0)
        fleet = Fleet()
        member = ShardGroupMember(spec_from_parts((path,)), fleet, view,  # type: ignore[arg-type]
                                  content_id=lambda: cid, offers={}, imatrix=None, capacity_bytes=10**9,
                                  ask=partial(ask_usage, node.overlay), settle=GroupSettle(settle_s=0.0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(member.run)
            started = trio.current_time()
            await wait_for(asked.is_set, "the member to ask the silent peer")
            await wait_for(lambda: member.plan is not None and len(member.plan.shards) == 2,
                           "a plan for the member and HIGH while the ask waits")
            assert [s.id for s in fleet.started] == [member.spec.id]  # holds every expert: the file itself
            view.remove(HIGH)
            await wait_for(lambda: member.plan is not None and len(member.plan.shards) == 1,
                           "a new plan once HIGH left, while the ask still waits")
            assert trio.current_time() - started < ASK_TIMEOUT_S
            assert member.usage is not None and member.usage.tag == estimate.tag
            release.set()
            nursery.cancel_scope.cancel()
        assert fleet.stopped == [member.spec.id]  # the group's task ended: its shard is stopped


async def test_the_first_plan_waits_for_the_group_to_settle(model) -> None:
    path, cid = model
    usage = expert_usage(path, cid, None)
    member = _member(path, cid, usage, Peers({}), {HIGH: usage.tag})
    member.capacity_bytes, member.fleet, member.settle = 10**9, Fleet(), GroupSettle(settle_s=0.3)
    await member._step(cid, usage)
    assert member.plan is None and member.last_error == "waiting for the group to settle (2 member(s) so far)"
    await trio.sleep(0.3)
    await member._step(cid, usage)
    assert member.plan is not None and member.plan.shard_of(SELF) is not None and member.last_error is None


class Split:
    """Stands in for app/split_calibration.py: the counts a run over the layer split gives, or its failures."""

    def __init__(self, *outcomes: ExpertUsage | Exception) -> None:
        self.outcomes = list(outcomes)
        self.runs = 0

    async def calibrate(self, cid: ContentId, n_layers: int, n_expert: int) -> ExpertUsage:
        self.runs += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _too_big_member(path: Path, cid: ContentId, split: Split, announced: dict[str, str]) -> ShardGroupMember:
    member = _member(path, cid, weight_norm_usage(path), Peers({}), announced)
    member.view.update(SELF, status(), 0.0)
    member.alone, member.split = False, split
    member.split_settle = GroupSettle(settle_s=0.0)
    return member


async def test_the_named_member_calibrates_over_the_split_after_failures_and_joins_with_the_counts(
        model, autojump_clock: Any) -> None:
    path, cid = model
    measured = ExpertUsage(SOURCE_IMATRIX, COUNTS)
    split = Split(PlanError("no workers yet"), CalibrationFailed("exit 1"), measured)
    member = _too_big_member(path, cid, split, {HIGH: weight_norm_usage(path).tag})
    await member._calibrate_over_split(cid, split)
    assert split.runs == 3 and member.usage == measured and member.usage.origin is None
    assert member.offers[cid].usage == measured.tag
    assert expert_usage(path, cid, None) == measured  # cached like a calibration made alone


async def test_a_member_not_named_or_seeing_measured_counts_runs_nothing(model, autojump_clock: Any) -> None:
    path, cid = model
    estimate = weight_norm_usage(path).tag
    split = Split()
    member = _too_big_member(path, cid, split, {LOW: estimate})
    with trio.move_on_after(30):
        await member._calibrate_over_split(cid, split)  # LOW is named: this member waits for its counts
    assert split.runs == 0
    member = _too_big_member(path, cid, split, {LOW: _answer(COUNTS).tag})
    await member._calibrate_over_split(cid, split)  # returns at once: step 3 takes LOW's counts
    assert split.runs == 0 and member.usage is not None and member.usage.source == "weight-norm"
