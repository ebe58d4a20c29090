"""`meshp2p up --moe shard` and its knobs, checked before anything starts (cli/up.py)."""

from __future__ import annotations

import argparse

import pytest

from meshp2p.app.moe_shards import MoeShardConfig
from meshp2p.cli.up import moe_shard_from_args
from meshp2p.errors import ConfigError


def args(**changes: object) -> argparse.Namespace:
    base = {"moe": "exact", "moe_min_experts": None, "moe_shard_mb": None, "client": False, "solo": False,
            "standby": False, "split": False}
    return argparse.Namespace(**{**base, **changes})


def test_default_is_the_exact_split() -> None:
    assert moe_shard_from_args(args()) is None


def test_shard_mode_with_its_knobs() -> None:
    assert moe_shard_from_args(args(moe="shard")) == MoeShardConfig()
    assert moe_shard_from_args(args(moe="shard", moe_min_experts=0.25, moe_shard_mb=2.5)) == MoeShardConfig(
        min_fraction=0.25, capacity_bytes=2_500_000)


@pytest.mark.parametrize("changes", [
    {"moe_min_experts": 0.5},  # a knob without --moe shard
    {"moe": "shard", "moe_min_experts": 0.0},
    {"moe": "shard", "moe_min_experts": 1.5},
    {"moe": "shard", "moe_shard_mb": -1.0},
    {"moe": "shard", "solo": True},
    {"moe": "shard", "split": True},
])
def test_nonsense_is_refused_with_a_hint(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as caught:
        moe_shard_from_args(args(**changes))
    assert caught.value.hint
