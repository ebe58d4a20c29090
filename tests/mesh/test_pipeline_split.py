"""A dense model split by layers over three nodes (`--split`), end to end on loopback with real processes:
the same tokens as solo at temperature 0, RPC traffic only through the authenticated tunnel, and a clean
re-plan when a worker dies."""

from __future__ import annotations

import os
import signal

import httpx
from conftest import pid_alive, wait_for

SPLIT_TIMEOUT_S = 90.0
PROMPT = {"prompt": "Once upon a time", "max_tokens": 32, "temperature": 0, "cache_prompt": False}


def complete(node) -> str:
    r = httpx.post(node.base_url + "/completions", json={"model": "tiny-dense", **PROMPT}, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def split_of(node) -> dict:
    return node.status()["splits"][0]


def test_forced_split_gives_solo_tokens_and_replans_when_a_worker_dies(node_factory, tiny_models, bootstrap):
    solo = node_factory("--solo", "--model", str(tiny_models.dense), "--threads", "1", name="solo")
    solo.wait_ready()
    expected = complete(solo)

    mesh = ("--mesh-name", "split-test", "--bootstrap", bootstrap.addr, "--threads", "1")
    workers = [node_factory("--standby", "--model", str(tiny_models.dense), *mesh, name=f"w{i}") for i in (1, 2)]
    for worker in workers:
        worker.wait_ready()
    host = node_factory("--split", "--model", str(tiny_models.dense), *mesh, name="host")
    host.wait_ready()  # the API is up; the split itself comes once the workers are measured
    wait_for(lambda: host.status()["models"] and host.status()["models"][0]["state"] == "ready"
             and split_of(host)["plan"] and len(split_of(host)["plan"]) == 3, SPLIT_TIMEOUT_S,
             "the host to serve tiny-dense split over itself and two workers")
    plan = split_of(host)["plan"]
    assert plan[0]["peer_id"] == host.status()["mesh"]["peer_id"] and plan[0]["first_layer"] == 0
    assert sorted(s["peer_id"] for s in plan[1:]) == sorted(w.status()["mesh"]["peer_id"] for w in workers)
    assert complete(host) == expected

    # Weights and activations reached the workers only through /meshp2p/rpc/1.0.0.
    crossed = [w.status()["rpc_worker"] for w in workers]
    assert all(c["connections"] >= 1 and c["bytes_to_rpc"] > 0 and c["bytes_from_rpc"] > 0 for c in crossed)
    assert all(c["pid"] and pid_alive(c["pid"]) for c in crossed)

    victim = workers[1]
    rpc_pid = victim.status()["rpc_worker"]["pid"]
    victim_id = victim.status()["mesh"]["peer_id"]
    victim.process.send_signal(signal.SIGKILL)
    os.kill(rpc_pid, signal.SIGKILL)

    def replanned() -> bool:
        status = host.status()
        current = status["splits"][0]["plan"]
        return bool(current) and victim_id not in {s["peer_id"] for s in current} and bool(status["models"]) \
            and status["models"][0]["state"] == "ready"

    wait_for(replanned, SPLIT_TIMEOUT_S, "the host to plan again without the dead worker")
    assert len(split_of(host)["plan"]) == 2
    assert complete(host) == expected


def test_a_model_too_big_for_every_node_is_split_without_being_asked(node_factory, bootstrap, tmp_path):
    from make_tiny_gguf import write_tiny_gguf

    # ~40 MB of weights; every node offers 20 MB (--max-vram 0.02 GB caps RAM on a CPU node): no node fits it
    # (1.1 x size), the host and one worker do not either, the host and two workers do.
    model = write_tiny_gguf(tmp_path / "wide.gguf", "dense", embd=512, ff=1024, heads=8, kv_heads=4, seed=5)
    size_mb = model.stat().st_size / 2**20
    assert 2 * 20 < 1.1 * size_mb <= 3 * 20, size_mb
    mesh = ("--mesh-name", "auto-split", "--bootstrap", bootstrap.addr, "--threads", "1", "--max-vram", "0.02")
    for i in (1, 2):
        node_factory("--standby", "--model", str(model), *mesh, name=f"w{i}").wait_ready()
    host = node_factory("--model", str(model), *mesh, name="host")
    host.wait_ready()
    wait_for(lambda: host.status()["models"] and host.status()["models"][0]["state"] == "ready",
             SPLIT_TIMEOUT_S, "the host to serve the model split over the mesh")
    plan = host.status()["splits"][0]["plan"]
    assert len(plan) == 3
    r = httpx.post(host.base_url + "/completions", json={"model": "wide", **PROMPT}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"]
