"""Which `--moe shard` member calibrates a model that none can run alone, over the layer split: a pure rule.

Measured expert usage comes from llama-imatrix run on a node that can hold the whole model (inference/
calibration.py). A member whose offered memory is below the planner's rule 1 (mesh/planner.py: FIT_HEADROOM x
the file's size) cannot, so its usage would stay the weight-norm estimate. Such a model is instead calibrated
over a layer split: llama-imatrix on one member, its layers spread over mesh workers' ggml-rpc-servers the way
a pipeline is (app/split_calibration.py). One such run is enough (calibration is deterministic, and its counts are
shared over `/meshp2p/moe-usage/1.0.0`), so, for one content id, among the members announcing it (this node
included, with its own tag):

1. When any member announces measured counts (source `imatrix`), nobody calibrates over a split: the members
   without them ask for them (mesh/moe_usage.py).
2. Otherwise the calibrator is the member with the most offered capacity (VRAM, else RAM, as gossiped), ties to
   the lowest peer id. It is the member the planner would make the split's host (the host is the member with
   the most capacity, planner rule 2), so the plan it makes puts llama-imatrix on itself; every member computes
   the same name from the same gossip, and the others wait for its counts.
3. The calibrator waits for its view of the group to settle (mesh/moe_settle.py) before running: members that
   start together appear one by one, and the lowest name may not have arrived yet. Two members that still both
   run it (their views differed) get the same counts; rule 2 of mesh/moe_usage.py picks one tag either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshp2p.wire.moe_usage import SOURCE_IMATRIX, parse_usage_tag


@dataclass(frozen=True)
class Announced:
    """What a member gossips that the rule reads: its usage tag for the file and its offered capacity."""

    usage_tag: str
    capacity_mb: int


def _measured(tag: str) -> bool:
    parsed = parse_usage_tag(tag)
    return parsed is not None and parsed[0] == SOURCE_IMATRIX


def split_calibrator(self_id: str, own: Announced, announced: Mapping[str, Announced]) -> str | None:
    """Rules 1-2: the peer id that should calibrate over the split, or None when a member has measured counts.
    `announced` maps the other members announcing this content id (an entry for `self_id` is replaced by `own`)."""
    members = {**announced, self_id: own}
    if any(_measured(a.usage_tag) for a in members.values()):
        return None
    return min(members, key=lambda peer: (-members[peer].capacity_mb, peer))
