"""Serving a model as a pipeline: its layers on this node (the host) and on nearby workers. A Mixture-of-Experts
model is split the same way (each block with all its experts: exact, solo's tokens), sized by its blocks' bytes.

App-layer wiring of the planner (mesh/planner.py), the RPC bridge (p2p/rpc_tunnel.py) and the fleet:

1. Plan from the gossiped view: workers are peers that have the same model *file* on disk (the same content id in
   their status `files`, under this model's name or another: protocols/model-id.md), measured RTT <= 80 ms. A peer
   with a different file under the model's name is left out, and the host logs that once per peer and file.
2. For each worker, a local loopback port that leads, through `/meshp2p/rpc/1.0.0`, to the worker's
   ggml-rpc-server (started there on first use). The RPC server itself never listens beyond loopback.
3. llama-server runs on the host with `--rpc` to those ports. The host keeps the first layers and the output
   head (per-token logits never cross the network); the workers get the rest in plan order, `--tensor-split`
   giving each its planned share.
4. When a worker leaves (or can no longer serve), the split is stopped and planned again; requests meanwhile
   get 503 + Retry-After from the API, never a hang.

`SplitHost` is the host's side of one model; `PipelineWorker` is a node's side as a worker for others.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from meshp2p.app.status import RpcWorkerStatus, SplitStatus
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.fleet import ServerFleet
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.models import ModelSpec
from meshp2p.inference.rpc_server import OnDemandRpcServer, RpcServer
from meshp2p.mesh.planner import ModelFacts, PeerFacts, Plan, PlanError, plan, recruits, replan_needed
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.rpc_tunnel import RpcTunnelClient, RpcTunnelServer
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.status import Recruit, StatusBody

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

REPLAN_CHECK_S = 1.0
#: While no plan is possible (too few workers yet), look again this often.
PLAN_RETRY_S = 2.0


def offered_file(status: StatusBody, model_id: str, content_id: ContentId | None) -> tuple[bool, ContentId | None]:
    """(offers it, which file) for the planner: the file with `content_id` under any name the peer offers, else
    whatever file the peer has under `model_id` (which the planner then tells apart by its id)."""
    if content_id is not None and any(cid == content_id and name in status.available
                                      for name, cid in status.files.items()):
        return True, content_id
    return model_id in status.available, status.files.get(model_id)


def peer_facts(view: MeshView, model_id: str, rtt_ms: dict[str, float]) -> tuple[PeerFacts, list[PeerFacts]]:
    """The planner's input from the gossiped view: (this node, the others). This node's file for `model_id` is
    the one its own status names (None until hashed); peers are matched against it."""
    own = view.peers[view.self_id].status.files.get(model_id)
    facts: dict[str, PeerFacts] = {}
    for peer in view.peers.values():
        status = peer.status
        has_model, content_id = offered_file(status, model_id, own)
        facts[peer.peer_id] = PeerFacts(
            peer_id=peer.peer_id, capacity_mb=status.vram_mb or status.ram_mb,
            rtt_ms=0.0 if peer.peer_id == view.self_id else rtt_ms.get(peer.peer_id),
            has_model=has_model, role=status.role, content_id=content_id)
    local = facts.pop(view.self_id)
    return local, list(facts.values())


def pipeline_args(plan_: Plan, ports: list[int], n_layers: int) -> tuple[str, ...]:
    """llama-server arguments that place `plan_` on the host's CPU plus one RPC device per worker.

    llama.cpp offloads the *last* `-ngl` "layers", counting the output head as layer n_layers, to its devices
    (RPC devices come first in its device list): `-ngl worker_layers + 1`, with the output head and the token
    embeddings pinned back to the host's CPU by `-ot`, leaves the host exactly its first layers plus the head.
    `--tensor-split` shares the offloaded layers among the RPC devices in plan order. llama.cpp cuts those
    `-ngl` positions, the output head's included, by the split's running shares (layer j of them goes to the first
    device whose running share exceeds j / ngl), so the shares are each worker's block count, the output head
    counted on the last worker, as whole numbers: the boundaries then fall exactly after each worker's last block
    (fractions of the blocks alone would shift every boundary, and leave the last worker of a three-way split only
    the head, which `-ot` keeps on the host).
    """
    host_layers = plan_.shards[0].layer_count
    worker_shards = plan_.shards[1:]
    offloaded = n_layers - host_layers
    shares = [s.layer_count for s in worker_shards]
    shares[-1] += 1  # the output head's position
    split = ",".join(str(share) for share in shares)
    return ("--rpc", ",".join(f"127.0.0.1:{p}" for p in ports), "-ngl", str(offloaded + 1),
            # Anchored: llama.cpp matches -ot patterns anywhere in a name, and `output\.weight` alone would also pin
            # every `blk.N.attn_output.weight` to the host.
            "--tensor-split", split, "-ot", r"^token_embd\.weight$=CPU,^output\.weight$=CPU,^output_norm\.weight$=CPU")


def model_facts(spec: ModelSpec, n_layers: int, content_id: ContentId | None) -> ModelFacts:
    """The planner's facts for `spec` (`n_layers` from its GGUF header)."""
    layout = spec.layout
    moe = layout is not None and layout.is_moe and len(layout.layer_bytes) == n_layers
    # A MoE model is planned by its blocks' real bytes (mostly experts), the embeddings and head on the host.
    return ModelFacts(spec.id, max(1, spec.size_bytes // (1024 * 1024)), n_layers, content_id,
                      layer_bytes=layout.layer_bytes if moe and layout else (),
                      host_bytes=layout.host_bytes if moe and layout else 0)


async def open_bridge_ports(nursery: trio.Nursery, bridge: RpcTunnelClient, plan_: Plan, model_id: str) -> list[int]:
    """One local loopback port per worker of `plan_`, in shard order, each leading to that worker's ggml-rpc-server
    (step 2), served in `nursery` until it is cancelled: the ports for `pipeline_args`. Shared by the split host
    and the split calibration (app/split_calibration.py), which runs llama-imatrix where llama-server would run."""
    # The hello names the file, not just the name: the worker's log says which weights the split is for.
    label = plan_.content_id.text if plan_.content_id is not None else model_id
    return [await nursery.start(partial(bridge.serve_port, PeerID.from_base58(worker), model=label, threads=1))
            for worker in plan_.workers]


class SplitHost:
    """Keeps one model running as a pipeline over the mesh, re-planning when its workers change."""

    def __init__(self, spec: ModelSpec, fleet: ServerFleet, view: MeshView, bridge: RpcTunnelClient,
                 rtt_ms: dict[str, float], *, force: bool = False, force_workers: int | None = None,
                 announce: Callable[[], None] = lambda: None) -> None:
        self.spec = spec
        self.fleet = fleet
        self.view = view
        self.bridge = bridge
        self.rtt_ms = rtt_ms
        self.force = force
        self.force_workers = force_workers
        self.announce = announce
        self.n_layers = read_gguf_header(spec.path).block_count or 0
        self.plan: Plan | None = None
        self.last_error: str | None = None
        #: While the members holding the file fall short: the peers asked to fetch it (rule 6), gossiped.
        self.recruiting: Recruit | None = None
        #: Peers that offer this model's name with another file (peer id -> its content id), left out of plans.
        self.other_files: dict[str, ContentId] = {}

    def snapshot(self) -> SplitStatus:
        """For /api/status: the plan in force (if any) and why there is none."""
        return SplitStatus(
            model=self.spec.id,
            content_id=None if self.plan is None or self.plan.content_id is None else self.plan.content_id.text,
            other_files={peer: cid.text for peer, cid in sorted(self.other_files.items())},
            plan=None if self.plan is None else tuple(self.plan.shards), last_error=self.last_error,
            bytes_to_workers=self.bridge.bytes_to_rpc, bytes_from_workers=self.bridge.bytes_from_rpc,
        )

    def facts(self, content_id: ContentId | None) -> ModelFacts:
        return model_facts(self.spec, self.n_layers, content_id)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            current = self._plan_now()
            if current is None:
                await trio.sleep(PLAN_RETRY_S)
                continue
            if current.host != self.view.self_id:
                # Another node should host it (it fits there, or it has the most capacity of the split): that node
                # plans the same way for itself; requests here are routed to it through the mesh.
                self.last_error = f"the plan puts the host on {current.host}: routing there"
                await trio.sleep(PLAN_RETRY_S)
                continue
            await self._serve(current)

    def _plan_now(self) -> Plan | None:
        local, others = peer_facts(self.view, self.spec.id, self.rtt_ms)
        if local.content_id is None:
            # Workers are matched by file, and ours is still being hashed (a big file takes a while, once).
            self.last_error = f"hashing {self.spec.path.name} before planning: peers are matched by file content"
            return None
        self._note_other_files(local.content_id, others)
        facts = self.facts(local.content_id)
        try:
            found = plan(facts, local, others, force_split=self.force,
                         force_workers=self.force_workers if self.force else None)
        except PlanError as exc:
            if exc.message != self.last_error:
                log.info("cannot split %s yet: %s", self.spec.id, exc.message)
            self.last_error = exc.message
            self._recruit(None if self.force else recruits(facts, local, others), local.content_id)
            return None
        self._recruit(None, local.content_id)
        return found

    def _recruit(self, peers: list[str] | None, content_id: ContentId) -> None:
        """Ask `peers` (rule 6) to fetch the file, or stop asking (None or []); gossiped at once when it changes."""
        wanted = Recruit(content_id, tuple(peers)) if peers else None
        if wanted == self.recruiting:
            return
        if wanted is not None:
            log.info("asking %d peer(s) to fetch %s so that it can be split: %s", len(wanted.peers), self.spec.id,
                     ", ".join(p[-8:] for p in wanted.peers))
        self.recruiting = wanted
        self.announce()

    def _note_other_files(self, ours: ContentId, others: list[PeerFacts]) -> None:
        """Say once per peer and file why a peer that offers this model's name is not used."""
        now = {p.peer_id: p.content_id for p in others
               if p.has_model and p.content_id is not None and p.content_id != ours}
        for peer_id, theirs in now.items():
            if self.other_files.get(peer_id) != theirs:
                log.warning("not splitting %s over %s: it offers another file under that name (%s; ours is %s)",
                            self.spec.id, peer_id, theirs.short, ours.short)
        self.other_files = now

    async def _serve(self, current: Plan) -> None:
        """Run the plan (a solo plan is just llama-server) until a worker is lost, then stop it cleanly."""
        self.plan, self.last_error = current, None
        log.info("splitting %s: %s", self.spec.id,
                 ", ".join(f"{s.peer_id[-8:]} layers {s.first_layer}-{s.last_layer}" for s in current.shards))
        async with trio.open_nursery() as nursery:
            ports = await open_bridge_ports(nursery, self.bridge, current, self.spec.id)
            placement = pipeline_args(current, ports, self.n_layers) if current.workers else ()
            server_spec = dataclasses.replace(
                self.spec, extra_server_args=(*self.spec.extra_server_args, *placement))
            await self.fleet.start(server_spec)
            self.announce()
            try:
                # Polled: the view is plain data fed by gossip, it signals nothing.
                while True:
                    peers_now = {p.peer_id: p for p in peer_facts(self.view, self.spec.id, self.rtt_ms)[1]}
                    if replan_needed(current, peers_now):
                        break
                    await trio.sleep(REPLAN_CHECK_S)
                log.warning("a worker of %s left: stopping the split to plan again", self.spec.id)
            finally:
                self.fleet.stop(self.spec.id)
                self.plan = None
                self.announce()
                nursery.cancel_scope.cancel()


class PipelineWorker:
    """Be a pipeline worker for members: this node's ggml-rpc-server starts on the first split that needs it, and
    loads weights from its own copies of the models it offers (`gguf_paths`: no weights cross the network)."""

    def __init__(self, binaries: LlamaBinaries, overlay: Overlay, *, is_member: Callable[[PeerID], bool],
                 gguf_paths: Callable[[], Iterable[Path]], threads: int | None, log_dir: Path) -> None:
        # A file offered after the RPC server started (a recruited worker's fetch) restarts it at the next
        # connection that finds none open (inference/rpc_server.py), so its weights are read from disk too.
        self.rpc = OnDemandRpcServer(RpcServer(binaries, log_dir=log_dir, threads=threads, gguf_paths=gguf_paths),
                                     busy=lambda: self.bridge.active > 0)
        self.bridge = RpcTunnelServer(overlay, is_member=is_member, rpc_port=self.rpc.port)

    def snapshot(self) -> RpcWorkerStatus:
        server = self.rpc.server
        return RpcWorkerStatus(pid=server.pid, port=server.port, state=server.state.value,
                               connections=self.bridge.connections, bytes_to_rpc=self.bridge.bytes_to_rpc,
                               bytes_from_rpc=self.bridge.bytes_from_rpc)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.rpc.run)
            self.bridge.install()
            task_status.started()
