"""The documents `/api/status` serves (and `meshp2p status --json` prints): frozen dataclasses, one `to_json` each.

Each part is built by the service that owns its facts, on the event loop, reading memory only: `MeshService.snapshot`
(with `MeshStatus.peers_of` for the view), `BlackboardService.snapshot`, `SplitHost.snapshot` and the node's
`StatusReport`, which puts them together. `to_json` gives plain JSON data, keys in the order the API has always
written them: the console, the CLI and the MCP server read these keys, so a field is added, never renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshp2p.blackboard.limits import BlackboardLimits
from meshp2p.inference.hardware_usage import HardwareUsage
from meshp2p.mesh.planner import Shard
from meshp2p.mesh.view import MeshView
from meshp2p.wire.status import Role


@dataclass(frozen=True)
class LlamaCppStatus:
    """The llama.cpp build this node runs."""

    server: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "source": self.source}


@dataclass(frozen=True)
class NodeSummary:
    """The process: what it is, where it listens, what it may use."""

    version: str
    pid: int
    started_at: float
    api_url: str
    console_url: str | None
    home: str
    #: None on an API-only client, which runs no llama.cpp.
    llama_cpp: LlamaCppStatus | None
    max_vram_gb: float | None
    role: Role
    #: Whether the API asks for keys (a keys file exists).
    api_keys: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "pid": self.pid,
            "started_at": self.started_at,
            "api_url": self.api_url,
            "console_url": self.console_url,
            "home": self.home,
            "llama_cpp": None if self.llama_cpp is None else self.llama_cpp.to_json(),
            "max_vram_gb": self.max_vram_gb,
            "role": str(self.role),
            "api_keys": self.api_keys,
        }


@dataclass(frozen=True)
class PeerStatus:
    """One member of the view (this node included, `is_self`), as its last status said."""

    peer_id: str
    is_self: bool
    role: Role
    region: str | None
    ram_mb: int
    vram_mb: int
    gpu: str | None
    loaded: tuple[str, ...]
    available: tuple[str, ...]
    #: Model id -> content id text.
    files: Mapping[str, str]
    load: float
    version: str
    last_seen_s: float
    #: Our measured round trip to it, as our own status gossips it; None when unmeasured.
    rtt_ms: float | None
    #: Models it is loading now (starting, or promoted and not ready yet).
    loading: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "self": self.is_self,
            "role": str(self.role),
            "region": self.region,
            "ram_mb": self.ram_mb,
            "vram_mb": self.vram_mb,
            "gpu": self.gpu,
            "loaded": list(self.loaded),
            "available": list(self.available),
            "files": dict(self.files),
            "load": self.load,
            "version": self.version,
            "last_seen_s": self.last_seen_s,
            "rtt_ms": self.rtt_ms,
            "loading": list(self.loading),
        }


@dataclass(frozen=True)
class MeshStatus:
    """The mesh as this node sees it, and this node's place in it."""

    mesh_id: str
    nodes: int
    clients: int
    served: tuple[str, ...]
    capacity_mb: int
    peers: tuple[PeerStatus, ...]
    name: str | None
    private: bool
    listed: bool
    created: bool
    region: str | None
    max_clients: int | None
    peer_id: str
    addrs: tuple[str, ...]
    members: tuple[str, ...]
    #: Refusals counted per "where:reason" since the node started.
    rejected: Mapping[str, int]
    #: Requests per minute per model, merged from every member's reports.
    demand: Mapping[str, float]
    wanted: tuple[str, ...]

    @staticmethod
    def peers_of(view: MeshView, now: float) -> tuple[PeerStatus, ...]:
        """The view's members by PeerID, with the RTTs our own status holds."""
        own = view.peers.get(view.self_id)
        return tuple(
            PeerStatus(
                peer_id=v.peer_id, is_self=v.peer_id == view.self_id, role=v.status.role, region=v.status.region,
                ram_mb=v.status.ram_mb, vram_mb=v.status.vram_mb, gpu=v.status.gpu, loaded=v.status.loaded,
                available=v.status.available, files={model: cid.text for model, cid in v.status.files.items()},
                load=v.status.load, version=v.status.version, last_seen_s=round(now - v.last_seen, 2),
                rtt_ms=own.status.rtt_ms.get(v.peer_id) if own is not None else None, loading=v.status.loading,
            )
            for v in sorted(view.peers.values(), key=lambda v: v.peer_id)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "mesh_id": self.mesh_id,
            "nodes": self.nodes,
            "clients": self.clients,
            "served": list(self.served),
            "capacity_mb": self.capacity_mb,
            "peers": [peer.to_json() for peer in self.peers],
            "name": self.name,
            "private": self.private,
            "listed": self.listed,
            "created": self.created,
            "region": self.region,
            "max_clients": self.max_clients,
            "peer_id": self.peer_id,
            "addrs": list(self.addrs),
            "members": list(self.members),
            "rejected": dict(self.rejected),
            "demand": dict(self.demand),
            "wanted": list(self.wanted),
        }


@dataclass(frozen=True)
class BlackboardStatus:
    """The blackboard of this node's mesh: its policy and what it holds, from memory (no store reads)."""

    topic: str
    store: str
    limits: BlackboardLimits
    scrub: bool
    watchers: int
    synced_posts: int
    sync_sessions: int
    #: Refusals per reason since the node started.
    rejected: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "store": self.store,
            "limits": {"rate_per_min": self.limits.rate_per_min, "max_text_bytes": self.limits.max_text_bytes,
                       "ttl_s": self.limits.ttl_s, "capacity": self.limits.capacity},
            "scrub": self.scrub,
            "watchers": self.watchers,
            "synced_posts": self.synced_posts,
            "sync_sessions": self.sync_sessions,
            "rejected": dict(self.rejected),
        }


@dataclass(frozen=True)
class SplitStatus:
    """One model served as a pipeline from here: the plan in force (if any) and why there is none."""

    model: str
    content_id: str | None
    #: Peers that offer the model's name with another file: peer id -> that file's content id text.
    other_files: Mapping[str, str]
    plan: tuple[Shard, ...] | None
    last_error: str | None
    bytes_to_workers: int
    bytes_from_workers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "content_id": self.content_id,
            "other_files": dict(self.other_files),
            "plan": None if self.plan is None else [
                {"peer_id": s.peer_id, "first_layer": s.first_layer, "last_layer": s.last_layer} for s in self.plan],
            "last_error": self.last_error,
            "bytes_to_workers": self.bytes_to_workers,
            "bytes_from_workers": self.bytes_from_workers,
        }


@dataclass(frozen=True)
class MoeShardMemberStatus:
    peer_id: str
    experts_per_layer: int
    experts: tuple[tuple[int, ...], ...]
    traffic_share: float
    shard_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "experts_per_layer": self.experts_per_layer,
                "experts": [list(layer) for layer in self.experts], "traffic_share": self.traffic_share,
                "shard_bytes": self.shard_bytes}


@dataclass(frozen=True)
class MoeShardStatus:
    """One model served as a `--moe shard` group member: the group's plan, the calibration, this node's part."""

    model: str
    content_id: str | None
    #: `imatrix` (measured router statistics) or `weight-norm` (the estimate), with `(from <peer's last 8
    #: characters>)` when a member gave the counts (protocols/moe-usage.md); None while calibrating.
    calibration: str | None
    usage: str | None
    min_fraction: float
    core: tuple[tuple[int, ...], ...]
    members: tuple[MoeShardMemberStatus, ...]
    refused: tuple[tuple[str, str], ...]
    serving: bool
    last_error: str | None
    #: The peer id the counts came from; None: measured or estimated here.
    calibration_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "content_id": self.content_id, "calibration": self.calibration,
                "calibration_from": self.calibration_from,
                "usage": self.usage, "min_fraction": self.min_fraction, "core": [list(c) for c in self.core],
                "members": [m.to_json() for m in self.members],
                "refused": [{"peer_id": peer, "reason": why} for peer, why in self.refused],
                "serving": self.serving, "last_error": self.last_error}


@dataclass(frozen=True)
class RpcWorkerStatus:
    """This node as a pipeline worker: its rpc-server and the tunnel to it."""

    pid: int | None
    port: int | None
    state: str
    connections: int
    bytes_to_rpc: int
    bytes_from_rpc: int

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "port": self.port, "state": self.state, "connections": self.connections,
                "bytes_to_rpc": self.bytes_to_rpc, "bytes_from_rpc": self.bytes_from_rpc}


@dataclass(frozen=True)
class ModelStatus:
    """One of this node's own llama-servers."""

    id: str
    state: str
    path: str
    size_bytes: int
    content_id: str | None
    architecture: str
    embeddings: bool
    pid: int | None
    port: int | None
    restarts: int
    #: Requests this server answered (this node's clients' and the mesh's).
    requests: int
    load_progress: float
    last_error: str | None
    log: str
    #: Draft model or n-gram speculation and its acceptance (inference/spec_metrics.py); None: off.
    speculation: dict[str, Any] | None = None
    #: Experts, experts used per token, expert and trunk bytes (inference/moe.py); None for a dense model.
    moe: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "local": True,
            "path": self.path,
            "size_bytes": self.size_bytes,
            "content_id": self.content_id,
            "architecture": self.architecture,
            "embeddings": self.embeddings,
            "pid": self.pid,
            "port": self.port,
            "restarts": self.restarts,
            "requests": self.requests,
            "load_progress": self.load_progress,
            "last_error": self.last_error,
            "log": self.log,
            "speculation": self.speculation,
            "moe": self.moe,
        }


@dataclass(frozen=True)
class NodeStatus:
    """The whole document: what `/api/status` returns."""

    node: NodeSummary
    #: None on a `--solo` node.
    mesh: MeshStatus | None
    blackboard: BlackboardStatus | None
    splits: tuple[SplitStatus, ...]
    #: None unless this node can be a pipeline worker (a mesh, and an rpc-server binary).
    rpc_worker: RpcWorkerStatus | None
    models: tuple[ModelStatus, ...]
    #: How busy the machine is (inference/hardware_usage.py), sampled at most every 2 s; None before the first
    #: sample (the console samples before it answers, so its readers always see one).
    hardware: HardwareUsage | None = None
    #: MoE models served as a member of a `--moe shard` group (app/moe_shards.py).
    moe_shards: tuple[MoeShardStatus, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node.to_json(),
            "mesh": None if self.mesh is None else self.mesh.to_json(),
            "blackboard": None if self.blackboard is None else self.blackboard.to_json(),
            "splits": [split.to_json() for split in self.splits],
            "rpc_worker": None if self.rpc_worker is None else self.rpc_worker.to_json(),
            "models": [model.to_json() for model in self.models],
            "hardware": None if self.hardware is None else self.hardware.to_json(),
            "moe_shards": [group.to_json() for group in self.moe_shards],
        }
