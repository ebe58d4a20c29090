"""`serving_plan` (app/local.py): the one decision of how a model is served, for models given at start and for
those a node obtains later (app/node.py's `_obtain` calls it too: a MoE model fetched under `--moe shard` joins its
shard group, as tests/e2e/test_moe_shards.py checks end to end)."""

from __future__ import annotations

from pathlib import Path

import pytest
from make_tiny_gguf import write_tiny_gguf

from meshp2p.app.local import ServingPlan, serving_plan
from meshp2p.inference.models import ModelSpec, spec_from_parts

PLENTY_MB = (64 * 1024, 0)
TOO_LITTLE_MB = (0, 0)


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, ModelSpec]:
    root: Path = tmp_path_factory.mktemp("plan")
    return (spec_from_parts((write_tiny_gguf(root / "moe.gguf", "moe", layers=2, seed=1),)),
            spec_from_parts((write_tiny_gguf(root / "dense.gguf", "dense", seed=2),)))


def plan(models: list[ModelSpec], *, standby: bool = False, meshed: bool = True, force_split: bool = False,
         memory_mb: tuple[int, int] = PLENTY_MB, moe_shard: bool = False) -> ServingPlan:
    return serving_plan(models, standby=standby, meshed=meshed, force_split=force_split, memory_mb=memory_mb,
                        moe_shard=moe_shard)


def test_moe_shard_puts_a_mesh_nodes_moe_models_in_shard_groups_whatever_their_size(specs) -> None:
    moe, dense = specs
    assert plan([moe, dense], moe_shard=True) == ServingPlan(solo=[dense], sharded=[moe])
    assert plan([moe, dense], moe_shard=True, memory_mb=TOO_LITTLE_MB) == ServingPlan(planned=[dense],
                                                                                       sharded=[moe])
    assert plan([moe], moe_shard=True, force_split=True) == ServingPlan(sharded=[moe])


def test_without_moe_shard_a_mesh_or_a_start_moe_models_are_served_as_any_other(specs) -> None:
    moe, dense = specs
    assert plan([moe, dense]) == ServingPlan(solo=[moe, dense])
    assert plan([moe], memory_mb=TOO_LITTLE_MB) == ServingPlan(planned=[moe])
    assert plan([moe, dense], meshed=False, moe_shard=True) == ServingPlan(solo=[moe, dense])
    assert plan([moe, dense], standby=True, moe_shard=True) == ServingPlan()
