"""The node's `/metrics` page (console port): what the API counted, what the status document says, the machine's
load, and each local llama-server's own metrics under our names.

Everything but the API's counters is read when the page is read, from the same sources as `/api/status` (the
node's `StatusReport.document`), so the two never disagree and nothing is counted twice: in-flight requests and
peers are gauges of that moment; the refusals of `mesh.rejected` (p2p/rejects.py: gossip, DHT, tunnel, join,
blackboard, model fetch...) are counters by `source` and `reason`; the blackboard's synced posts and sessions, and
the bytes to and from pipeline workers, are the status's running totals. What status does not hold is counted here
(`Transfers`: bytes of model files from the hub, from members, and to members) or by the tunnel's metered handler
(`metered_tunnel_handler`: requests this node's servers answered for other members, route `tunnel`).

llama-server's metrics (inference/server_metrics.py) are renamed `llamacpp:x` -> `meshp2p_llamacpp_x` and labelled
`model="<id>"`; a server that does not answer within its timeout is left out of that page and counted in
`meshp2p_llama_server_scrape_failures_total`, and `meshp2p_llama_server_up` says which answered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshp2p.api.metrics import PREFIX, TUNNEL, ApiMetrics, Counter, gauge
from meshp2p.api.prometheus import Family, encode, merged, parse, relabelled
from meshp2p.app.status import NodeStatus
from meshp2p.inference.hardware_usage import HardwareUsage, UsageSampler
from meshp2p.inference.llama_server import LlamaServer
from meshp2p.inference.server_metrics import read_server_metrics
from meshp2p.p2p import PeerID
from meshp2p.p2p.tunnel import TunnelAnswer, TunnelError, TunnelHandler
from meshp2p.wire.tunnel import RequestHead

#: What a tunnelled request that failed before its answer is counted as (the asking node answers 502/503).
TUNNEL_FAILED_STATUS = 503


@dataclass
class Transfers:
    """Bytes of model files that arrived since the node started, from the hub and from members (what went to
    members is the file server's own count). `from_hub` is called from the download's worker thread: an int added
    to under the GIL, by that thread alone."""

    hub_bytes: int = 0
    peer_fetch_bytes: int = 0

    def from_hub(self, n: int) -> None:
        self.hub_bytes += n

    def from_peers(self, n: int) -> None:
        self.peer_fetch_bytes += n


class NodeMetrics:
    """Writes the page; `status` is the node's status document, `servers` its live llama-servers."""

    def __init__(self, api: ApiMetrics, status: Callable[[], NodeStatus], servers: Mapping[str, LlamaServer],
                 sampler: UsageSampler, transfers: Transfers, *, in_flight: Callable[[], int],
                 uploaded_bytes: Callable[[], int]) -> None:
        self.api = api
        self.status = status
        self.servers = servers
        self.sampler = sampler
        self.transfers = transfers
        self.in_flight = in_flight
        self.uploaded_bytes = uploaded_bytes
        self.scrape_failures = Counter(f"{PREFIX}llama_server_scrape_failures_total",
                                       "Reads of a local llama-server's /metrics that got no answer in time.",
                                       ("model",))

    async def page(self) -> str:
        """The exposition text of everything in the module docstring."""
        usage = await self.sampler.read()
        texts = await read_server_metrics(self.servers)
        families = [*self.api.families(), *self._node(self.status()), *hardware_families(usage)]
        up: list[tuple[tuple[tuple[str, str], ...], float]] = []
        foreign: list[Family] = []
        for model, text in sorted(texts.items()):
            server = self.servers.get(model)
            if text is None and server is not None and server.is_ready:
                self.scrape_failures.inc(model)  # a ready server that did not answer; a loading one is expected
            up.append(((("model", model),), 0.0 if text is None else 1.0))
            if text is not None:
                foreign += relabelled(parse(text), prefix=PREFIX, labels=(("model", model),))
        families += [gauge(f"{PREFIX}llama_server_up", "Whether the model's llama-server answered this scrape.", up),
                     self.scrape_failures.family()]
        return encode(merged([*families, *foreign]))

    def _node(self, doc: NodeStatus) -> list[Family]:
        p = PREFIX
        out = [
            gauge(f"{p}requests_in_flight", "Requests being answered now (this node's clients' and the mesh's).",
                  [((), float(self.in_flight()))]),
            gauge(f"{p}model_ready", "Whether each local model's server is ready (1) or not (0).",
                  [((("model", m.id),), 1.0 if m.state == "ready" else 0.0) for m in doc.models]),
            _counter(f"{p}model_restarts_total", "Restarts of each local model's llama-server.",
                     [((("model", m.id),), m.restarts) for m in doc.models]),
            _counter(f"{p}hub_download_bytes_total", "Bytes of model files downloaded from the hub by this node.",
                     [((), self.transfers.hub_bytes)]),
            _counter(f"{p}peer_fetch_bytes_total", "Bytes of model files fetched from mesh members.",
                     [((), self.transfers.peer_fetch_bytes)]),
            _counter(f"{p}peer_upload_bytes_total", "Bytes of model files sent to mesh members.",
                     [((), self.uploaded_bytes())]),
        ]
        if doc.mesh is not None:
            mesh = doc.mesh
            out += [
                gauge(f"{p}peers", "Other members in this node's view of the mesh.",
                      [((), float(sum(1 for peer in mesh.peers if not peer.is_self)))]),
                gauge(f"{p}mesh_nodes", "Serving nodes in the mesh (this one included).", [((), float(mesh.nodes))]),
                gauge(f"{p}mesh_clients", "API-only client nodes in the mesh.", [((), float(mesh.clients))]),
                _counter(f"{p}rejections_total", "Hostile or broken inputs refused (p2p/rejects.py), by source "
                         "(gossip, dht, tunnel, join, blackboard, ...) and reason.",
                         [((("source", where), ("reason", reason)), n)
                          for where, reason, n in _split_rejections(mesh.rejected)]),
                gauge(f"{p}demand_requests_per_minute", "Requests per minute per model, merged across the mesh.",
                      [((("model", m),), rate) for m, rate in sorted(mesh.demand.items())]),
            ]
        if doc.blackboard is not None:
            board = doc.blackboard
            out += [
                _counter(f"{p}blackboard_synced_posts_total", "Blackboard posts received by sync.",
                         [((), board.synced_posts)]),
                _counter(f"{p}blackboard_sync_sessions_total", "Blackboard sync sessions.",
                         [((), board.sync_sessions)]),
                gauge(f"{p}blackboard_watchers", "Clients watching the blackboard now.",
                      [((), float(board.watchers))]),
            ]
        if doc.splits:
            out += [
                _counter(f"{p}pipeline_bytes_to_workers_total", "Bytes sent to pipeline workers, per model.",
                         [((("model", s.model),), s.bytes_to_workers) for s in doc.splits]),
                _counter(f"{p}pipeline_bytes_from_workers_total", "Bytes received from pipeline workers, per model.",
                         [((("model", s.model),), s.bytes_from_workers) for s in doc.splits]),
            ]
        if doc.rpc_worker is not None:
            w = doc.rpc_worker
            out += [_counter(f"{p}rpc_worker_bytes_total", "Bytes through this node's rpc-server tunnel.",
                             [((("direction", "to_rpc"),), w.bytes_to_rpc), ((("direction", "from_rpc"),),
                                                                               w.bytes_from_rpc)])]
        return out


def _counter(name: str, help: str, values: list[tuple[tuple[tuple[str, str], ...], int]]) -> Family:
    family = gauge(name, help, [(labels, float(n)) for labels, n in values])
    family.type = "counter"
    return family


def _split_rejections(rejected: Mapping[str, int]) -> list[tuple[str, str, int]]:
    """`where:reason` keys (p2p/rejects.py) as (source, reason, count), sorted."""
    out = []
    for key, n in sorted(rejected.items()):
        where, _, reason = key.partition(":")
        out.append((where, reason or "unknown", n))
    return out


def hardware_families(usage: HardwareUsage) -> list[Family]:
    """The sample as gauges: CPU and RAM always (when /proc has them), each GPU by index and name."""
    p = PREFIX
    out = []
    if usage.cpu_pct is not None:
        out.append(gauge(f"{p}cpu_utilization_percent", "CPU busy share since the sample before.",
                         [((), usage.cpu_pct)]))
    if usage.ram_total_mb is not None and usage.ram_used_mb is not None:
        out += [gauge(f"{p}ram_used_bytes", "RAM in use (total minus available).",
                      [((), round(usage.ram_used_mb * 2**20))]),
                gauge(f"{p}ram_total_bytes", "RAM of the machine.", [((), round(usage.ram_total_mb * 2**20))])]
    gpus = [(g, (("gpu", str(g.index)), ("name", g.name))) for g in usage.gpus]
    for name, help, value, scale in (
            ("gpu_utilization_percent", "GPU busy share, as the vendor tool reports it.", "utilization_pct", 1.0),
            ("gpu_memory_used_bytes", "VRAM in use.", "vram_used_mb", 2.0**20),
            ("gpu_memory_total_bytes", "VRAM of the GPU.", "vram_total_mb", 2.0**20),
            ("gpu_temperature_celsius", "GPU temperature.", "temperature_c", 1.0)):
        values = [(labels, round(v * scale, 1)) for g, labels in gpus if (v := getattr(g, value)) is not None]
        if values:
            out.append(gauge(p + name, help, values))
    return out


def metered_tunnel_handler(handler: TunnelHandler, metrics: ApiMetrics,
                           servers: Mapping[str, LlamaServer]) -> TunnelHandler:
    """`handler` (backends/local.py's, answering members with this node's servers) with each request to a model
    served here counted under route `tunnel`; a model not served here is not counted (a member names it, and a
    label per name would let one grow the page)."""

    async def metered(peer: PeerID, head: RequestHead, body: bytes) -> TunnelAnswer:
        model = head.model or _model_in(body)
        meter = metrics.start(model, TUNNEL) if model is not None and model in servers else None
        if meter is None:
            return await handler(peer, head, body)
        try:
            answer = await handler(peer, head, body)
        except TunnelError:
            meter.answered(TUNNEL_FAILED_STATUS, None)
            raise
        except BaseException as exc:
            meter.failed(exc)
            raise
        if answer.chunks is None:
            meter.answered(answer.status, answer.body)
            return answer
        return TunnelAnswer(answer.status, answer.headers, None, meter.watch_chunks(answer.status, answer.chunks))

    return metered


def _model_in(body: bytes) -> str | None:
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None
