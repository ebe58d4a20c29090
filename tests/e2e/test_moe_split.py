"""A Mixture-of-Experts model split by layers (each block with all its experts) over 2 and 3 nodes: solo's tokens
at temperature 0, layers sized by their real bytes (the planner's MoE rule), and every worker loading its experts
from its own copy of the file. Real processes on loopback, the tiny llama-style (Mixtral experts) and qwen3moe
models of tools/make_tiny_gguf.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers.processes import NodeProcess, wait_for
from make_tiny_gguf import write_tiny_gguf

from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.moe import model_layout
from meshp2p.mesh.planner import split_layers_by_bytes

SPLIT_TIMEOUT_S = 90.0
PROMPT = {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "cache_prompt": False}


def complete(node: NodeProcess, model: str) -> str:
    r = httpx.post(node.base_url + "/completions", json={"model": model, **PROMPT}, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


@pytest.mark.parametrize(("variant", "workers"), [("moe", 1), ("qwen3moe", 2)])
def test_a_moe_split_gives_solo_tokens(node_factory, bootstrap, tmp_path: Path, variant: str, workers: int) -> None:
    model = tmp_path / f"tiny-{variant}.gguf"
    write_tiny_gguf(model, variant, layers=6, seed=3)
    name = model.stem
    layout = model_layout(read_gguf_header(model))
    assert layout.is_moe and layout.experts == 8 and layout.expert_bytes > layout.trunk_bytes

    solo = node_factory("--solo", "--model", str(model), "--threads", "1", name="solo")
    solo.wait_ready()
    expected = complete(solo, name)
    listed = httpx.get(solo.base_url + "/models", timeout=10).json()["data"][0]["meshp2p"]
    assert listed["moe"] == {"experts": 8, "experts_used": 2, "expert_bytes": layout.expert_bytes,
                             "trunk_bytes": layout.trunk_bytes}
    solo.stop()

    mesh = ("--mesh-name", f"moe-split-{variant}", "--bootstrap", bootstrap.addr, "--threads", "1")
    peers = [node_factory("--standby", "--model", str(model), *mesh, name=f"w{i}") for i in range(workers)]
    for node in peers:
        node.wait_ready()
    host = node_factory("--split", "--split-workers", str(workers), "--model", str(model), *mesh, name="host")
    host.wait_ready()

    def split_ready() -> bool:
        status = host.status()
        plan = status["splits"][0]["plan"] if status["splits"] else None
        return bool(plan) and len(plan) == workers + 1 and status["models"][0]["state"] == "ready"

    wait_for(split_ready, SPLIT_TIMEOUT_S, f"the host to serve {name} split over {workers + 1} nodes")
    status = host.status()
    plan = status["splits"][0]["plan"]
    peers_by_id = {p["peer_id"]: p for p in status["mesh"]["peers"]}
    capacities = [peers_by_id[s["peer_id"]]["vram_mb"] or peers_by_id[s["peer_id"]]["ram_mb"] for s in plan]
    counts = tuple(s["last_layer"] - s["first_layer"] + 1 for s in plan)
    # Sized by bytes, the host's embeddings and head counted in its share (tests/mesh/test_planner.py shows where
    # that differs from a count split; with these tiny vocabularies the head weighs a third of a block).
    assert counts == split_layers_by_bytes(layout.layer_bytes, layout.host_bytes, capacities)
    assert complete(host, name) == expected

    # Each worker read its experts from its own file: what crossed to it is far less than the weights it holds.
    for shard, node in zip(plan[1:], sorted(peers, key=lambda n: [s["peer_id"] for s in plan].index(
            n.status()["mesh"]["peer_id"])), strict=True):
        held = sum(layout.layer_bytes[shard["first_layer"]:shard["last_layer"] + 1])
        worker = node.status()["rpc_worker"]
        print(f"worker {shard['peer_id'][-8:]}: holds {held} bytes of blocks, received {worker['bytes_to_rpc']}")
        assert worker["connections"] >= 1 and 0 < worker["bytes_to_rpc"] < held // 2, (worker, held)
