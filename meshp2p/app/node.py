"""A node: the llama.cpp supervisors and the HTTP apps under one trio nursery.

`Node.run` starts every service with `nursery.start`, so readiness is explicit, and everything it started is
stopped (children reaped, ports closed) when it returns, however it returns.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from meshp2p import __version__
from meshp2p.api.console_app import create_console_app
from meshp2p.api.errors import render as render_error
from meshp2p.api.model_ids import Router
from meshp2p.api.openai_app import create_openai_app
from meshp2p.api.serve import serve_app
from meshp2p.app.blackboard_service import BlackboardService, store_path
from meshp2p.app.config import BlackboardConfig
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.app.pipeline import SplitHost
from meshp2p.backends.http11 import UpstreamPool
from meshp2p.backends.local import tunnel_handler
from meshp2p.backends.peer import OverlayGateway
from meshp2p.blackboard.store import BlackboardStore
from meshp2p.home import logs_dir, meshp2p_home, runtime_file
from meshp2p.hosts import ALL_HOSTS, LOOPBACK_HOST
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.content_id import ModelFileIds, files_to_gossip
from meshp2p.inference.fleet import ServerFleet
from meshp2p.inference.hardware import Hardware, detect_hardware
from meshp2p.inference.llama_server import LOAD_TIMEOUT_S, BackendState, ServerOptions
from meshp2p.inference.models import ModelSpec
from meshp2p.inference.rpc_server import OnDemandRpcServer, RpcServer
from meshp2p.mesh.demand import DemandCounter
from meshp2p.mesh.election import NeedTracker, plan_promotions, snapshot_from_view
from meshp2p.mesh.planner import FIT_HEADROOM
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.p2p.rpc_tunnel import RpcTunnelClient, RpcTunnelServer
from meshp2p.p2p.tunnel import TunnelClient, TunnelServer
from meshp2p.wire.gossip import StatusBody
from meshp2p.wire.identity import Identity
from meshp2p.wire.model_id import ContentId

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) ships stubs that shadow trio's own types; they name it here.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

DEFAULT_API_PORT = 9337
DEFAULT_CONSOLE_PORT = 3131
PROMOTE_CHECK_S = 1.0


@dataclass(frozen=True)
class MeshConfig:
    """Everything about joining the overlay; a node without one (`--solo`) never touches the network."""

    identity: Identity
    overlay: OverlayConfig
    settings: MeshSettings
    #: Share the GPU's name in status gossip (`--enumerate-host`).
    enumerate_host: bool = False


@dataclass(frozen=True)
class NodeConfig:
    models: tuple[ModelSpec, ...]
    #: None for API-only client nodes, which run no llama.cpp.
    binaries: LlamaBinaries | None
    server_options: ServerOptions
    host: str = LOOPBACK_HOST
    api_port: int = DEFAULT_API_PORT
    #: None: no console API.
    console_port: int | None = DEFAULT_CONSOLE_PORT
    #: What this node may use of its GPU; None: all of it.
    max_vram_gb: float | None = None
    mesh: MeshConfig | None = None
    #: Start no model: `models` are only offered to the mesh, loaded when it needs them (promotion).
    standby: bool = False
    #: Serve `models` split by layers over nearby peers with the same file, even when they fit here (--split).
    split: bool = False
    #: How many workers a forced split uses (None: every eligible peer).
    split_workers: int | None = None
    #: Blackboard policy and scrubbing, from `$MESHP2P_HOME/config.toml`.
    blackboard: BlackboardConfig = field(default_factory=BlackboardConfig)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.hardware: Hardware = detect_hardware()
        self.upstream = UpstreamPool()
        self.fleet = ServerFleet(config.binaries, config.server_options, log_dir=logs_dir(),
                                 on_port_retired=partial(self.upstream.discard, LOOPBACK_HOST))
        #: Models this node can serve, loaded or not: what it offers the mesh for promotion.
        self.available = {m.id: m for m in config.models}
        #: Content ids of those models' files (hashed in the background): peers match files, not names.
        self.file_ids = ModelFileIds()
        #: Models served through the planner: forced (--split) or too big for this node alone (with a mesh).
        self.planned = [m for m in config.models
                        if not config.standby and config.mesh is not None and (config.split or not self.fits(m))]
        for model in config.models:
            if not config.standby and model not in self.planned:
                self.fleet.add(model)
        self.splits: list[SplitHost] = []
        self.rpc: OnDemandRpcServer | None = None
        self.rpc_bridge: RpcTunnelServer | None = None
        self.overlay: Overlay | None = None
        self.mesh: MeshService | None = None
        self.tunnel: TunnelClient | None = None
        self.blackboard: BlackboardService | None = None
        self.demand = DemandCounter()
        gateway: OverlayGateway | None = None
        if config.mesh is not None:
            self.overlay = Overlay(config.mesh.identity, config.mesh.overlay)
            self.mesh = MeshService(self.overlay, config.mesh.settings, self.local_status,
                                    lambda: self.demand.rates(time.time()))
            self.tunnel = TunnelClient(self.overlay)
            gateway = OverlayGateway(self.mesh.view, self.tunnel, self.demand, self.mesh.wanted_models,
                                     self.mesh.membership)
            settings = config.mesh.settings
            self.blackboard = BlackboardService(
                self.overlay, mesh_id=settings.mesh_id, secret=settings.secret,
                store=BlackboardStore(store_path(settings.mesh_id)), config=config.blackboard,
                sequence=self.mesh.sequence, is_member=self.mesh.is_member,
                peers=lambda: list(self.mesh.view.peers) if self.mesh is not None else [])
        self.router = Router(self.fleet.servers, self.upstream, gateway)
        self.started_at = time.time()

    @property
    def api_url(self) -> str:
        return f"http://{_display_host(self.config.host)}:{self.config.api_port}/v1"

    @property
    def console_url(self) -> str | None:
        port = self.config.console_port
        return None if port is None else f"http://{_display_host(self.config.host)}:{port}"

    def status(self) -> dict[str, Any]:
        """The node as plain JSON data: what `/api/status` returns."""
        return {
            "node": {
                "version": __version__,
                "pid": os.getpid(),
                "started_at": self.started_at,
                "api_url": self.api_url,
                "console_url": self.console_url,
                "home": str(meshp2p_home()),
                "llama_cpp": None if self.config.binaries is None else {
                    "server": str(self.config.binaries.server), "source": self.config.binaries.source},
                "max_vram_gb": self.config.max_vram_gb,
                "role": self.role,
            },
            "mesh": None if self.mesh is None else self.mesh.snapshot(),
            "blackboard": None if self.blackboard is None else self.blackboard.snapshot(),
            "splits": [split.snapshot() for split in self.splits],
            "rpc_worker": None if self.rpc is None or self.rpc_bridge is None else {
                "pid": self.rpc.server.pid, "port": self.rpc.server.port, "state": self.rpc.server.state.value,
                "connections": self.rpc_bridge.connections, "bytes_to_rpc": self.rpc_bridge.bytes_to_rpc,
                "bytes_from_rpc": self.rpc_bridge.bytes_from_rpc},
            "models": [
                {
                    "id": s.model.id,
                    "state": s.state.value,
                    "local": True,
                    "path": str(s.model.path),
                    "size_bytes": s.model.size_bytes,
                    "content_id": _text_or_none(self.file_ids.ids.get(s.model.id)),
                    "architecture": s.model.architecture,
                    "embeddings": s.model.embeddings,
                    "pid": s.pid,
                    "port": s.port,
                    "restarts": s.restarts,
                    "requests": self.router.served[s.model.id],
                    "load_progress": round(s.load_progress, 3),
                    "last_error": s.last_error,
                    "log": str(s.log_path),
                    "speculation": s.speculation_json(),
                }
                for s in self.router.servers
            ],
        }

    async def drop_model(self, model_id: str) -> bool:
        """Stop serving a model here, stop offering it for promotion, and tell the mesh at once (`meshp2p drop`)."""
        offered = self.available.pop(model_id, None)
        server = self.fleet.get(model_id)
        if server is None or not self.fleet.stop(model_id):
            return offered is not None
        if server.port is not None:
            await self.upstream.discard(LOOPBACK_HOST, server.port)
        if self.mesh is not None:
            self.mesh.announce_now()
        return True

    @property
    def role(self) -> str:
        if self.config.binaries is None:
            return "client"
        return "host" if self.router.servers else "standby"

    async def _promote_when_needed(self, mesh: MeshService) -> None:
        """Run the election (mesh/election.py) on the gossiped view; start serving what it hands this node.

        Every node runs the same rules on nearly the same view, so they agree on who promotes without voting.
        """
        tracker = NeedTracker()
        sizes = {m.id: m.size_bytes // (1024 * 1024) for m in self.available.values()}
        while True:
            await trio.sleep(PROMOTE_CHECK_S)
            now = time.time()
            snapshot = snapshot_from_view(mesh.view)
            demand = mesh.demand.total(now)
            tracker.observe(snapshot, demand, now, served_at=mesh.view.served_at)
            promotion = plan_promotions(snapshot, demand, self_id=mesh.view.self_id, now=now,
                                        recently_served=tracker.last_served, unserved_since=tracker.need_since,
                                        model_sizes_mb=sizes)
            spec = self.available.get(promotion.model_id) if promotion is not None else None
            if promotion is None or spec is None or self.fleet.get(spec.id) is not None:
                continue
            log.info("promoting: serving %s (%s)", spec.id, promotion.reason)
            server = await self.fleet.start(spec)
            mesh.announce_now()  # "loading": nobody else should promote for it now
            with trio.move_on_after(LOAD_TIMEOUT_S):
                await server.wait_state(BackendState.READY, BackendState.STOPPED)
            mesh.announce_now()  # "loaded": route to us without waiting for the next heartbeat

    def offered_memory_mb(self) -> tuple[int, int]:
        """(RAM, VRAM) this node offers for models: `--max-vram` caps the VRAM, or the RAM on a node without a
        GPU (where RAM is what holds the models)."""
        hw = self.hardware
        hw_cap = self.config.max_vram_gb
        cap = None if hw_cap is None else int(hw_cap * 1024)
        if cap is None:
            return hw.ram_mb, hw.vram_mb
        return (hw.ram_mb, min(hw.vram_mb, cap)) if hw.vram_mb else (min(hw.ram_mb, cap), 0)

    def fits(self, spec: ModelSpec) -> bool:
        """Can this node serve the model alone (the planner's rule 1: capacity >= 1.1 x size)?"""
        ram_mb, vram_mb = self.offered_memory_mb()
        return (vram_mb or ram_mb) * 1024 * 1024 >= FIT_HEADROOM * spec.size_bytes

    def local_status(self) -> StatusBody:
        """What this node gossips about itself every few seconds."""
        mesh = self.config.mesh
        ram_mb, vram_mb = self.offered_memory_mb()
        return StatusBody(
            role=self.role, ram_mb=ram_mb, vram_mb=vram_mb,
            gpu=self.hardware.gpu_name if mesh is not None and mesh.enumerate_host else None,
            loaded=tuple(s.model.id for s in self.router.servers if s.is_ready),
            loading=tuple(s.model.id for s in self.router.servers if not s.is_ready),
            available=tuple(self.available)[:64],
            load=float(self.router.in_flight), api_port=self.config.api_port, version=__version__,
            region=None if mesh is None else mesh.settings.region,
            rtt_ms=dict(sorted(self.mesh.rtt_ms.items(), key=lambda kv: kv[1])[:64]) if self.mesh else {},
            addrs=tuple(self.overlay.addrs()[:16]) if self.overlay is not None else (),
            files=files_to_gossip(self.file_ids.ids, tuple(self.available)[:64]),
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Started means: the API listens, every llama-server process is spawned and the
        node has joined (or created) its mesh."""
        try:
            await self._run(task_status)
        finally:
            if self.blackboard is not None:
                self.blackboard.store.close()  # after every task that writes to it has ended

    async def _run(self, task_status: TaskStatus[None]) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:
            await nursery.start(self.file_ids.run, list(self.available.values()),
                                lambda: self.mesh.announce_now() if self.mesh is not None else None)
            await nursery.start(self.fleet.run)
            if self.overlay is not None and self.mesh is not None:
                await nursery.start(self.overlay.run)
                self._serve_tunnel(self.overlay, self.mesh)
                await self._serve_rpc(nursery, self.overlay, self.mesh)
                await nursery.start(self.mesh.run)
                if self.blackboard is not None:
                    await nursery.start(self.blackboard.run)
                if self.planned:
                    bridge = RpcTunnelClient(self.overlay, self.mesh.membership)
                    for spec in self.planned:
                        split = SplitHost(spec, self.fleet, self.mesh.view, bridge, self.mesh.rtt_ms,
                                          force=cfg.split, force_workers=cfg.split_workers,
                                          announce=self.mesh.announce_now)
                        self.splits.append(split)
                        await nursery.start(split.run)
                if self.config.binaries is not None:
                    nursery.start_soon(self._promote_when_needed, self.mesh)
            openai_app = create_openai_app(self.router)
            await nursery.start(partial(serve_app, openai_app, cfg.host, cfg.api_port, flag="--port"))
            if cfg.console_port is not None:
                console_app = create_console_app(self.status, self.drop_model, self.blackboard)
                await nursery.start(
                    partial(serve_app, console_app, cfg.host, cfg.console_port, flag="--console"))
            runtime = _write_runtime_file(self)
            log.info("API listening on %s", self.api_url)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                runtime.unlink(missing_ok=True)
                await self.upstream.aclose()
                if self.tunnel is not None:
                    await self.tunnel.aclose()

    async def _serve_rpc(self, nursery: trio.Nursery, overlay: Overlay, mesh: MeshService) -> None:
        """Be a pipeline worker for members: our ggml-rpc-server starts on the first split that needs it."""
        binaries = self.config.binaries
        if binaries is None or binaries.rpc_server is None:
            return
        # Workers load weights from their own copies of the models they offer (no weights cross the network).
        self.rpc = OnDemandRpcServer(RpcServer(binaries, log_dir=logs_dir(),
                                               threads=self.config.server_options.threads,
                                               gguf_paths=lambda: [m.path for m in self.available.values()]))
        await nursery.start(self.rpc.run)
        self.rpc_bridge = RpcTunnelServer(overlay, is_member=mesh.is_member, rpc_port=self.rpc.port)
        self.rpc_bridge.install()

    def _serve_tunnel(self, overlay: Overlay, mesh: MeshService) -> None:
        """Answer other members' requests for models served here (the other end of their routing)."""

        handler = tunnel_handler(self.fleet.servers, self.upstream, started=self.router.local_request_started,
                                 done=self.router.request_done, render_error=render_error)
        TunnelServer(overlay, is_member=mesh.is_member, handler=handler).install()


def _write_runtime_file(node: Node) -> Path:
    """Tell other `meshp2p` commands with the same MESHP2P_HOME where this node listens."""
    path = runtime_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "api_url": node.api_url, "console_url": node.console_url,
            "p2p_addrs": node.overlay.addrs() if node.overlay is not None else []}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path


def _text_or_none(cid: ContentId | None) -> str | None:
    return None if cid is None else cid.text


def _display_host(host: str) -> str:
    """The address a local client should use: 0.0.0.0 listens everywhere, but clients connect to loopback."""
    if host == ALL_HOSTS:
        return LOOPBACK_HOST
    return f"[{host}]" if ":" in host else host
