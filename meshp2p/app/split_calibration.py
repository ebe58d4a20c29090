"""Calibrating a Mixture-of-Experts model that no `--moe shard` member can run alone: llama-imatrix over a layer split.

The member that mesh/split_calibration.py names plans the model's layers over itself and mesh workers with the
same planner, facts and peer matching as a split host (mesh/planner.py; app/pipeline.py's `model_facts` and
`peer_facts`), opens one RPC tunnel port per worker (`open_bridge_ports`), and runs llama-imatrix with the
placement llama-server would get for that plan (`pipeline_args`). Its output is read, cached and shared like a
calibration made alone (inference/calibration.py, source `imatrix`): the router statistics are the model's,
wherever its layers ran. The tunnels live only for the run.

A plan that does not put the host on this node (a worker with more capacity than any member, or a node that can
hold the model alone and will serve it that way) is not run: the caller keeps the estimate and tries again later.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from meshp2p.app.pipeline import model_facts, open_bridge_ports, peer_facts, pipeline_args
from meshp2p.inference.calibration import ExpertUsage, run_imatrix_placed
from meshp2p.inference.models import ModelSpec
from meshp2p.mesh.planner import PlanError, plan
from meshp2p.mesh.view import MeshView
from meshp2p.p2p.rpc_tunnel import RpcTunnelClient
from meshp2p.wire.model_id import ContentId

log = logging.getLogger(__name__)


class SplitCalibration:
    """How one member runs llama-imatrix over a layer split of `spec` (its `calibrate`)."""

    def __init__(self, spec: ModelSpec, view: MeshView, bridge: RpcTunnelClient, rtt_ms: dict[str, float], *,
                 imatrix: Path) -> None:
        self.spec = spec
        self.view = view
        self.bridge = bridge
        self.rtt_ms = rtt_ms
        self.imatrix = imatrix

    async def calibrate(self, cid: ContentId, n_layers: int, n_expert: int) -> ExpertUsage:
        """Plan, open the tunnels, run llama-imatrix; PlanError when no split hosted here is possible now, and
        inference/calibration.py's CalibrationFailed when the run gives no counts."""
        local, others = peer_facts(self.view, self.spec.id, self.rtt_ms)
        facts = model_facts(self.spec, n_layers, cid)
        found = plan(facts, local, others)
        if found.host != self.view.self_id:
            raise PlanError(f"the plan puts {self.spec.id} on {found.host[-8:]}, not on this node",
                            hint="that node calibrates it or serves it")
        if not found.workers:  # a solo plan here: the caller's fit rule and the planner's disagree
            raise PlanError(f"{self.spec.id} fits this node: it is calibrated alone")
        log.info("calibrating %s over a layer split: %s", self.spec.id,
                 ", ".join(f"{s.peer_id[-8:]} layers {s.first_layer}-{s.last_layer}" for s in found.shards))
        async with trio.open_nursery() as nursery:
            ports = await open_bridge_ports(nursery, self.bridge, found, self.spec.id)
            placement = pipeline_args(found, ports, n_layers)
            try:
                return await run_imatrix_placed(self.imatrix, self.spec.path, n_layers, n_expert,
                                                placement=placement)
            finally:
                nursery.cancel_scope.cancel()

