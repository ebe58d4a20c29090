"""The parts of `/metrics` read from the status document and the hardware sample (app/metrics.py), from plain
values: refusals by source and reason, mesh gauges, GPU gauges by index and name."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from meshp2p.api.metrics import ApiMetrics
from meshp2p.api.prometheus import encode
from meshp2p.app.metrics import NodeMetrics, Transfers, hardware_families
from meshp2p.app.status import MeshStatus, NodeStatus, NodeSummary
from meshp2p.inference.hardware_usage import HardwareUsage, UsageSampler, parse_nvidia_smi
from meshp2p.wire.status import Role

NVIDIA_SMI = "0, NVIDIA H100 80GB HBM3, 87, 61234, 81559, 64\n1, NVIDIA GH200 480GB, [N/A], 1024, 97871, [N/A]\n"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _document(rejected: dict[str, int]) -> NodeStatus:
    mesh = MeshStatus(mesh_id="m", nodes=2, clients=1, served=("tiny",), capacity_mb=1, peers=(), name="n",
                      private=False, listed=True, created=False, region=None, max_clients=None, peer_id="p",
                      addrs=(), members=(), rejected=rejected, demand={"tiny": 1.5}, wanted=())
    node = NodeSummary(version="0", pid=1, started_at=0.0, api_url="", console_url=None, home="", llama_cpp=None,
                       max_vram_gb=None, role=Role.HOST)
    return NodeStatus(node=node, mesh=mesh, blackboard=None, splits=(), rpc_worker=None, models=())


def test_every_counted_refusal_is_a_series_by_source_and_reason() -> None:
    transfers = Transfers()
    transfers.from_hub(1000)
    transfers.from_peers(24)
    doc = _document({"dht:expired": 3, "tunnel:not_member": 1, "gossip:replayed": 7, "odd": 1})
    metrics = NodeMetrics(ApiMetrics(), lambda: doc, {}, UsageSampler(), transfers, in_flight=lambda: 2,
                          uploaded_bytes=lambda: 5)
    got = _samples(encode(metrics._node(doc)))
    assert got[("meshp2p_rejections_total", (("reason", "expired"), ("source", "dht")))] == 3
    assert got[("meshp2p_rejections_total", (("reason", "not_member"), ("source", "tunnel")))] == 1
    assert got[("meshp2p_rejections_total", (("reason", "replayed"), ("source", "gossip")))] == 7
    assert got[("meshp2p_rejections_total", (("reason", "unknown"), ("source", "odd")))] == 1
    assert got[("meshp2p_requests_in_flight", ())] == 2 and got[("meshp2p_mesh_nodes", ())] == 2
    assert got[("meshp2p_demand_requests_per_minute", (("model", "tiny"),))] == 1.5
    assert got[("meshp2p_hub_download_bytes_total", ())] == 1000
    assert got[("meshp2p_peer_fetch_bytes_total", ())] == 24 and got[("meshp2p_peer_upload_bytes_total", ())] == 5


def test_gpus_are_gauges_by_index_and_name_and_unknown_fields_are_left_out() -> None:
    usage = HardwareUsage(sampled_at=0.0, cpu_pct=12.5, ram_used_mb=1024.0, ram_total_mb=2048.0,
                          gpus=parse_nvidia_smi(NVIDIA_SMI), gpu_tool="nvidia-smi")
    got = _samples(encode(hardware_families(usage)))
    h100 = (("gpu", "0"), ("name", "NVIDIA H100 80GB HBM3"))
    gh200 = (("gpu", "1"), ("name", "NVIDIA GH200 480GB"))
    assert got[("meshp2p_gpu_utilization_percent", h100)] == 87
    assert ("meshp2p_gpu_utilization_percent", gh200) not in got
    assert got[("meshp2p_gpu_memory_used_bytes", gh200)] == 1024 * 2**20
    assert got[("meshp2p_gpu_memory_total_bytes", h100)] == 81559 * 2**20
    assert got[("meshp2p_gpu_temperature_celsius", h100)] == 64
    assert got[("meshp2p_cpu_utilization_percent", ())] == 12.5 and got[("meshp2p_ram_total_bytes", ())] == 2**31
