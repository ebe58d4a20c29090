"""A node: the llama.cpp supervisors, the HTTP apps and, with a mesh, its mesh services, under one trio nursery.

`Node` builds its services in the order they need each other, and `Node.run` starts them in that order with
`nursery.start`, so readiness is explicit; everything it started is stopped (children reaped, ports closed) when it
returns, however it returns. It decides nothing itself: the rules live in the services and in mesh/. (~500 lines:
the config, the mesh parts and the status report are the three things every service is wired through; apart,
the build order would have to be read across files.)

Build order: the fleet, the request counters and the models offered (app/local.py); with a mesh, `MeshParts`:
the overlay, this node's status (app/local.py), the mesh service (app/mesh_service.py), the tunnel, the gateway
the API routes through, the blackboard, the pipeline worker and promotion (app/promotion.py); then the Router over
the fleet and the gateway, the access service (API keys and rate limits, app/access.py: its gate wraps the API
app, never the tunnel's handler) and the `StatusReport` over all of them (its documents are in app/status.py), with
the hardware sampler it shows and the console's `/metrics` page over both (app/metrics.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from meshp2p import __version__
from meshp2p.access.gate import AddressLimits
from meshp2p.api.access import guard_api, guard_console_writes
from meshp2p.api.console_app import create_console_app
from meshp2p.api.errors import render as render_error
from meshp2p.api.metrics import ApiMetrics
from meshp2p.api.model_ids import RequestLoad, Router
from meshp2p.api.openai_app import create_openai_app
from meshp2p.api.origins import allow_console_origins, console_origins, refuse_foreign_writes
from meshp2p.api.serve import serve_app
from meshp2p.app.access import AccessService
from meshp2p.app.blackboard_service import BlackboardService, store_path
from meshp2p.app.config import BlackboardConfig
from meshp2p.app.console_events import ConsoleEvents
from meshp2p.app.local import (
    LocalDemand,
    LocalStatus,
    ModelDropper,
    OfferedModels,
    fits_alone,
    node_role,
    offered_file,
    offered_memory_mb,
    offered_parts,
    serving_plan,
)
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.app.metrics import NodeMetrics, Transfers, metered_tunnel_handler
from meshp2p.app.model_fetcher import DEFAULT_MIN_FETCH_MBPS, MeshModelFetcher
from meshp2p.app.moe_shards import (
    MoeShardConfig,
    ShardGroupMember,
    measured_usage,
    shard_capacity_bytes,
)
from meshp2p.app.pipeline import PipelineWorker, SplitHost
from meshp2p.app.promotion import PromotionService
from meshp2p.app.recruitment import Recruitment
from meshp2p.app.split_calibration import SplitCalibration
from meshp2p.app.status import LlamaCppStatus, ModelStatus, NodeStatus, NodeSummary
from meshp2p.backends.http11 import UpstreamPool
from meshp2p.backends.local import tunnel_handler
from meshp2p.backends.peer import OverlayGateway
from meshp2p.blackboard.store import BlackboardStore
from meshp2p.errors import MeshP2PError
from meshp2p.home import logs_dir, meshp2p_home, runtime_file
from meshp2p.hosts import ALL_HOSTS, LOOPBACK_HOST
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.catalog import CatalogEntry
from meshp2p.inference.content_id import ModelFileIds
from meshp2p.inference.fleet import ServerFleet
from meshp2p.inference.hardware import Hardware, detect_hardware
from meshp2p.inference.hardware_usage import HardwareUsage, UsageSampler
from meshp2p.inference.hub import Hub
from meshp2p.inference.llama_server import LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec, spec_from_parts
from meshp2p.inference.pairing import SpeculationRules
from meshp2p.inference.progress import SILENT, ProgressSink
from meshp2p.inference.resolve import Resolver, resolve_model
from meshp2p.mesh.demand import DemandCounter
from meshp2p.p2p.model_fetch import ModelFileServer
from meshp2p.p2p.moe_usage import UsageServer, ask_usage
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.p2p.rpc_tunnel import RpcTunnelClient
from meshp2p.p2p.tunnel import TunnelClient, TunnelServer
from meshp2p.wire.console_events import boot_id
from meshp2p.wire.identity import Identity
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.status import ShardOffer

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) ships stubs that shadow trio's own types; they name it here.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

DEFAULT_API_PORT = 9337
DEFAULT_CONSOLE_PORT = 3131


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
    #: Catalog models asked for but not on disk: fetched from mesh members once the mesh is joined, else from the
    #: hub (app/model_fetcher.py), then served like the others.
    pending: tuple[CatalogEntry, ...] = ()
    #: Where fetches and downloads report progress (the terminal's bars under `meshp2p up`).
    progress: ProgressSink = SILENT
    #: Cap on what this node uploads to members fetching model files (`--max-upload-mbps`); None: no cap.
    max_upload_mbps: float | None = None
    #: A fetch from members slower than this (megabits per second) gives way to the hub; 0: never.
    min_fetch_mbps: float = DEFAULT_MIN_FETCH_MBPS
    #: Fetch the model files other members' splits ask this node to hold (`--no-split-fetch` turns it off).
    split_fetch: bool = True
    #: Rate limits per client address, for clients not on this machine (`--rate-limit`, `--max-concurrent`).
    address_limits: AddressLimits = field(default_factory=AddressLimits)
    #: `--moe shard`: MoE models are served as shards of a group (app/moe_shards.py); None: the layer split.
    moe_shard: MoeShardConfig | None = None
    #: `--spec ngram` / `--no-draft`, for the models this node gets after the start (pending ones, recruited ones):
    #: they speculate by the same rules as those given at the start (inference/pairing.py).
    speculation: SpeculationRules = field(default_factory=SpeculationRules)


@dataclass(frozen=True)
class LocalParts:
    """What a node has with or without a mesh, and what its mesh parts read."""

    config: NodeConfig
    hardware: Hardware
    fleet: ServerFleet
    upstream: UpstreamPool
    load: RequestLoad
    offered: OfferedModels
    file_ids: ModelFileIds
    demand: DemandCounter
    #: What the API and the tunnel count for `/metrics` (api/metrics.py), and the model bytes moved.
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    transfers: Transfers = field(default_factory=Transfers)


class MeshParts:
    """Everything a node runs in its mesh, built in order; a `--solo` node has none."""

    def __init__(self, mesh: MeshConfig, local: LocalParts, planned: list[ModelSpec],
                 sharded: list[ModelSpec] | None = None, *, on_change: Callable[[], None]) -> None:
        """`on_change`: told when a member's status or demand arrives (the console's event source)."""
        cfg, settings = local.config, mesh.settings
        self.overlay = Overlay(mesh.identity, mesh.overlay)
        self.shard_offers: dict[ContentId, ShardOffer] = {}
        status = LocalStatus(
            runs_llama=cfg.binaries is not None, memory_mb=offered_memory_mb(local.hardware, cfg.max_vram_gb),
            gpu=local.hardware.gpu_name if mesh.enumerate_host else None, api_port=cfg.api_port,
            region=settings.region, servers=local.fleet.servers, load=local.load, offered=local.offered,
            file_ids=local.file_ids, overlay=self.overlay, shard_offers=self.shard_offers,
            recruit=lambda: {s.spec.id: s.recruiting for s in self.splits if s.recruiting is not None})
        self.service = MeshService(self.overlay, settings, status, LocalDemand(local.demand), on_change=on_change)
        self.tunnel = TunnelClient(self.overlay)
        self.gateway = OverlayGateway(self.service.view, self.tunnel, local.demand, self.service.wanted_models,
                                      self.service.membership)
        self.blackboard = BlackboardService(
            self.overlay, mesh_id=settings.mesh_id, secret=settings.secret,
            store=BlackboardStore(store_path(settings.mesh_id)), config=cfg.blackboard,
            sequence=self.service.sequence, is_member=self.service.is_member, peers=self.service.view.peers.keys)
        binaries = cfg.binaries
        #: A pipeline worker for members: needs the rpc-server binary.
        self.worker = None if binaries is None or binaries.rpc_server is None else PipelineWorker(
            binaries, self.overlay, is_member=self.service.is_member, gguf_paths=local.offered.paths,
            threads=cfg.server_options.threads, log_dir=logs_dir())
        #: Promotion needs llama.cpp; a client never promotes.
        self.promotion = None if binaries is None else PromotionService(
            self.service.view, self.service.demand, self.service, local.offered, local.fleet)
        #: Model files for members that lack them (protocols/model-fetch.md), and the fetch of ours from them.
        self.file_server = ModelFileServer(
            self.overlay, is_member=self.service.is_member, files=partial(offered_file, local.offered, local.file_ids),
            max_upload_bytes_s=None if cfg.max_upload_mbps is None else cfg.max_upload_mbps * 1e6 / 8,
            yield_to=lambda: local.load.in_flight > 0, parts=partial(offered_parts, local.offered, local.file_ids))
        self.fetcher = MeshModelFetcher(
            self.overlay, lambda: self.service.view, progress=cfg.progress, on_bytes=local.transfers.from_peers,
            min_bytes_per_s=None if not cfg.min_fetch_mbps else cfg.min_fetch_mbps * 1e6 / 8,
            hub_usable=lambda: not Hub().is_offline(), on_hub_bytes=local.transfers.from_hub)
        #: Fetching the files other members' splits ask this node to hold (planner rule 6): workers only.
        self.recruitment = None if self.worker is None or not cfg.split_fetch else Recruitment(
            self.overlay, lambda: self.service.view, local.offered, local.file_ids, self.service.announce_now,
            pair=self.paired)
        self.local = local
        self.planned = planned
        #: The pipelines this node hosts, one per planned model (built when started: each reads its GGUF header).
        self.splits: list[SplitHost] = []
        #: `--moe shard` group memberships, one per MoE model (models obtained later add theirs).
        self.shards = [self._shard_member(spec) for spec in sharded or ()]
        #: Measured expert usage for members that could not measure it (protocols/moe-usage.md): every member
        #: answers, from its shard groups or the calibration cache of a file it offers.
        self.usage_server = UsageServer(self.overlay, is_member=self.service.is_member, lookup=partial(
            measured_usage, self.shards, partial(offered_file, local.offered, local.file_ids)))

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started means: the overlay listens, the tunnel (and worker) answer, and the mesh was joined or created."""
        local = self.local
        async with trio.open_nursery() as nursery:
            await nursery.start(self.overlay.run)
            # Answer other members' requests for models served here (the other end of their routing).
            handler = tunnel_handler(local.fleet.servers, local.upstream, started=local.load.started,
                                     done=local.load.done, render_error=render_error)
            handler = metered_tunnel_handler(handler, local.metrics, local.fleet.servers)
            TunnelServer(self.overlay, is_member=self.service.is_member, handler=handler).install()
            self.file_server.install()
            self.usage_server.install()
            if self.worker is not None:
                await nursery.start(self.worker.run)
            await nursery.start(self.service.run)
            await nursery.start(self.blackboard.run)
            for spec in self.planned:
                await self._host_split(nursery, spec)
            for member in self.shards:
                await nursery.start(member.run)
            if self.promotion is not None:
                await nursery.start(self.promotion.run)
            if self.recruitment is not None:
                await nursery.start(self.recruitment.run)
            if local.config.pending:
                nursery.start_soon(self._obtain_all, nursery, local.config.pending)
            task_status.started()

    def _shard_member(self, spec: ModelSpec) -> ShardGroupMember:
        """This node's membership of `spec`'s shard group (started by the caller)."""
        local, binaries = self.local, self.local.config.binaries
        shard_cfg = local.config.moe_shard or MoeShardConfig()
        imatrix = None if binaries is None else binaries.imatrix
        # A model too big for this node is calibrated over a layer split, as a split host would run it.
        split = None if imatrix is None else SplitCalibration(
            spec, self.service.view, RpcTunnelClient(self.overlay, self.service.membership), self.service.rtt_ms,
            imatrix=imatrix)
        return ShardGroupMember(
            spec, local.fleet, self.service.view, content_id=partial(local.file_ids.ids.get, spec.id),
            offers=self.shard_offers, imatrix=None if binaries is None else binaries.imatrix,
            capacity_bytes=shard_capacity_bytes(shard_cfg, self.service_memory()),
            min_fraction=shard_cfg.min_fraction, announce=self.service.announce_now,
            ask=partial(ask_usage, self.overlay), alone=fits_alone(spec, self.service_memory()), split=split)

    def paired(self, typed: str, spec: ModelSpec) -> ModelSpec:
        """A model got after the start, with the speculation the start's rules give it (blocking: GGUF headers)."""
        return self.local.config.speculation.apply(typed, spec, Resolver(allow_download=False))

    async def _host_split(self, nursery: trio.Nursery, spec: ModelSpec) -> None:
        cfg = self.local.config
        split = SplitHost(spec, self.local.fleet, self.service.view, RpcTunnelClient(self.overlay,
                                                                                     self.service.membership),
                          self.service.rtt_ms, force=cfg.split, force_workers=cfg.split_workers,
                          announce=self.service.announce_now)
        self.splits.append(split)
        await nursery.start(split.run)

    async def _obtain_all(self, nursery: trio.Nursery, entries: tuple[CatalogEntry, ...]) -> None:
        """One model at a time: they share the uplink and the disk, and the progress display shows one."""
        for entry in entries:
            await self._obtain(nursery, entry)

    async def _obtain(self, nursery: trio.Nursery, entry: CatalogEntry) -> None:
        """A pending catalog model: from members, else from the hub; then offered and served as a model given at
        start would be (the same `serving_plan`: alone, split, or as a shard of its `--moe shard` group)."""
        local = self.local
        fetched = await self.fetcher.fetch(entry)
        if fetched is not None:
            spec = spec_from_parts(fetched.paths, model_id=entry.name)
            if fetched.parts:
                local.file_ids.parts[entry.name] = fetched.parts
            local.file_ids.ids[entry.name] = fetched.content_id
        else:
            try:
                spec = await trio.to_thread.run_sync(partial(resolve_model, entry.name, progress=local.config.progress,
                                                             received=local.transfers.from_hub))
            except MeshP2PError as exc:
                log.error("%s cannot be served: no mesh member holds it and %s%s", entry.name, exc.message,
                          f" ({exc.hint})" if exc.hint else "")
                return
            nursery.start_soon(partial(local.file_ids.run, [spec], self.service.announce_now))
        spec = await trio.to_thread.run_sync(self.paired, entry.name, spec)
        local.offered.add(spec)
        plan = serving_plan([spec], standby=local.config.standby, meshed=True, force_split=local.config.split,
                            memory_mb=self.service_memory(), moe_shard=local.config.moe_shard is not None)
        for model in plan.solo:
            await local.fleet.start(model)
        for model in plan.planned:
            await self._host_split(nursery, model)
        for model in plan.sharded:
            member = self._shard_member(model)
            self.shards.append(member)  # the list the status report and the usage server read
            await nursery.start(member.run)
        self.service.announce_now()

    def service_memory(self) -> tuple[int, int]:
        return offered_memory_mb(self.local.hardware, self.local.config.max_vram_gb)


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        hardware = detect_hardware()
        upstream = UpstreamPool()
        fleet = ServerFleet(config.binaries, config.server_options, log_dir=logs_dir(),
                            on_port_retired=partial(upstream.discard, LOOPBACK_HOST))
        local = LocalParts(config, hardware, fleet, upstream, RequestLoad(), OfferedModels(config.models),
                           ModelFileIds(), DemandCounter())
        plan = serving_plan(config.models, standby=config.standby, meshed=config.mesh is not None,
                            force_split=config.split, memory_mb=offered_memory_mb(hardware, config.max_vram_gb),
                            moe_shard=config.moe_shard is not None)
        for model in plan.solo:
            fleet.add(model)
        self.local = local
        self.fleet = fleet
        self.upstream = upstream
        #: Content ids of the offered models' files (hashed in the background): peers match files, not names.
        self.file_ids = local.file_ids
        #: `/api/events` and `/api/logs` (app/console_events.py): a fresh boot id per run, as the spec says. The
        #: report it diffs is built below; members' status and demand arriving poke it.
        self.events = ConsoleEvents(lambda: self.report.to_json(), boot=boot_id(os.urandom(4)), servers=fleet.servers,
                                    sample=lambda: self.usage.read())
        self.mesh = None if config.mesh is None else MeshParts(config.mesh, local, plan.planned, plan.sharded,
                                                               on_change=self.events.poke)
        self.router = Router(fleet.servers, upstream, None if self.mesh is None else self.mesh.gateway, local.load)
        self.announce = _nothing if self.mesh is None else self.mesh.service.announce_now
        #: API keys, rate limits and key usage (app/access.py); the tunnel's requests never meet them.
        self.access = AccessService(config.address_limits)
        self.dropper = ModelDropper(local.offered, fleet, upstream, self.announce)
        #: How busy the machine is, sampled when status or metrics are read (inference/hardware_usage.py).
        self.usage = UsageSampler()
        self.report = StatusReport(local, self.mesh, started_at=time.time(), api_url=self.api_url,
                                   console_url=self.console_url, keys_on=self.access.keys_on,
                                   hardware=lambda: self.usage.latest)
        self.metrics = NodeMetrics(local.metrics, self.report.document, fleet.servers, self.usage, local.transfers,
                                   in_flight=lambda: local.load.in_flight, uploaded_bytes=self._uploaded_bytes)
        if self.mesh is not None:
            self.mesh.blackboard.listen(self.events.post_stored)

    def _uploaded_bytes(self) -> int:
        return 0 if self.mesh is None else self.mesh.file_server.stats.bytes_sent

    @property
    def api_url(self) -> str:
        return f"http://{_display_host(self.config.host)}:{self.config.api_port}/v1"

    @property
    def console_url(self) -> str | None:
        port = self.config.console_port
        return None if port is None else f"http://{_display_host(self.config.host)}:{port}"

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. Started means: the API listens, every llama-server process is spawned and the
        node has joined (or created) its mesh."""
        try:
            await self._run(task_status)
        finally:
            if self.mesh is not None:
                self.mesh.blackboard.store.close()  # after every task that writes to it has ended

    async def _run(self, task_status: TaskStatus[None]) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:
            if cfg.console_port is not None:
                await nursery.start(self.events.run)  # first: it keeps the start-up's log lines
            await nursery.start(self.file_ids.run, self.local.offered.specs(), self.announce)
            await nursery.start(self.fleet.run)
            if self.mesh is not None:
                await nursery.start(self.mesh.run)
            await nursery.start(self.access.run)
            openai_app = create_openai_app(self.router, self.local.metrics)
            guard_api(openai_app, self.access.gate, self.access.keys, self.access.usage,
                      on_denied=lambda d: self.local.metrics.refusal(d.status, d.code))
            if cfg.console_port is not None:  # the console's page may call the API (api/origins.py)
                allow_console_origins(openai_app, console_origins(cfg.host, cfg.console_port))
            await nursery.start(partial(serve_app, openai_app, cfg.host, cfg.api_port, flag="--port"))
            if cfg.console_port is not None:
                invite = None if self.mesh is None else partial(_private_invite, self.mesh.service)
                console_app = create_console_app(
                    self.report.to_json, self.dropper.drop, None if self.mesh is None else self.mesh.blackboard,
                    events=self.events, invite=invite, metrics=self.metrics.page, refresh=self.usage.read)
                refuse_foreign_writes(console_app, console_origins(cfg.host, cfg.console_port))
                guard_console_writes(console_app, self.access.keys, lambda: self.access.console_token)
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
                if self.mesh is not None:
                    await self.mesh.tunnel.aclose()



class StatusReport:
    """The node's status document, built from its parts on each call (from memory, on the event loop)."""

    def __init__(self, local: LocalParts, mesh: MeshParts | None, *, started_at: float, api_url: str,
                 console_url: str | None, keys_on: Callable[[], bool],
                 hardware: Callable[[], HardwareUsage | None] = lambda: None) -> None:
        self.keys_on = keys_on
        self.hardware = hardware
        self.local = local
        self.mesh = mesh
        self.started_at = started_at
        self.api_url = api_url
        self.console_url = console_url

    def document(self) -> NodeStatus:
        cfg, mesh, local = self.local.config, self.mesh, self.local
        return NodeStatus(
            node=NodeSummary(
                version=__version__, pid=os.getpid(), started_at=self.started_at, api_url=self.api_url,
                console_url=self.console_url, home=str(meshp2p_home()),
                llama_cpp=None if cfg.binaries is None else LlamaCppStatus(str(cfg.binaries.server),
                                                                           cfg.binaries.source),
                max_vram_gb=cfg.max_vram_gb, role=node_role(cfg.binaries is not None, local.fleet.servers),
                api_keys=self.keys_on()),
            mesh=None if mesh is None else mesh.service.snapshot(),
            blackboard=None if mesh is None else mesh.blackboard.snapshot(),
            splits=() if mesh is None else tuple(split.snapshot() for split in mesh.splits),
            rpc_worker=None if mesh is None or mesh.worker is None else mesh.worker.snapshot(),
            models=tuple(self._model(s) for s in list(local.fleet.servers.values())),
            hardware=self.hardware(),
            moe_shards=() if mesh is None else tuple(member.snapshot() for member in mesh.shards),
        )

    def to_json(self) -> dict[str, Any]:
        """What `/api/status` returns."""
        return self.document().to_json()

    def _model(self, s: LlamaServer) -> ModelStatus:
        cid = self.local.file_ids.ids.get(s.model.id)
        return ModelStatus(
            id=s.model.id, state=s.state.value, path=str(s.model.path), size_bytes=s.model.size_bytes,
            content_id=None if cid is None else cid.text, architecture=s.model.architecture,
            embeddings=s.model.embeddings, pid=s.pid, port=s.port, restarts=s.restarts,
            requests=self.local.load.served[s.model.id], load_progress=round(s.load_progress, 3),
            last_error=s.last_error, log=str(s.log_path), speculation=s.speculation_json(),
            moe=None if s.model.layout is None else s.model.layout.to_json())


def _private_invite(service: MeshService, ttl_s: int | None) -> str | None:
    """An invite token for the console's page; None on a named mesh, which is joined by its name."""
    return service.invite_token(ttl_s=ttl_s) if service.settings.private else None


def _nothing() -> None:
    """What a node outside any mesh announces to: nobody."""


def _write_runtime_file(node: Node) -> Path:
    """Tell other `meshp2p` commands with the same MESHP2P_HOME where this node listens."""
    path = runtime_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "api_url": node.api_url, "console_url": node.console_url,
            "p2p_addrs": node.mesh.overlay.addrs() if node.mesh is not None else []}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path


def _display_host(host: str) -> str:
    """The address a local client should use: 0.0.0.0 listens everywhere, but clients connect to loopback."""
    if host == ALL_HOSTS:
        return LOOPBACK_HOST
    return f"[{host}]" if ":" in host else host
