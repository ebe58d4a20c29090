"""This node's own facts, as the mesh hears them: the models it offers, its memory, its role and its status.

The mesh service asks `LocalStatus` and `LocalDemand` for them each time it gossips (app/mesh_gossip.py's
StatusSource and DemandSource); the RTTs in the status are the mesh service's own (app/mesh_rtt.py). Nothing here
reads the mesh, so the node builds these before the mesh service and hands them in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from meshp2p import __version__
from meshp2p.api.model_ids import RequestLoad
from meshp2p.backends.http11 import UpstreamPool
from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.content_id import ModelFileIds, files_to_gossip
from meshp2p.inference.fleet import ServerFleet
from meshp2p.inference.hardware import Hardware
from meshp2p.inference.llama_server import LlamaServer
from meshp2p.inference.models import ModelSpec
from meshp2p.mesh.demand import DemandCounter
from meshp2p.mesh.planner import FIT_HEADROOM
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.status import MAX_LIST_ITEMS, MAX_RECRUITS, MAX_STATUS_ADDRS, Recruit, Role, ShardOffer, StatusBody


def offered_memory_mb(hardware: Hardware, max_vram_gb: float | None) -> tuple[int, int]:
    """(RAM, VRAM) this node offers for models: `--max-vram` caps the VRAM, or the RAM on a node without a GPU
    (where RAM is what holds the models)."""
    cap = None if max_vram_gb is None else int(max_vram_gb * 1024)
    if cap is None:
        return hardware.ram_mb, hardware.vram_mb
    if hardware.vram_mb:
        return hardware.ram_mb, min(hardware.vram_mb, cap)
    return min(hardware.ram_mb, cap), 0


def fits_alone(spec: ModelSpec, memory_mb: tuple[int, int]) -> bool:
    """Can this node serve the model alone (the planner's rule 1: capacity >= 1.1 x size)?"""
    ram_mb, vram_mb = memory_mb
    return (vram_mb or ram_mb) * 1024 * 1024 >= FIT_HEADROOM * spec.size_bytes


@dataclass(frozen=True)
class ServingPlan:
    """How this node serves the models it was given: each model is in one list, or none (standby)."""

    #: Served alone, here.
    solo: list[ModelSpec] = field(default_factory=list)
    #: Served through the planner (app/pipeline.py): split by layers when too big for this node.
    planned: list[ModelSpec] = field(default_factory=list)
    #: Served as this node's shard of a `--moe shard` group (app/moe_shards.py).
    sharded: list[ModelSpec] = field(default_factory=list)


def serving_plan(models: Iterable[ModelSpec], *, standby: bool, meshed: bool, force_split: bool,
                 memory_mb: tuple[int, int], moe_shard: bool = False) -> ServingPlan:
    """The one decision of how a model is served, for the models given at start and for those obtained later
    (fetched from members or downloaded: app/node.py), so a model is served the same way however it arrived.

    A standby node starts none (it only offers them). With a mesh and `--moe shard` (`moe_shard`), a
    Mixture-of-Experts model joins its shard group, whatever its size (a member that holds every expert serves the
    file itself). Otherwise, with a mesh, a model goes to the planner when the split is forced (`--split`) or it is
    too big for this node alone; without one, every model is served here.
    """
    plan = ServingPlan()
    if standby:
        return plan
    for model in models:
        if meshed and moe_shard and model.layout is not None and model.layout.is_moe:
            plan.sharded.append(model)
        elif meshed and (force_split or not fits_alone(model, memory_mb)):
            plan.planned.append(model)
        else:
            plan.solo.append(model)
    return plan


def node_role(runs_llama: bool, servers: Mapping[str, LlamaServer]) -> Role:
    """A node without llama.cpp is a client; one with it is a host while it serves something, else standby."""
    if not runs_llama:
        return Role.CLIENT
    return Role.HOST if servers else Role.STANDBY


class OfferedModels:
    """Models this node can serve, loaded or not: what it offers the mesh (promotion loads one of them)."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs = {m.id: m for m in specs}

    def get(self, model_id: str) -> ModelSpec | None:
        return self._specs.get(model_id)

    def ids(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def paths(self) -> list[Path]:
        """The GGUF files behind the offer (every part of a split GGUF), which a pipeline worker loads its share of
        weights from."""
        return [path for m in self._specs.values() for path in (m.files or (m.path,))]

    def add(self, spec: ModelSpec) -> None:
        """Offer one more model (one fetched or downloaded after the node started)."""
        self._specs[spec.id] = spec

    def withdraw(self, model_id: str) -> bool:
        """Stop offering the model; False if it was not offered."""
        return self._specs.pop(model_id, None) is not None


def offered_parts(offered: OfferedModels, file_ids: ModelFileIds,
                  content_id: ContentId) -> tuple[ContentId, ...] | None:
    """The content ids of every file of the model this node offers whose first file is `content_id` (one for a
    whole file), for members fetching it; None when no offered model starts with that file, or a split model's
    parts are not all hashed."""
    for model_id, known in file_ids.ids.items():
        spec = offered.get(model_id)
        if known != content_id or spec is None:
            continue
        if len(spec.files) <= 1:
            return (known,)
        parts = file_ids.parts.get(model_id)
        if parts is not None and len(parts) == len(spec.files):
            return parts
    return None


def offered_file(offered: OfferedModels, file_ids: ModelFileIds, content_id: ContentId) -> Path | None:
    """The file this node offers under `content_id` (for members fetching it: a whole model file or one part of a
    split one), if it is still that file on disk."""
    for model_id, known in file_ids.ids.items():
        spec = offered.get(model_id)
        if spec is None:
            continue
        files = spec.files if len(spec.files) > 1 else (spec.path,)
        for path, cid in zip(files, file_ids.parts.get(model_id, (known,)), strict=False):
            if cid != content_id:
                continue
            try:
                return path if path.stat().st_size == content_id.size else None
            except OSError:
                return None
    return None


class ModelDropper:
    """`meshp2p drop`: stop serving a model here, stop offering it, and tell the mesh at once."""

    def __init__(self, offered: OfferedModels, fleet: ServerFleet, upstream: UpstreamPool,
                 announce: Callable[[], None]) -> None:
        self.offered = offered
        self.fleet = fleet
        self.upstream = upstream
        self.announce = announce

    async def drop(self, model_id: str) -> bool:
        """True if the model was served or offered here."""
        offered = self.offered.withdraw(model_id)
        server = self.fleet.get(model_id)
        if server is None or not self.fleet.stop(model_id):
            return offered
        if server.port is not None:
            await self.upstream.discard(LOOPBACK_HOST, server.port)
        self.announce()
        return True


class LocalStatus:
    """What this node says about itself in its status, built afresh on each call (rtt_ms is left empty)."""

    def __init__(self, *, runs_llama: bool, memory_mb: tuple[int, int], gpu: str | None, api_port: int,
                 region: str | None, servers: Mapping[str, LlamaServer], load: RequestLoad,
                 offered: OfferedModels, file_ids: ModelFileIds, overlay: Overlay,
                 recruit: Callable[[], dict[str, Recruit]] = dict,
                 shard_offers: Mapping[ContentId, ShardOffer] | None = None) -> None:
        """`gpu`: the GPU's name when the node shares it (`--enumerate-host`); `servers`: the fleet's, live;
        `recruit`: the calls of the splits this node hosts for workers (app/pipeline.py, planner rule 6)."""
        self.runs_llama = runs_llama
        self.memory_mb = memory_mb
        self.gpu = gpu
        self.api_port = api_port
        self.region = region
        self.servers = servers
        self.load = load
        self.offered = offered
        self.file_ids = file_ids
        self.overlay = overlay
        self.recruit = recruit
        #: This node's `--moe shard` group memberships (app/moe_shards.py fills it).
        self.shard_offers = shard_offers if shard_offers is not None else {}

    def __call__(self) -> StatusBody:
        ram_mb, vram_mb = self.memory_mb
        servers = list(self.servers.values())
        offered = self.offered.ids()[:MAX_LIST_ITEMS]
        return StatusBody(
            role=node_role(self.runs_llama, self.servers), ram_mb=ram_mb, vram_mb=vram_mb, gpu=self.gpu,
            loaded=tuple(s.model.id for s in servers if s.is_ready),
            loading=tuple(s.model.id for s in servers if not s.is_ready),
            available=offered, load=float(self.load.in_flight), api_port=self.api_port, version=__version__,
            region=self.region, rtt_ms={}, addrs=tuple(self.overlay.addrs()[:MAX_STATUS_ADDRS]),
            files=files_to_gossip(self.file_ids.ids, offered),
            recruit=dict(list(self.recruit().items())[:MAX_RECRUITS]), moe_shards=dict(self.shard_offers),
        )


class LocalDemand:
    """This node's own request rates per model, from the API's counter."""

    def __init__(self, counter: DemandCounter, clock: Callable[[], float] = time.time) -> None:
        self.counter = counter
        self.clock = clock

    def __call__(self) -> dict[str, float]:
        return self.counter.rates(self.clock())
