"""The serving planner on plain facts: solo or pipeline, who takes part, who hosts, and which layers go where."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshp2p.errors import MeshP2PError
from meshp2p.mesh.planner import (
    FIT_HEADROOM,
    KEEP_RTT_MS,
    MAX_RTT_MS,
    ModelFacts,
    PeerFacts,
    Plan,
    PlanError,
    Shard,
    can_host_solo,
    is_candidate_worker,
    needed_mb,
    plan,
    rank_workers,
    recruits,
    replan_needed,
    skip_reason,
    split_layers,
    split_layers_by_bytes,
)
from meshp2p.wire.model_id import ContentId, content_id_of

FILE = content_id_of(b"big-model Q4_K_M")
#: Another file under the same model id (another quantisation, say).
OTHER_FILE = content_id_of(b"big-model Q8_0")
MODEL = ModelFacts("big-model", size_mb=10_000, n_layers=32, content_id=FILE)
SAME = object()


def peer(peer_id: str, capacity_mb: int, rtt_ms: float | None = 10.0, *, has_model: bool = True,
         role: str = "host", file: ContentId | object | None = SAME) -> PeerFacts:
    """A peer that, by default, offers the model with the very file this node has."""
    content_id = (FILE if has_model else None) if file is SAME else file
    assert content_id is None or isinstance(content_id, ContentId)
    return PeerFacts(peer_id, capacity_mb, rtt_ms, has_model, role, content_id)


def me(capacity_mb: int) -> PeerFacts:
    return peer("me", capacity_mb, None)


def ranges(p: Plan) -> list[tuple[str, int, int]]:
    return [(s.peer_id, s.first_layer, s.last_layer) for s in p.shards]


def assert_well_formed(p: Plan, model: ModelFacts) -> None:
    assert p.shards[0].peer_id == p.host
    first = 0
    for shard in p.shards:
        assert shard.first_layer == first
        assert shard.layer_count >= 1
        assert shard.fraction == pytest.approx(shard.layer_count / model.n_layers)
        first = shard.last_layer + 1
    assert first == model.n_layers
    assert math.isclose(sum(p.tensor_split()), 1.0)
    assert len({s.peer_id for s in p.shards}) == len(p.shards)


# -- rule 1: solo ------------------------------------------------------------------------------------


def test_fit_headroom_is_exactly_one_point_one() -> None:
    assert float(FIT_HEADROOM) == 1.1
    assert needed_mb(10_000) == 11_000
    assert needed_mb(1_001) == 1_102  # 1101.1 rounds up


def test_solo_here_at_the_boundary() -> None:
    p = plan(MODEL, me(11_000), [peer("a", 50_000)])
    assert p.kind == "solo"
    assert p.host == "me"
    assert p.workers == ()
    assert ranges(p) == [("me", 0, 31)]
    assert p.tensor_split() == (1.0,)


def test_one_mb_below_the_boundary_is_not_solo_here() -> None:
    p = plan(MODEL, me(10_999), [peer("a", 1_000, 5.0)])
    assert p.kind == "pipeline"
    assert p.workers == ("a",)
    with pytest.raises(PlanError):
        plan(MODEL, me(10_999), [peer("far", 10_000, 200.0)])


def test_this_node_preferred_over_a_bigger_one() -> None:
    p = plan(MODEL, me(12_000), [peer("a", 80_000, 1.0)])
    assert (p.kind, p.host) == ("solo", "me")


def test_solo_elsewhere_when_another_node_fits() -> None:
    p = plan(MODEL, me(4_000), [peer("a", 8_000, 5.0), peer("b", 11_000, 300.0)])
    assert (p.kind, p.host) == ("solo", "b")  # any RTT: it is only an API hop
    assert ranges(p) == [("b", 0, 31)]


def test_solo_elsewhere_prefers_lowest_known_rtt_then_capacity_then_id() -> None:
    peers = [peer("unmeasured", 90_000, None), peer("far", 90_000, 200.0), peer("near", 11_000, 20.0),
             peer("near-big", 30_000, 20.0)]
    assert plan(MODEL, me(1_000), peers).host == "near-big"
    peers = [peer("unmeasured", 90_000, None), peer("far", 11_000, 200.0)]
    assert plan(MODEL, me(1_000), peers).host == "far"
    assert plan(MODEL, me(1_000), [peer("y", 20_000, 5.0), peer("x", 20_000, 5.0)]).host == "x"


def test_solo_elsewhere_needs_a_copy_and_a_serving_role() -> None:
    peers = [peer("no-copy", 50_000, has_model=False), peer("client", 50_000, role="client"),
             peer("boot", 50_000, role="bootstrap"), peer("w", 8_000, 5.0)]
    p = plan(MODEL, me(4_000), peers)
    assert p.kind == "pipeline"
    assert [s.peer_id for s in p.shards] == ["w", "me"]


# -- rule 2: pipeline members -------------------------------------------------------------------------


def test_rtt_cap_is_inclusive_and_unknown_rtt_is_too_slow() -> None:
    assert is_candidate_worker(peer("a", 1, MAX_RTT_MS), FILE)
    assert not is_candidate_worker(peer("a", 1, MAX_RTT_MS + 0.1), FILE)
    assert not is_candidate_worker(peer("a", 1, None), FILE)
    assert not is_candidate_worker(peer("a", 1, float("nan")), FILE)
    assert not is_candidate_worker(peer("a", 1, -1.0), FILE)
    assert not is_candidate_worker(peer("a", 0, 1.0), FILE)


def test_slow_and_unmeasured_peers_stay_out() -> None:
    peers = [peer("slow", 9_000, 81.0), peer("unknown", 9_000, None), peer("ok", 4_000, 80.0)]
    p = plan(MODEL, me(8_000), peers)
    assert p.kind == "pipeline"
    assert p.workers == ("ok",)


def test_workers_ranked_by_rtt_then_capacity_then_id() -> None:
    peers = [peer("c", 1_000, 30.0), peer("b", 1_000, 10.0), peer("a", 1_000, 10.0), peer("d", 3_000, 10.0),
             peer("slow", 9_000, 90.0)]
    assert [p.peer_id for p in rank_workers(peers, FILE)] == ["d", "a", "b", "c"]


def test_workers_added_in_rank_order_until_capacity_suffices() -> None:
    peers = [peer("far", 6_000, 60.0), peer("near", 2_000, 5.0), peer("mid", 2_000, 20.0),
             peer("unused", 9_000, 70.0)]
    p = plan(MODEL, me(5_000), peers)  # needs 11 000: 5 000 + 2 000 + 2 000 + 6 000
    assert p.kind == "pipeline"
    assert p.host == "far"
    assert [s.peer_id for s in p.shards] == ["far", "me", "near", "mid"]
    assert "unused" not in p.workers


def test_host_is_this_node_when_it_has_the_most_capacity() -> None:
    p = plan(MODEL, me(8_000), [peer("a", 4_000, 5.0)])
    assert p.host == "me"
    assert p.workers == ("a",)


def test_host_is_the_member_with_most_capacity() -> None:
    p = plan(MODEL, me(3_000), [peer("a", 4_000, 5.0), peer("b", 6_000, 9.0)])
    assert p.host == "b"
    assert p.workers == ("me", "a")
    assert p.shards[0].peer_id == "b"


def test_capacity_tie_goes_to_this_node() -> None:
    p = plan(MODEL, me(6_000), [peer("a", 6_000, 5.0)])
    assert p.host == "me"


def test_head_stays_on_the_host_whose_shard_comes_first() -> None:
    p = plan(MODEL, me(3_000), [peer("a", 4_000, 5.0), peer("b", 6_000, 9.0)])
    assert p.shards[0].peer_id == p.host
    assert p.shards[0].first_layer == 0
    assert p.tensor_split()[0] == p.shards[0].fraction


def test_peers_entry_for_this_node_and_duplicates_are_ignored() -> None:
    p = plan(MODEL, me(8_000), [peer("me", 90_000), peer("a", 1_000, 5.0), peer("a", 4_000, 5.0)])
    assert [s.peer_id for s in p.shards] == ["me", "a"]
    assert ranges(p) == [("me", 0, 20), ("a", 21, 31)]


def test_peers_without_the_model_or_serving_role_are_not_workers() -> None:
    peers = [peer("no-copy", 9_000, 1.0, has_model=False), peer("client", 9_000, 1.0, role="client"),
             peer("boot", 9_000, 1.0, role="bootstrap"), peer("standby", 3_000, 50.0, role="standby")]
    p = plan(MODEL, me(8_000), peers)
    assert p.workers == ("standby",)


def test_only_peers_with_the_same_file_are_workers_not_merely_the_same_name() -> None:
    peers = [peer("other-quant", 9_000, 1.0, file=OTHER_FILE), peer("hashing", 9_000, 1.0, file=None),
             peer("same", 3_000, 50.0)]
    p = plan(MODEL, me(8_000), peers)
    assert p.workers == ("same",) and p.content_id == FILE
    assert [skip_reason(q, FILE) for q in peers] == [
        "with another file under that name", "whose file is not hashed yet", None]
    with pytest.raises(PlanError) as info:
        plan(MODEL, me(8_000), peers[:2])
    assert "1 with another file under that name" in info.value.message
    assert "1 whose file is not hashed yet" in info.value.message
    with pytest.raises(PlanError, match="no peer can be a worker"):
        plan(MODEL, me(20_000), peers[:2], force_split=True)


def test_a_peer_with_another_file_is_no_solo_host_either() -> None:
    p = plan(MODEL, me(8_000), [peer("huge-other", 90_000, 1.0, file=OTHER_FILE), peer("w", 4_000, 5.0)])
    assert p.kind == "pipeline" and p.workers == ("w",)
    assert plan(MODEL, me(8_000), [peer("huge", 90_000, 1.0)]).host == "huge"


def test_without_its_own_file_id_this_node_matches_no_peer() -> None:
    unhashed = dataclasses.replace(MODEL, content_id=None)
    assert plan(unhashed, me(12_000), [peer("w", 4_000, 5.0)]).host == "me"
    with pytest.raises(PlanError, match="not hashed yet"):
        plan(unhashed, me(8_000), [peer("w", 4_000, 5.0)])
    assert not is_candidate_worker(peer("w", 4_000, 5.0, file=None), None)


# -- rule 3: layers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_layers", "capacities", "expected"), [
    (18, [4, 2, 2], (9, 5, 4)),  # 9, 4.5, 4.5: the tied remainder goes to the earlier shard
    (32, [24_000, 12_000], (21, 11)),  # 21.33, 10.67
    (80, [3, 3, 2], (30, 30, 20)),  # exact
    (10, [1, 1, 1], (4, 3, 3)),  # the host takes the tie
    (7, [5, 3, 2], (4, 2, 1)),  # 3.5, 2.1, 1.4
    (3, [10, 1], (3, 0)),  # 2.73, 0.27: the small one rounds to nothing
    (5, [0, 0], (3, 2)),  # no capacity at all: equal shares
])
def test_split_layers_by_largest_remainder(n_layers: int, capacities: list[int], expected: tuple[int, ...]) -> None:
    assert split_layers(n_layers, capacities) == expected


def test_eighteen_layers_over_4_2_2() -> None:
    model = ModelFacts("gemma", size_mb=6_000, n_layers=18, content_id=FILE)
    p = plan(model, me(4_000), [peer("w1", 2_000, 10.0), peer("w2", 2_000, 20.0)])
    assert ranges(p) == [("me", 0, 8), ("w1", 9, 13), ("w2", 14, 17)]
    assert p.tensor_split() == pytest.approx((9 / 18, 5 / 18, 4 / 18))


def test_remote_host_takes_the_tied_layer() -> None:
    model = ModelFacts("gemma", size_mb=6_000, n_layers=18, content_id=FILE)
    p = plan(model, me(2_000), [peer("a", 6_000, 5.0)])
    assert ranges(p) == [("a", 0, 13), ("me", 14, 17)]


def test_worker_whose_share_rounds_to_zero_is_dropped_and_replaced() -> None:
    model = ModelFacts("tiny", size_mb=10_000, n_layers=3, content_id=FILE)
    # me + tiny reach 11 000 but tiny's share of 3 layers is 0.27: it is dropped and "next" joins instead.
    peers = [peer("tiny", 1_000, 1.0), peer("next", 5_000, 2.0)]
    p = plan(model, me(10_000), peers)
    assert ranges(p) == [("me", 0, 1), ("next", 2, 2)]


def test_dropping_a_zero_share_worker_can_leave_too_little() -> None:
    model = ModelFacts("tiny", size_mb=10_000, n_layers=3, content_id=FILE)
    with pytest.raises(PlanError, match="too small for a whole one of its 3 layers"):
        plan(model, me(10_000), [peer("tiny", 1_000, 1.0)])


def test_one_layer_model_cannot_be_split() -> None:
    model = ModelFacts("one", size_mb=10_000, n_layers=1, content_id=FILE)
    with pytest.raises(PlanError):
        plan(model, me(6_000), [peer("a", 6_000, 1.0)])


@given(st.integers(0, 400), st.lists(st.integers(-5, 200_000), min_size=1, max_size=12))
def test_split_layers_assigns_every_layer_once(n_layers: int, capacities: list[int]) -> None:
    counts = split_layers(n_layers, capacities)
    assert sum(counts) == n_layers
    assert all(c >= 0 for c in counts)
    weights = [max(0, c) for c in capacities]
    if sum(weights):
        for count, weight in zip(counts, weights, strict=True):
            assert abs(count - n_layers * weight / sum(weights)) < 1  # largest remainder never misses by a layer


peer_strategy = st.builds(
    PeerFacts,
    peer_id=st.text("abcdefgh", min_size=1, max_size=3),
    capacity_mb=st.integers(0, 30_000),
    rtt_ms=st.none() | st.floats(0, 200),
    has_model=st.booleans(),
    role=st.sampled_from(["host", "worker", "standby", "client", "bootstrap"]),
    content_id=st.sampled_from([FILE, OTHER_FILE, None]),
)


@given(st.integers(1, 120), st.integers(0, 60_000), st.integers(0, 30_000), st.lists(peer_strategy, max_size=10),
       st.booleans(), st.none() | st.integers(1, 4))
def test_any_plan_is_well_formed(n_layers: int, size_mb: int, local_mb: int, peers: list[PeerFacts],
                                 force_split: bool, force_workers: int | None) -> None:
    model = ModelFacts("m", size_mb, n_layers, FILE)
    local = PeerFacts("me", local_mb, None, True, "host", FILE)
    try:
        p = plan(model, local, peers, force_split=force_split,
                 force_workers=force_workers if force_split else None)
    except PlanError as error:
        assert error.hint
        return
    assert_well_formed(p, model)
    by_id = {q.peer_id: q for q in peers} | {"me": local}
    members = [by_id[s.peer_id] for s in p.shards]
    assert sum(m.capacity_mb for m in members) >= needed_mb(size_mb)
    assert by_id[p.host].capacity_mb == max(m.capacity_mb for m in members)
    assert p.content_id == FILE
    if p.kind == "solo":
        assert not force_split
        assert members[0].content_id == FILE
        assert len(p.shards) == 1
    else:
        assert all(is_candidate_worker(m, FILE) for m in members if m.peer_id != "me")
        assert all(m.content_id == FILE and m.has_model for m in members)
        if force_split and force_workers is not None:
            assert len(p.workers) == force_workers
        if not force_split:
            assert local_mb < needed_mb(size_mb)
            assert not any(can_host_solo(q, size_mb, FILE) for q in by_id.values() if q.peer_id != "me")


# -- rule 4: force_split ------------------------------------------------------------------------------


def test_force_split_over_all_candidates_even_when_it_fits() -> None:
    peers = [peer("a", 4_000, 5.0), peer("b", 4_000, 6.0), peer("slow", 4_000, 100.0)]
    p = plan(MODEL, me(16_000), peers, force_split=True)
    assert p.kind == "pipeline"
    assert p.forced
    assert ranges(p) == [("me", 0, 21), ("a", 22, 26), ("b", 27, 31)]  # 21.3, 5.3, 5.3: the host takes the tie


def test_force_split_over_exactly_n_workers() -> None:
    peers = [peer("a", 4_000, 5.0), peer("b", 4_000, 6.0), peer("c", 20_000, 7.0)]
    p = plan(MODEL, me(12_000), peers, force_split=True, force_workers=1)
    assert p.workers == ("a",)
    assert ranges(p) == [("me", 0, 23), ("a", 24, 31)]
    p = plan(MODEL, me(12_000), peers, force_split=True, force_workers=3)
    assert p.host == "c"
    assert p.workers == ("me", "a", "b")


def test_force_split_replaces_a_zero_share_worker_to_keep_n() -> None:
    model = ModelFacts("tiny", size_mb=1_000, n_layers=4, content_id=FILE)
    p = plan(model, me(16_000), [peer("crumb", 100, 1.0), peer("w", 8_000, 2.0)], force_split=True,
             force_workers=1)
    assert ranges(p) == [("me", 0, 2), ("w", 3, 3)]


def test_force_split_without_a_worker() -> None:
    peers = [peer("slow", 9_000, 120.0), peer("client", 9_000, 1.0, role="client")]
    with pytest.raises(PlanError, match="no peer can be a worker") as caught:
        plan(MODEL, me(20_000), peers, force_split=True)
    assert "1 clients" in str(caught.value)
    assert "1 slower than 80 ms or unmeasured" in str(caught.value)


def test_force_split_with_too_few_workers() -> None:
    with pytest.raises(PlanError, match="--split 3 needs 3 workers for big-model but only 1 can hold layers"):
        plan(MODEL, me(20_000), [peer("a", 4_000, 5.0)], force_split=True, force_workers=3)


def test_force_split_still_needs_the_capacity() -> None:
    with pytest.raises(PlanError, match="1000 MB missing"):
        plan(MODEL, me(6_000), [peer("a", 4_000, 5.0), peer("b", 4_000, 5.0)], force_split=True,
             force_workers=1)


def test_force_workers_must_be_positive_and_needs_force_split() -> None:
    with pytest.raises(PlanError, match="at least one worker"):
        plan(MODEL, me(20_000), [peer("a", 4_000, 5.0)], force_split=True, force_workers=0)
    with pytest.raises(ValueError, match="force_split"):
        plan(MODEL, me(20_000), [], force_workers=1)


# -- errors -------------------------------------------------------------------------------------------


def test_not_enough_capacity_says_how_much_is_missing_and_what_to_do() -> None:
    peers = [peer("a", 3_000, 5.0), peer("far", 50_000, 200.0, has_model=False), peer("slow", 9_000, 120.0),
             peer("c", 9_000, 1.0, role="client")]
    with pytest.raises(PlanError) as caught:
        plan(MODEL, me(4_000), peers)
    error = caught.value
    assert isinstance(error, MeshP2PError)
    assert error.message == (
        "big-model (10000 MB) needs 11000 MB (1.1 x its size); the 2 nodes that can take part (this node and 1 peer) "
        "have 7000 MB: 4000 MB missing (left out: 1 clients, 1 slower than 80 ms or unmeasured, 1 without the model)")
    assert error.hint is not None
    for advice in ("add nodes", "smaller quantisation", "--max-vram"):
        assert advice in error.hint


def test_alone_without_peers() -> None:
    with pytest.raises(PlanError) as caught:
        plan(MODEL, me(5_000), [])
    assert caught.value.message.endswith("; the 1 node that can take part (this node) has 5000 MB: 6000 MB missing")


def test_nonsense_model_facts() -> None:
    with pytest.raises(ValueError):
        plan(ModelFacts("m", 1, 0), me(10), [])
    with pytest.raises(ValueError):
        plan(ModelFacts("m", -1, 4), me(10), [])


# -- rule 5: replan_needed ----------------------------------------------------------------------------


def pipeline_plan() -> tuple[Plan, dict[str, PeerFacts]]:
    peers = {"a": peer("a", 4_000, 5.0), "b": peer("b", 4_000, 60.0)}
    p = plan(MODEL, me(4_000), list(peers.values()))
    assert p.workers == ("a", "b")
    return p, peers


def test_no_replan_when_nothing_changed() -> None:
    p, peers = pipeline_plan()
    assert not replan_needed(p, peers)


def test_replan_when_a_worker_leaves() -> None:
    p, peers = pipeline_plan()
    del peers["b"]
    assert replan_needed(p, peers)


@pytest.mark.parametrize("change", [
    {"has_model": False}, {"role": "client"}, {"role": "bootstrap"}, {"capacity_mb": 0}, {"rtt_ms": None},
    {"rtt_ms": KEEP_RTT_MS + 1}, {"content_id": OTHER_FILE}, {"content_id": None},
])
def test_replan_when_a_worker_can_no_longer_serve(change: dict[str, object]) -> None:
    p, peers = pipeline_plan()
    peers["b"] = dataclasses.replace(peers["b"], **change)  # type: ignore[arg-type]
    assert replan_needed(p, peers)


def test_worker_rtt_above_the_cap_but_within_keep_does_not_flap() -> None:
    p, peers = pipeline_plan()
    peers["b"] = dataclasses.replace(peers["b"], rtt_ms=MAX_RTT_MS + 20)
    assert not replan_needed(p, peers)
    peers["b"] = dataclasses.replace(peers["b"], rtt_ms=KEEP_RTT_MS)
    assert not replan_needed(p, peers)


def test_replan_when_one_node_now_fits_the_model() -> None:
    p, peers = pipeline_plan()
    peers["new"] = peer("new", 11_000, 150.0)
    assert replan_needed(p, peers)
    peers["new"] = peer("new", 10_999, 1.0)
    assert not replan_needed(p, peers)
    peers["new"] = peer("new", 50_000, 1.0, has_model=False)
    assert not replan_needed(p, peers)
    peers["new"] = peer("new", 50_000, 1.0, file=OTHER_FILE)
    assert not replan_needed(p, peers)


def test_a_grown_worker_that_fits_alone_triggers_a_replan() -> None:
    p, peers = pipeline_plan()
    peers["a"] = dataclasses.replace(peers["a"], capacity_mb=12_000)
    assert replan_needed(p, peers)


def test_no_replan_for_a_closer_or_bigger_peer_that_does_not_fit_alone() -> None:
    p, peers = pipeline_plan()
    peers["closer"] = peer("closer", 9_000, 0.5)
    assert not replan_needed(p, peers)


def test_forced_split_is_not_undone_because_it_fits() -> None:
    peers = {"a": peer("a", 4_000, 5.0)}
    p = plan(MODEL, me(20_000), list(peers.values()), force_split=True)
    peers["huge"] = peer("huge", 90_000, 1.0)
    assert not replan_needed(p, peers)
    del peers["a"]
    assert replan_needed(p, peers)


def test_solo_plan_replans_only_on_nothing() -> None:
    p = plan(MODEL, me(12_000), [])
    assert not replan_needed(p, {"huge": peer("huge", 90_000, 1.0)})
    assert not replan_needed(p, {})


def test_plan_is_plain_frozen_data() -> None:
    p = plan(MODEL, me(12_000), [])
    assert p == Plan("big-model", "me", "solo", (Shard("me", 0, 31, 1.0),), model_size_mb=10_000, content_id=FILE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.host = "x"  # type: ignore[misc]


# -- rule 3, MoE: by bytes ----------------------------------------------------------------------------


def test_bytes_split_matches_capacity_shares_with_the_host_part_counted() -> None:
    assert split_layers_by_bytes([10] * 4, 0, [1, 1]) == (2, 2)
    # The host's 20 bytes of embeddings and head count against its half: it takes one block, not two.
    assert split_layers_by_bytes([10] * 4, 20, [1, 1]) == (1, 3)
    # Blocks of unequal size: the boundary falls where the bytes, not the counts, are halved.
    assert split_layers_by_bytes([10, 10, 40, 40], 0, [1, 1]) == (3, 1)
    assert split_layers_by_bytes([10] * 4, 0, [1, 1, 1]) == (1, 2, 1)
    assert split_layers_by_bytes([10] * 6, 0, [2, 1]) == (4, 2)
    # A host part bigger than its share leaves it no block (the planner then drops or re-ranks it).
    assert split_layers_by_bytes([5] * 4, 100, [1, 1]) == (0, 4)


def test_bytes_split_ties_give_the_block_to_the_earlier_shard() -> None:
    # Half of 25 bytes is 12.5: a boundary after block 0 (10 bytes before it) or after block 1 (15) is 2.5 off.
    assert split_layers_by_bytes([10, 5, 10], 0, [1, 1]) == (2, 1)


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40), st.integers(0, 50_000),
       st.lists(st.integers(0, 100_000), min_size=1, max_size=6))
def test_bytes_split_assigns_every_block_once_in_order(layer_bytes: list[int], host: int,
                                                      capacities: list[int]) -> None:
    counts = split_layers_by_bytes(layer_bytes, host, capacities)
    assert len(counts) == len(capacities) and sum(counts) == len(layer_bytes) and min(counts) >= 0


def test_a_moe_model_is_planned_by_its_bytes() -> None:
    # 8 blocks; the host's embeddings and head weigh two blocks: with equal capacities the host takes 3 blocks.
    moe = dataclasses.replace(MODEL, n_layers=8, layer_bytes=(1_000,) * 8, host_bytes=2_000)
    got = plan(moe, me(6_000), [peer("w1", 6_000)])
    assert ranges(got) == [("me", 0, 2), ("w1", 3, 7)]
    dense = dataclasses.replace(moe, layer_bytes=(), host_bytes=0)
    assert ranges(plan(dense, me(6_000), [peer("w1", 6_000)])) == [("me", 0, 3), ("w1", 4, 7)]
    with pytest.raises(ValueError, match="block sizes"):
        plan(dataclasses.replace(moe, layer_bytes=(1,) * 3), me(6_000), [peer("w1", 6_000)])


# -- rule 6: recruits ---------------------------------------------------------------------------------------


def test_no_recruit_when_a_plan_is_possible_or_nothing_would_do() -> None:
    assert recruits(MODEL, me(12_000), []) == []  # fits here
    assert recruits(MODEL, me(6_000), [peer("w1", 6_000)]) == []  # holders suffice
    assert recruits(MODEL, me(6_000), [peer("x", 1_000, has_model=False)]) == [], "not enough even with it"
    assert recruits(dataclasses.replace(MODEL, content_id=None), me(6_000),
                    [peer("x", 6_000, has_model=False)]) == [], "no file to name yet"


def test_recruits_come_after_every_holder_in_rank_order_until_the_capacity_suffices() -> None:
    peers = [peer("holder", 3_000), peer("far", 9_000, 200.0, has_model=False),
             peer("near-small", 1_000, 5.0, has_model=False), peer("near-big", 4_000, 5.0, has_model=False),
             peer("client", 9_000, 1.0, has_model=False, role="client"),
             peer("other-file", 4_000, 20.0, file=OTHER_FILE)]
    # Need 11 000: me 4 000 + holder 3 000, then near-big 4 000 (ties on RTT go to the bigger) = 11 000.
    assert recruits(MODEL, me(4_000), peers) == ["near-big"]
    # With less here: near-big, near-small, then the one with another file (20 ms), never the far one or a client.
    assert recruits(MODEL, me(2_000), peers) == ["near-big", "near-small", "other-file"]
