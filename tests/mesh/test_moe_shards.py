"""The shard planner's rules (mesh/moe_shards.py) with plain numbers."""

from __future__ import annotations

import pytest

from meshp2p.mesh.moe_shards import ShardMember, ShardModel, min_experts, plan_shards
from meshp2p.mesh.planner import PlanError

MB = 1_000_000
#: 8 experts, 2 used, 2 layers; one expert costs 1 MB per layer, the trunk 10 MB.
USAGE = ((80, 70, 60, 50, 40, 30, 20, 10), (10, 20, 30, 40, 50, 60, 70, 80))
MODEL = ShardModel(n_expert=8, experts_used=2, trunk_bytes=10 * MB, expert_bytes=(MB, MB), usage=USAGE)


def members(*experts: int) -> list[ShardMember]:
    """Members able to hold exactly `experts[i]` experts per layer, named p0, p1, ..."""
    return [ShardMember(f"p{i}", 10 * MB + k * 2 * MB) for i, k in enumerate(experts)]


def test_two_equal_members_share_a_core_and_cover_everything() -> None:
    plan = plan_shards(MODEL, members(5, 5))
    assert [s.experts_per_layer for s in plan.shards] == [5, 5]
    assert plan.core == ((0, 1), (7, 6))  # the most used of each layer; c = (10 - 8) // 1
    assert plan.covers_every_expert(8)
    for shard in plan.shards:
        assert {0, 1} <= set(shard.experts[0]) and {6, 7} <= set(shard.experts[1])
        assert shard.shard_bytes == 10 * MB + 5 * 2 * MB


def test_heavy_experts_are_spread_over_shards() -> None:
    plan = plan_shards(MODEL, members(5, 5))
    first, second = (set(s.experts[0]) for s in plan.shards)
    assert 2 in first and 3 in second  # dealt in usage order to the freest shard, ties to the lower id


def test_each_shard_is_sized_to_its_node() -> None:
    plan = plan_shards(MODEL, members(8, 4, 4))
    assert [s.experts_per_layer for s in plan.shards] == [8, 4, 4]
    assert plan.covers_every_expert(8)
    assert plan.shards[0].traffic_share == 1.0
    assert 0.5 < plan.shards[1].traffic_share < 1.0


def test_same_inputs_same_plan_whatever_the_order() -> None:
    a = plan_shards(MODEL, members(5, 6, 4))
    b = plan_shards(MODEL, list(reversed(members(5, 6, 4))) + members(5))
    assert a == b


def test_guard_refuses_a_small_shard_and_the_rest_plan_without_it() -> None:
    plan = plan_shards(MODEL, members(8, 3), min_fraction=0.5)
    assert [s.peer_id for s in plan.shards] == ["p0"]
    assert plan.refused[0][0] == "p1" and "at least 4" in plan.refused[0][1]


def test_guard_alone_raises_with_what_to_do() -> None:
    with pytest.raises(PlanError) as caught:
        plan_shards(MODEL, members(3, 3), min_fraction=0.5)
    assert "--moe-min-experts" in caught.value.message and "layer split" in (caught.value.hint or "")


def test_never_fewer_than_experts_used() -> None:
    assert min_experts(8, 2, 0.0) == 2
    assert min_experts(8, 2, 0.5) == 4
    assert min_experts(8, 2, 1.0) == 8
    with pytest.raises(PlanError):
        plan_shards(MODEL, members(1, 1, 1, 1, 1, 1, 1, 1), min_fraction=0.0)


def test_coverage_impossible_is_a_plan_error() -> None:
    with pytest.raises(PlanError) as caught:
        plan_shards(MODEL, members(6), min_fraction=0.5)
    assert "covering all 8" in caught.value.message


def test_three_way_minimum_shards_cover() -> None:
    plan = plan_shards(MODEL, members(4, 4, 4), min_fraction=0.5)
    assert plan.covers_every_expert(8)
    assert plan.core == ((0, 1), (7, 6))  # (12 - 8) // 2
