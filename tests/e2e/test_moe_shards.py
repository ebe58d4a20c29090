"""`--moe shard` end to end: real `meshp2p up` processes on loopback, the tiny MoE models (8 experts, 2 used).

2- and 3-way groups each calibrate (llama-imatrix), plan the same placement, write and serve their shards under
the model's one id; every expert is on some shard; a session sticks to one shard and moves when that shard's node
is killed (repeated); a 3-way group started together plans once, and when it loses a member re-plans so every
expert is covered again; the quality guard refuses a shard that would hold too few experts, saying why. A member
whose llama.cpp has no llama-imatrix plans with the counts a member measured, given over `/meshp2p/moe-usage/1.0.0`,
and the two form one group. A member that names the model from the catalog without having it obtains it after
start and joins the same group.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.hub_server import local_hub
from helpers.processes import NodeProcess, clean_environ, pid_alive, wait_for
from make_tiny_gguf import write_tiny_gguf

from meshp2p.inference.binaries import IMATRIX_NAME, LLAMA_DIR_ENV, LlamaBinaries
from meshp2p.inference.calibration import run_imatrix
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.moe import model_layout
from meshp2p.mesh.planner import needed_mb
from meshp2p.mesh.routing import rendezvous_weight

GROUP_TIMEOUT_S = 90.0
KILLS = 3
PROMPT = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "cache_prompt": False}


def shard_mb(model: Path, experts: int) -> str:
    """The --moe-shard-mb that holds exactly `experts` experts per layer of `model` next to its trunk."""
    layout = model_layout(read_gguf_header(model))
    assert layout.experts
    per_expert = layout.expert_bytes // layout.experts
    return f"{(layout.trunk_bytes + experts * per_expert + per_expert // 2) / 1e6:.6f}"


def group(node: NodeProcess) -> dict[str, Any]:
    groups = node.status()["moe_shards"]
    assert len(groups) == 1
    return dict(groups[0])


def serving(node: NodeProcess, members: int) -> bool:
    try:
        g = group(node)
        models = node.status()["models"]
    except httpx.HTTPError:
        return False
    return g["serving"] and len(g["members"]) == members and bool(models) and models[0]["state"] == "ready"


def complete(node: NodeProcess, model: str, session: str | None = None) -> str:
    headers = {"x-session-id": session} if session else {}
    r = httpx.post(node.base_url + "/completions", json={"model": model, **PROMPT}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["text"])


def requests_served(node: NodeProcess) -> int:
    try:
        models = node.status()["models"]
    except httpx.HTTPError:
        return -1
    return int(models[0]["requests"]) if models else 0


def covered(plan_members: list[dict[str, Any]], layers: int) -> bool:
    return all({e for m in plan_members for e in m["experts"][layer]} == set(range(8)) for layer in range(layers))


def start_group(node_factory, bootstrap, model: Path, mesh: str, count: int, experts: int) -> list[NodeProcess]:
    args = ("--moe", "shard", "--moe-shard-mb", shard_mb(model, experts), "--model", str(model),
            "--mesh-name", mesh, "--bootstrap", bootstrap.addr, "--threads", "1")
    nodes = [node_factory(*args, name=f"s{i}") for i in range(count)]
    for node in nodes:
        node.wait_ready()
    for node in nodes:
        wait_for(lambda node=node: serving(node, count), GROUP_TIMEOUT_S, f"a {count}-way shard group on {mesh}")
    return nodes


def check_group(nodes: list[NodeProcess], layers: int, experts: int) -> None:
    plans = [group(n) for n in nodes]
    assert all(p["members"] == plans[0]["members"] and p["usage"] == plans[0]["usage"] for p in plans), plans
    assert plans[0]["calibration"] == "imatrix"
    assert [m["experts_per_layer"] for m in plans[0]["members"]] == [experts] * len(nodes)
    assert covered(plans[0]["members"], layers)
    for m in plans[0]["members"]:
        assert 0 < m["traffic_share"] < 1
        for layer in range(layers):  # the core (the most-used experts) is on every shard
            assert set(plans[0]["core"][layer]) <= set(m["experts"][layer])


@pytest.mark.parametrize("variant", ["moe", "qwen3moe"])
def test_two_shards_answer_and_sessions_stick_and_move(node_factory, bootstrap, tmp_path: Path,
                                                       variant: str) -> None:
    model = write_tiny_gguf(tmp_path / f"tiny-{variant}.gguf", variant, layers=4, seed=11)
    name = model.stem
    nodes = start_group(node_factory, bootstrap, model, f"shards2-{variant}", 2, 5)
    check_group(nodes, 4, 5)
    for node in nodes:  # each shard loads and answers on its own (no session: local first)
        before = requests_served(node)
        assert complete(node, name)
        assert requests_served(node) == before + 1
    client = node_factory("--client", "--mesh-name", f"shards2-{variant}", "--bootstrap", bootstrap.addr,
                          name="client")
    client.wait_ready()
    wait_for(lambda: len(httpx.get(client.base_url + "/models", timeout=10).json()["data"][0]["meshp2p"]["nodes"])
             == 2, GROUP_TIMEOUT_S, "the client to see both shards as servers of one model id")
    ids = [m["id"] for m in httpx.get(client.base_url + "/models", timeout=10).json()["data"]]
    assert ids == [name]

    peer_of = {n.status()["mesh"]["peer_id"]: n for n in nodes}
    for kill in range(KILLS):
        session = f"conversation-{kill}"
        first = peer_of[max(peer_of, key=lambda p: rendezvous_weight(session, p))]
        other = next(n for n in nodes if n is not first)
        # A node just restarted may be reached a moment after the client lists it (its new connection proves
        # membership again): wait until the session reaches its shard, then count.
        answered_by_first = requests_served(first)
        wait_for(lambda first=first, session=session, seen=answered_by_first: bool(complete(client, name, session))
                 and requests_served(first) > seen, GROUP_TIMEOUT_S, f"session {session} to reach its shard")
        before = {n: requests_served(n) for n in nodes}
        for _ in range(3):
            complete(client, name, session)
        assert requests_served(first) - before[first] == 3 and requests_served(other) == before[other], (
            f"session {session} did not stick to its shard")
        # The shard's machine dies: the node and its llama-server, without a word.
        backend = first.status()["models"][0]["pid"]
        first.process.send_signal(signal.SIGKILL)
        os.kill(backend, signal.SIGKILL)
        moved_from = requests_served(other)
        complete(client, name, session)
        assert requests_served(other) == moved_from + 1, "the session did not move to the remaining shard"
        assert not pid_alive(backend)
        # Once the dead node leaves its view, the survivor keeps serving its shard (alone it cannot cover every
        # expert) and says so.
        wait_for(lambda other=other: "covering all 8" in (group(other)["last_error"] or ""), GROUP_TIMEOUT_S,
                 "the survivor to notice its group shrank")
        assert group(other)["serving"]
        # The node comes back (same home, same peer id, cached calibration and shard): the group heals.
        first._start(first.api_port, first.console_port)
        first.wait_ready()
        for node in nodes:
            wait_for(lambda node=node: serving(node, 2), GROUP_TIMEOUT_S, "the group to heal")
        wait_for(lambda: len(httpx.get(client.base_url + "/models", timeout=10).json()["data"][0]["meshp2p"]
                             ["nodes"]) == 2, GROUP_TIMEOUT_S, "the client to see the returned shard")
        check_group(nodes, 4, 5)


def test_three_shards_replan_for_coverage_when_one_leaves(node_factory, bootstrap, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-moe3.gguf", "moe", layers=4, seed=12)
    name = model.stem
    nodes = start_group(node_factory, bootstrap, model, "shards3", 3, 4)
    check_group(nodes, 4, 4)
    # Any two of the three can cover every expert, so without the settle rule (mesh/moe_settle.py) the first two
    # to meet would write and load a shard for a 2-way group, then another once the third appeared.
    for node in nodes:
        assert node.output().count("serving a shard with") == 1, node.output()
    for node in nodes:
        assert complete(node, name)
    victim, survivors = nodes[0], nodes[1:]
    backend = victim.status()["models"][0]["pid"]
    victim.process.send_signal(signal.SIGKILL)
    os.kill(backend, signal.SIGKILL)
    for node in survivors:
        wait_for(lambda node=node: serving(node, 2), GROUP_TIMEOUT_S, "the two survivors to re-plan")
    check_group(survivors, 4, 4)  # 2 x 4 slots: the core shrinks to nothing and every expert is covered again
    for node in survivors:
        assert complete(node, name)


def test_guard_refuses_a_shard_with_too_few_experts(node_factory, bootstrap, tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-moe-small.gguf", "moe", layers=4, seed=13)
    node = node_factory("--moe", "shard", "--moe-shard-mb", shard_mb(model, 3), "--model", str(model),
                        "--mesh-name", "shards-guard", "--bootstrap", bootstrap.addr, "--threads", "1")
    node.wait_ready()
    wait_for(lambda: "--moe-min-experts" in (group(node)["last_error"] or ""), GROUP_TIMEOUT_S,
             "the guard to refuse the shard")
    g = group(node)
    assert not g["serving"] and node.status()["models"] == []
    assert "3 of 8 experts" in g["last_error"] and "at least 4" in g["last_error"]
    assert "layer split" in g["last_error"]


def test_a_member_without_llama_imatrix_plans_with_a_peers_measured_counts(
        node_factory, bootstrap, tmp_path: Path, llama_binaries: LlamaBinaries) -> None:
    """One of two members runs a llama.cpp build without llama-imatrix (the build's own folder, less that binary,
    through MESHP2P_LLAMA_DIR): it starts from the weight-norm estimate, asks the other for its measured counts,
    and joins its group with them: one usage tag, one plan, the source shown as the peer's."""
    model = write_tiny_gguf(tmp_path / "tiny-moe-shared.gguf", "moe", layers=4, seed=14)
    name = model.stem
    no_imatrix = tmp_path / "llama-without-imatrix"
    no_imatrix.mkdir()
    for binary in llama_binaries.directory.iterdir():
        if binary.name != IMATRIX_NAME:
            (no_imatrix / binary.name).symlink_to(binary)
    args = ("--moe", "shard", "--moe-shard-mb", shard_mb(model, 5), "--model", str(model), "--mesh-name",
            "shares-usage", "--bootstrap", bootstrap.addr, "--threads", "1")
    measured = node_factory(*args, name="measured")
    estimated = node_factory(*args, name="estimated", env={LLAMA_DIR_ENV: str(no_imatrix)})
    for node in (measured, estimated):
        node.wait_ready()
    for node in (measured, estimated):
        wait_for(lambda node=node: serving(node, 2), GROUP_TIMEOUT_S, "one 2-way group on the measured counts")
    measured_id = measured.status()["mesh"]["peer_id"]
    mine, theirs = group(measured), group(estimated)
    assert (mine["calibration"], mine["calibration_from"]) == ("imatrix", None)
    assert theirs["calibration"] == f"imatrix (from {measured_id[-8:]})"
    assert theirs["calibration_from"] == measured_id
    assert theirs["usage"] == mine["usage"] and mine["usage"].startswith("imatrix:")
    assert theirs["members"] == mine["members"] and covered(mine["members"], 4)
    log = estimated.output()
    assert "weight-norm estimate only" in log and f"{measured_id[-8:]} gave its measured expert usage" in log
    assert "gave the expert usage" in measured.output()
    # Cached with where they came from: a restart plans with them without asking again.
    (cache,) = (estimated.home / "moe").glob("*.usage.json")
    cached = json.loads(cache.read_text())
    assert (cached["source"], cached["from"]) == ("imatrix", measured_id)
    for node in (measured, estimated):
        assert complete(node, name)


def test_a_catalog_model_obtained_after_start_is_served_as_a_shard(node_factory, bootstrap, tmp_path: Path) -> None:
    """One member has the file on disk; the other names it from the catalog (a local hub) without having it, so it
    obtains it after start (from the member, else the hub) and serves it as its shard of one 2-way group, as a
    model given at start would be, not alone."""
    model = write_tiny_gguf(tmp_path / "tiny-moe-cat.gguf", "moe", layers=4, seed=15)
    name = model.stem
    with local_hub() as hub:
        hub.add_repo("tiny-org/Tiny-Moe-GGUF", {model.name: model.read_bytes()})
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps({"version": 1, "models": [{
            "name": name, "aliases": [], "source": "hub", "repo": "tiny-org/Tiny-Moe-GGUF", "revision": "main",
            "quant": "Q4_K_M", "files": [{"name": model.name, "sha256": None}], "size_bytes": model.stat().st_size,
            "architecture": "llama", "experts": 8, "experts_used": 2, "context_length": 2048, "draft": None}]}))
        env = {k: v for k, v in clean_environ().items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
        env.update({"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.endpoint, "MESHP2P_CATALOG": str(catalog)})
        args = ("--moe", "shard", "--moe-shard-mb", shard_mb(model, 5), "--mesh-name", "shards-later",
                "--bootstrap", bootstrap.addr, "--threads", "1")
        on_disk = node_factory(*args, "--model", str(model), name="on-disk", env=env)
        later = node_factory(*args, "--model", name, name="later", env=env)
        for node in (on_disk, later):
            node.wait_ready()
        for node in (on_disk, later):
            wait_for(lambda node=node: serving(node, 2), GROUP_TIMEOUT_S, "one 2-way group with the later model")
    check_group([on_disk, later], 4, 5)
    assert group(later)["model"] == name
    for node in (on_disk, later):
        assert complete(node, name)
        assert node.output().count("serving a shard with") == 1, node.output()


def test_a_model_no_member_can_hold_is_calibrated_over_the_layer_split(
        node_factory, bootstrap, tmp_path: Path, llama_binaries: LlamaBinaries) -> None:
    """Two members that each offer less memory than the file needs (`--max-vram`, which caps RAM on a node without
    a GPU: 2 MB each for a 3.6 MB file, whose 1.1 x is 4 MB) cannot calibrate alone. The one that
    mesh/split_calibration.py names runs llama-imatrix over a layer split onto the other's ggml-rpc-server; the
    other takes its counts over moe-usage. The counts are the ones llama-imatrix gives on the whole file alone."""
    model = write_tiny_gguf(tmp_path / "tiny-moe-big.gguf", "moe", layers=4, seed=15)
    layout = model_layout(read_gguf_header(model))
    size = model.stat().st_size
    assert 1.1 * size > 2 * 2**20 and needed_mb(size // 2**20) <= 4  # neither fits; both together do
    args = ("--moe", "shard", "--moe-shard-mb", shard_mb(model, 5), "--max-vram", "0.002", "--model", str(model),
            "--mesh-name", "split-calibration", "--bootstrap", bootstrap.addr, "--threads", "1")
    nodes = [node_factory(*args, name=f"c{i}") for i in range(2)]
    for node in nodes:
        node.wait_ready()

    def measured(node: NodeProcess) -> bool:
        try:
            return str(group(node)["calibration"]).startswith("imatrix")
        except (httpx.HTTPError, AssertionError):
            return False

    for node in nodes:
        wait_for(lambda node=node: measured(node), GROUP_TIMEOUT_S, "imatrix counts measured over the layer split")
    for node in nodes:
        wait_for(lambda node=node: serving(node, 2), GROUP_TIMEOUT_S, "one 2-way group on the split's counts")
    ids = {n.status()["mesh"]["peer_id"]: n for n in nodes}
    calibrator = ids[min(ids)]  # equal capacities: the lowest peer id (mesh/split_calibration.py rule 2)
    other = next(n for n in nodes if n is not calibrator)
    mine, theirs = group(calibrator), group(other)
    assert (mine["calibration"], mine["calibration_from"]) == ("imatrix", None), mine
    assert theirs["calibration"] == f"imatrix (from {min(ids)[-8:]})" and theirs["usage"] == mine["usage"]
    assert "calibrated over a layer split" in calibrator.log_path.read_text(errors="replace")
    assert other.status()["rpc_worker"]["connections"] >= 1  # its rpc-server held the split's layers

    cached = [json.loads(p.read_text()) for n in nodes for p in (n.home / "moe").glob("*.usage.json")]
    assert len(cached) == 2 and cached[0]["counts"] == cached[1]["counts"]
    counts = cached[0]["counts"]
    assert len(counts) == 4 and all(len(layer) == layout.experts for layer in counts)
    # Every routed (token, slot) pair is counted once per layer, whichever node ran the layer.
    assert len({sum(layer) for layer in counts}) == 1 and sum(counts[0]) > 0
    assert llama_binaries.imatrix is not None
    solo = run_imatrix(llama_binaries.imatrix, model, 4, layout.experts)
    assert [list(layer) for layer in solo.counts] == counts
