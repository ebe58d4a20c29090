"""Election on plain snapshots: what needs a server, who may take it, and how nodes avoid a stampede."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshp2p.mesh.election import (
    HOT_IMBALANCE,
    HOT_MIN_REQ_PER_MIN,
    ORPHAN_MEMORY_S,
    PROMOTION_GRACE_S,
    MeshSnapshot,
    Need,
    NeedTracker,
    NodeInfo,
    Promotion,
    hot_models,
    needs,
    per_server_demand,
    plan_promotions,
    rank_candidates,
    snapshot_from_view,
)
from meshp2p.mesh.view import MeshView
from meshp2p.wire.status import StatusBody

T0 = 1_750_000_000.0  # a multiple of PROMOTION_EPOCH_S


def node(peer_id: str, role: str = "standby", *, loaded: Iterable[str] = (), available: Iterable[str] = (),
         free_mb: int = 16_000, load: float = 0.0, loading: Iterable[str] = ()) -> NodeInfo:
    return NodeInfo(peer_id, role, frozenset(loaded), frozenset(available), capacity_mb=free_mb, free_mb=free_mb,
                    load=load, loading=frozenset(loading))


def mesh(*nodes: NodeInfo) -> MeshSnapshot:
    return MeshSnapshot(tuple(nodes))


def winners(view: MeshSnapshot, demand: dict[str, float], now: float = T0, *,
            recently_served: Mapping[str, float] = MappingProxyType({}),
            unserved_since: Mapping[str, float] = MappingProxyType({})) -> dict[str, Promotion]:
    """What every node in the view decides, keyed by node."""
    decisions = {n.peer_id: plan_promotions(view, demand, self_id=n.peer_id, now=now,
                                            recently_served=recently_served, unserved_since=unserved_since)
                 for n in view.peers}
    return {p: d for p, d in decisions.items() if d is not None}


# -- what needs a server ------------------------------------------------------------------------------


def test_per_server_demand_divides_by_servers() -> None:
    view = mesh(node("h1", "host", loaded=["a"]), node("h2", "host", loaded=["a", "b"]))
    assert per_server_demand(view, {"a": 30.0, "c": 5.0}) == {"a": 15.0, "b": 0.0}


def test_a_lone_served_model_is_hot_above_the_minimum() -> None:
    view = mesh(node("h1", "host", loaded=["a"]))
    assert hot_models(view, {"a": HOT_MIN_REQ_PER_MIN}) == ["a"]
    assert hot_models(view, {"a": HOT_MIN_REQ_PER_MIN - 0.1}) == []


def test_hot_needs_imbalance_against_the_median_of_the_others() -> None:
    view = mesh(node("h1", "host", loaded=["a"]), node("h2", "host", loaded=["b"]),
                node("h3", "host", loaded=["c"]), node("h4", "host", loaded=["d"]))
    # others of "a": 4, 5, 100 -> median 5; 15 = 3 x 5 is hot, 14.9 is not.
    assert "a" in hot_models(view, {"a": HOT_IMBALANCE * 5, "b": 4.0, "c": 5.0, "d": 100.0})
    assert "a" not in hot_models(view, {"a": 14.9, "b": 4.0, "c": 5.0, "d": 100.0})


def test_hot_counts_per_server_not_total() -> None:
    one = mesh(node("h1", "host", loaded=["a"]), node("h2", "host", loaded=["b"]))
    three = mesh(node("h1", "host", loaded=["a"]), node("h2", "host", loaded=["a"]), node("h3", "host", loaded=["a"]),
                 node("h4", "host", loaded=["b"]))
    demand = {"a": 30.0, "b": 5.0}
    assert hot_models(one, demand) == ["a"]
    assert hot_models(three, demand) == []  # 10 per server < 3 x 5


def test_needs_are_ordered_orphaned_wanted_hot() -> None:
    view = mesh(node("h1", "host", loaded=["hot"]))
    demand = {"hot": 50.0, "wanted-small": 1.0, "wanted-big": 9.0, "orphan": 0.0}
    assert needs(view, demand, now=T0, recently_served={"orphan": T0 - 3, "hot": T0}) == [
        Need("orphan", "orphaned"), Need("wanted-big", "wanted"), Need("wanted-small", "wanted"), Need("hot", "hot"),
    ]


def test_orphaned_only_while_recent() -> None:
    view = mesh(node("s1"))
    assert needs(view, {}, now=T0, recently_served={"a": T0 - ORPHAN_MEMORY_S}) == [Need("a", "orphaned")]
    assert needs(view, {}, now=T0, recently_served={"a": T0 - ORPHAN_MEMORY_S - 1}) == []
    assert needs(view, {"a": 1.0}, now=T0, recently_served={"a": T0 - ORPHAN_MEMORY_S - 1}) == [Need("a", "wanted")]


def test_a_model_being_loaded_needs_nothing_more() -> None:
    view = mesh(node("s1", loading=["a"]))
    assert needs(view, {"a": 5.0}, now=T0, recently_served={"a": T0 - 1}) == []


def test_client_loaded_lists_do_not_count_as_serving() -> None:
    view = mesh(node("c1", "client", loaded=["a"]), node("s1", available=["a"]))
    assert needs(view, {"a": 1.0}, now=T0, recently_served={}) == [Need("a", "wanted")]


# -- who may promote ----------------------------------------------------------------------------------


def test_standby_takes_a_wanted_model() -> None:
    view = mesh(node("s1", available=["a"]))
    assert plan_promotions(view, {"a": 1.0}, self_id="s1", now=T0) == Promotion("a", "wanted")


def test_nothing_to_do_without_demand() -> None:
    view = mesh(node("s1", available=["a"]))
    assert plan_promotions(view, {}, self_id="s1", now=T0) is None
    assert plan_promotions(view, {"a": 0.0}, self_id="s1", now=T0) is None


def test_orphaned_beats_wanted_and_is_taken_without_demand() -> None:
    view = mesh(node("s1", available=["a", "b"]))
    decision = plan_promotions(view, {"b": 100.0}, self_id="s1", now=T0, recently_served={"a": T0 - 2})
    assert decision == Promotion("a", "orphaned")


def test_hot_adds_a_replica() -> None:
    view = mesh(node("h1", "host", loaded=["a"]), node("s1", available=["a"]))
    assert plan_promotions(view, {"a": 40.0}, self_id="s1", now=T0) == Promotion("a", "hot")
    assert plan_promotions(view, {"a": 40.0}, self_id="h1", now=T0) is None  # already serves it


def test_only_nodes_with_the_model_on_disk_promote() -> None:
    view = mesh(node("s1", available=["b"]))
    assert plan_promotions(view, {"a": 5.0}, self_id="s1", now=T0) is None


@pytest.mark.parametrize("role", ["client", "worker", "bootstrap"])
def test_other_roles_never_promote(role: str) -> None:
    view = mesh(node("n1", role, available=["a"]))
    assert plan_promotions(view, {"a": 5.0}, self_id="n1", now=T0) is None


def test_needs_free_memory_for_a_known_size() -> None:
    view = mesh(node("s1", available=["a"], free_mb=1099))
    assert plan_promotions(view, {"a": 5.0}, self_id="s1", now=T0, model_sizes_mb={"a": 1000}) is None
    view = mesh(node("s1", available=["a"], free_mb=1100))
    assert plan_promotions(view, {"a": 5.0}, self_id="s1", now=T0, model_sizes_mb={"a": 1000}) is not None
    assert plan_promotions(view, {"a": 5.0}, self_id="s1", now=T0, model_sizes_mb={"b": 10**9}) is not None


def test_a_node_loading_something_waits() -> None:
    view = mesh(node("s1", available=["a", "b"], loading=["b"]))
    assert plan_promotions(view, {"a": 5.0}, self_id="s1", now=T0) is None


def test_unknown_self_does_nothing() -> None:
    assert plan_promotions(mesh(node("s1", available=["a"])), {"a": 5.0}, self_id="nobody", now=T0) is None


def test_standby_ranks_before_host_with_more_room() -> None:
    view = mesh(node("h1", "host", loaded=["x"], available=["a"], free_mb=64_000),
                node("s1", available=["a"], free_mb=8_000))
    assert [n.peer_id for n in rank_candidates(view, "a")] == ["s1", "h1"]
    assert winners(view, {"a": 5.0}) == {"s1": Promotion("a", "wanted")}


def test_host_with_spare_capacity_promotes_when_no_standby_can() -> None:
    view = mesh(node("h1", "host", loaded=["x"], available=["a"], free_mb=64_000), node("s1", available=["b"]))
    assert winners(view, {"a": 5.0}) == {"h1": Promotion("a", "wanted")}


# -- stampede avoidance -------------------------------------------------------------------------------


def test_rank_prefers_free_memory_then_low_load() -> None:
    view = mesh(node("s1", available=["a"], free_mb=8_000, load=0.0),
                node("s2", available=["a"], free_mb=24_000, load=3.0),
                node("s3", available=["a"], free_mb=24_100, load=1.0))  # same 1 GiB step as s2
    assert [n.peer_id for n in rank_candidates(view, "a")] == ["s3", "s2", "s1"]


def test_every_node_computes_the_same_single_winner() -> None:
    view = mesh(*(node(f"s{i}", available=["a"]) for i in range(20)))
    decided = winners(view, {"a": 5.0})
    assert len(decided) == 1
    (winner,) = decided
    assert winner == rank_candidates(view, "a")[0].peer_id
    # Node order in the snapshot does not matter: a node's gossip arrival order is its own.
    assert winners(mesh(*reversed(view.peers)), {"a": 5.0}) == decided


def test_the_tiebreak_spreads_models_and_does_not_drift_with_time() -> None:
    view = mesh(*(node(f"s{i}", available=[f"m{j}" for j in range(20)]) for i in range(20)))
    firsts = {rank_candidates(view, f"m{j}")[0].peer_id for j in range(20)}
    assert len(firsts) > 1
    order = [n.peer_id for n in rank_candidates(view, "m0")]
    since = {"m0": T0}
    for now in (T0, T0 + 3, T0 + 9.99, T0 + 10, T0 + 11):  # no epoch boundary reorders a need under way
        assert set(winners(view, {"m0": 5.0}, now=now, unserved_since=since)) <= set(order[:3])


def test_grace_lets_the_next_candidate_go_when_the_first_does_not() -> None:
    view = mesh(*(node(f"s{i}", available=["a"]) for i in range(5)))
    order = [n.peer_id for n in rank_candidates(view, "a")]
    since = {"a": T0}
    assert set(winners(view, {"a": 5.0}, now=T0 + 1, unserved_since=since)) == {order[0]}
    assert set(winners(view, {"a": 5.0}, now=T0 + PROMOTION_GRACE_S - 0.01, unserved_since=since)) == {order[0]}
    assert set(winners(view, {"a": 5.0}, now=T0 + PROMOTION_GRACE_S, unserved_since=since)) == set(order[:2])
    assert set(winners(view, {"a": 5.0}, now=T0 + 9, unserved_since=since)) == set(order[:2])


def test_orphan_gets_three_takers_within_ten_seconds() -> None:
    view = mesh(*(node(f"s{i}", available=["a"]) for i in range(5)))
    since = {"a": T0 - 2 * PROMOTION_GRACE_S}
    decided = winners(view, {}, now=T0, recently_served={"a": T0 - 2 * PROMOTION_GRACE_S}, unserved_since=since)
    assert len(decided) == 3
    assert all(d == Promotion("a", "orphaned") for d in decided.values())


def test_missing_unserved_since_means_just_now() -> None:
    view = mesh(*(node(f"s{i}", available=["a"]) for i in range(5)))
    assert len(winners(view, {"a": 5.0}, now=T0)) == 1


def test_one_model_per_node_and_needs_go_to_different_nodes() -> None:
    # s1 is first for both models (most memory); it takes the higher-priority one and s2 takes the other.
    view = mesh(node("s1", available=["a", "b"], free_mb=64_000), node("s2", available=["a", "b"], free_mb=8_000))
    decided = winners(view, {"a": 9.0, "b": 5.0})
    assert decided == {"s1": Promotion("a", "wanted"), "s2": Promotion("b", "wanted")}


def test_a_started_load_stops_further_promotions() -> None:
    view = mesh(node("s1", available=["a"], loading=["a"]), node("s2", available=["a"]))
    assert winners(view, {"a": 5.0}, now=T0 + 60, unserved_since={"a": T0}) == {}


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40_000), st.floats(0, 8)), min_size=1, max_size=12),
       st.floats(0, 1e6), st.floats(0, 60))
def test_property_agreement_and_at_most_one_first_promoter(nodes: list[tuple[int, int, float]], now_s: float,
                                                          waited_s: float) -> None:
    view = mesh(*(node(f"p{i}", ["standby", "host", "client", "worker", "standby"][role], available=["a"],
                       free_mb=free, load=load) for i, (role, free, load) in enumerate(nodes)))
    now = T0 + now_s
    ranked = rank_candidates(view, "a")
    decided = winners(view, {"a": 5.0}, now=now, unserved_since={"a": now - waited_s})
    elapsed = now - (now - waited_s)
    allowed = sum(1 for k in range(len(ranked)) if elapsed >= k * PROMOTION_GRACE_S)
    assert set(decided) <= {n.peer_id for n in ranked[:allowed]}
    if ranked:
        assert ranked[0].peer_id in decided
    assert all(n.role in ("standby", "host") for n in ranked)


# -- timers -------------------------------------------------------------------------------------------


def test_tracker_times_an_orphan_from_when_its_server_left() -> None:
    tracker = NeedTracker()
    served = mesh(node("h1", "host", loaded=["a"]), node("s1", available=["a"]), node("s2", available=["a"]))
    assert tracker.observe(served, {}, T0) == []
    left = mesh(node("s1", available=["a"]), node("s2", available=["a"]))
    assert tracker.observe(left, {}, T0 + 7) == [Need("a", "orphaned")]
    assert tracker.need_since == {"a": T0 + 7}
    tracker.observe(left, {}, T0 + 12)
    assert tracker.need_since == {"a": T0 + 7}  # still the same need
    decided = winners(left, {}, now=T0 + 12, recently_served=tracker.last_served, unserved_since=tracker.need_since)
    assert len(decided) == 2
    taken = mesh(node("s1", available=["a"], loading=["a"]), node("s2", available=["a"]))
    assert tracker.observe(taken, {}, T0 + 13) == []
    assert tracker.need_since == {}


def test_tracker_takes_servings_it_did_not_see_from_the_view() -> None:
    """A server that appeared and vanished between two observations still leaves its model orphaned."""
    tracker = NeedTracker()
    assert tracker.observe(mesh(node("s1", available=["a"])), {}, T0) == []
    view = MeshView(b"\x00" * 16, "s1")
    host = StatusBody(role="host", ram_mb=32_000, vram_mb=0, gpu=None, loaded=("a",), available=("a",), load=0.0,
                      api_port=None, version="0", region=None, rtt_ms={})
    view.update("h1", host, T0 + 1)
    view.update("c1", dataclasses.replace(host, role="client", loaded=("b",)), T0 + 1)
    assert view.remove("h1")
    assert view.served_at == {"a": T0 + 1}, "a client serves nothing"
    after = mesh(node("s1", available=["a"]))
    assert tracker.observe(after, {}, T0 + 2, served_at=view.served_at) == [Need("a", "orphaned")]
    assert tracker.last_served == {"a": T0 + 1}
    assert tracker.observe(after, {}, T0 + 1 + ORPHAN_MEMORY_S + 1, served_at=view.served_at) == []


def test_tracker_forgets_old_servings() -> None:
    tracker = NeedTracker()
    tracker.observe(mesh(node("h1", "host", loaded=["a"])), {}, T0)
    empty = mesh(node("s1", available=["a"]))
    assert tracker.observe(empty, {}, T0 + ORPHAN_MEMORY_S + 1) == []
    assert tracker.last_served == {}


def test_snapshot_from_view() -> None:
    view = MeshView(b"\x00" * 16, "s1")
    status = StatusBody(role="standby", ram_mb=32_000, vram_mb=0, gpu=None, loaded=(), available=("a",), load=0.0,
                        api_port=None, version="0", region=None, rtt_ms={})
    view.update("s1", status, T0)
    view.update("h1", dataclasses.replace(status, role="host", vram_mb=24_000, loaded=("b",)), T0)
    snap = snapshot_from_view(view)
    assert [n.peer_id for n in snap.peers] == ["h1", "s1"]
    assert snap.peers[0].free_mb == 24_000 and snap.peers[1].free_mb == 32_000
    assert plan_promotions(snap, {"a": 2.0}, self_id="s1", now=T0) == Promotion("a", "wanted")
