"""Speculative decoding as a user runs it: real `meshp2p up` processes and real llama-servers on tiny GGUFs.

- a catalog pairing (MESHP2P_CATALOG, a local hub) reaches llama-server's command line and the model loads;
- a draft of another vocabulary is refused before any llama-server starts;
- n-gram speculation and a draft give the same tokens as no speculation at temperature 0, on a prompt that repeats;
- /api/status shows each model's speculation and its acceptance (a model used as its own draft accepts every token).
How the pieces decide, without processes: tests/inference/test_speculation.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.hub_server import local_hub
from helpers.processes import REPO, NodeProcess, clean_environ, start_node, stop_all, wait_for
from make_tiny_gguf import write_tiny_gguf

from meshp2p.inference.catalog import load_catalog
from meshp2p.inference.hub import Hub
from meshp2p.inference.resolve import Resolver

ORG = "tiny-org"
COMMAND_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
#: Speculation counters are read every 2 s (inference/spec_metrics.py): a few reads at most.
STATUS_TIMEOUT_S = 30
#: Repeats; the tiny model (seed 51) answers it with a loop, in which n-gram lookup finds drafts.
PROMPT = "abcdefgh " * 20
UP = ("--solo", "--threads", "1", "--ctx-size", "2048")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def complete(node: NodeProcess, model: str, tokens: int = 96) -> str:
    answer = httpx.post(node.base_url + "/completions", timeout=REQUEST_TIMEOUT_S,
                        json={"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0})
    assert answer.status_code == 200, answer.text
    text: str = answer.json()["choices"][0]["text"]
    return text


def speculation(node: NodeProcess) -> dict[str, Any] | None:
    found: dict[str, Any] | None = node.status()["models"][0]["speculation"]
    return found


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("spec-models")
    return {"tiny": write_tiny_gguf(root / "tiny.gguf", "dense", seed=51),
            "reversed": write_tiny_gguf(root / "reversed.gguf", "dense", seed=52, vocab="ascii-reversed")}


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path],
                llama_binaries: Any) -> Iterator[dict[str, NodeProcess]]:
    """The same tiny model three ways: no speculation, --spec ngram, and itself as its own --draft."""
    root = tmp_path_factory.mktemp("spec-nodes")
    tiny = str(models["tiny"])
    nodes: dict[str, NodeProcess] = {}
    try:
        nodes["off"] = start_node(root / "off", "--model", tiny, *UP)
        nodes["ngram"] = start_node(root / "ngram", "--model", tiny, "--spec", "ngram", *UP)
        nodes["draft"] = start_node(root / "draft", "--model", tiny, "--draft", tiny, *UP)
        for node in nodes.values():
            node.wait_ready()
        yield nodes
    finally:
        stop_all(list(nodes.values()))


def test_speculation_gives_the_same_tokens_as_none(three_nodes):
    texts = {name: complete(node, "tiny") for name, node in three_nodes.items()}
    assert len(texts["off"]) > 50
    assert texts["ngram"] == texts["off"]
    assert texts["draft"] == texts["off"]
    ngram = wait_for_drafts(three_nodes["ngram"])
    assert ngram["mode"] == "ngram" and ngram["draft"] is None
    assert ngram["drafted_tokens"] > 0, "the repeating text was speculated on"
    assert speculation(three_nodes["off"]) is None


def test_status_shows_the_acceptance_of_a_draft(three_nodes, models):
    node = three_nodes["draft"]
    status = node.status()["models"][0]
    args = cmdline(status["pid"])
    assert args[args.index("--spec-draft-model") + 1] == str(models["tiny"])
    assert args[args.index("--spec-type") + 1] == "draft-simple"
    before = speculation(node)
    assert before is not None
    complete(node, "tiny")
    shown = wait_for_drafts(node, more_than=before["drafted_tokens"])
    assert shown["mode"] == "draft" and shown["draft"] == "tiny"
    assert shown["accepted_tokens"] == shown["drafted_tokens"] > 0, "a model accepts every token it drafted itself"
    assert shown["acceptance_rate"] == 1.0
    table = subprocess.run([sys.executable, "-m", "meshp2p", "status", "--console", str(node.console_port)],
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=REPO,
                           env={**clean_environ(), "COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    # llama-server may still be adding this request's drafts to /metrics between the two reads: at least as many.
    drafted_in_table = re.search(r"tiny, 100% of (\d+) accepted", table.stdout)
    assert drafted_in_table is not None, table.stdout
    assert int(drafted_in_table[1]) >= shown["drafted_tokens"]


def wait_for_drafts(node: NodeProcess, more_than: int = 0) -> dict[str, Any]:
    """The node's speculation once its draft count is past `more_than` (the counters are read every 2 s)."""
    wait_for(lambda: (speculation(node) or {}).get("drafted_tokens", 0) > more_than, STATUS_TIMEOUT_S,
             f"draft counts in {node.home.name}'s /api/status")
    shown = speculation(node)
    assert shown is not None
    return shown


def test_a_draft_of_another_vocabulary_is_refused_before_anything_starts(tmp_path, models, llama_binaries):
    home = tmp_path / "home"
    r = subprocess.run([sys.executable, "-m", "meshp2p", "up", "--no-build", *UP, "--model", str(models["tiny"]),
                        "--draft", str(models["reversed"])], capture_output=True, text=True,
                       timeout=COMMAND_TIMEOUT_S, cwd=REPO,
                       env={**clean_environ(), "MESHP2P_HOME": str(home), "COLUMNS": "200"})
    assert r.returncode == 1, r.stderr
    assert "the draft model reversed cannot speculate for tiny: token 259 differs" in r.stderr
    assert "--spec ngram" in r.stderr
    assert not list((home / "logs").glob("llama-server-*.log")), "no llama-server was started"


def test_the_catalog_pairs_a_downloaded_draft_and_llama_server_loads_it(tmp_path, node_factory, llama_binaries):
    made = tmp_path / "made"
    made.mkdir()
    chat = write_tiny_gguf(made / "chat.gguf", "dense", seed=53).read_bytes()
    draft = write_tiny_gguf(made / "draft.gguf", "dense", layers=2, seed=54).read_bytes()
    with local_hub() as hub:
        hub.add_repo(f"{ORG}/Tiny-Chat-GGUF", {"Tiny-Chat-Q4_K_M.gguf": chat})
        hub.add_repo(f"{ORG}/Tiny-Draft-GGUF", {"Tiny-Draft-Q4_K_M.gguf": draft})
        entries = [("tiny-chat", "Tiny-Chat", "tiny-draft"), ("tiny-draft", "Tiny-Draft", None)]
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps({"version": 1, "models": [
            {"name": name, "aliases": [], "source": "hub", "repo": f"{ORG}/{repo}-GGUF", "revision": "main",
             "quant": "Q4_K_M", "files": [{"name": f"{repo}-Q4_K_M.gguf", "sha256": None}], "size_bytes": 1_000_000,
             "architecture": "llama", "experts": None, "experts_used": None, "context_length": 2048, "draft": paired}
            for name, repo, paired in entries]}))
        # The draft is on disk (as `meshp2p download tiny-chat --draft` leaves it); the model itself is not.
        on_disk = Resolver(catalog=load_catalog(catalog),
                           hub=Hub(endpoint=hub.endpoint, cache_dir=tmp_path / "hf" / "hub")).resolve("tiny-draft")
        env = {k: v for k, v in clean_environ().items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE")}
        env.update({"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.endpoint, "MESHP2P_CATALOG": str(catalog)})
        paired_node = node_factory("--model", "tiny-chat", *UP, env=env)
        status = paired_node.wait_ready()["models"][0]
    unpaired = node_factory("--model", "tiny-chat", "--no-draft", *UP, env={**env, "HF_HUB_OFFLINE": "1"})
    unpaired.wait_ready()

    assert status["speculation"] == {"mode": "draft", "draft": "tiny-draft", "drafted_tokens": 0,
                                     "accepted_tokens": 0, "acceptance_rate": None}
    args = cmdline(status["pid"])
    assert args[args.index("--spec-draft-model") + 1] == str(on_disk.path)
    assert "tiny-chat speculates with the draft model tiny-draft" in paired_node.output()
    assert complete(paired_node, "tiny-chat", tokens=16)
    llama_log = (paired_node.home / "logs" / "llama-server-tiny-chat.log").read_text()
    assert f"loading draft model '{on_disk.path}'" in llama_log
    assert speculation(unpaired) is None
    assert "--spec-draft-model" not in cmdline(unpaired.status()["models"][0]["pid"])
