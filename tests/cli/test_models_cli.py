"""`meshp2p download`, `meshp2p models` and `meshp2p up --model NAME` as a user runs them: real processes, a real
local hub (tests/helpers/hub_server.py) on 127.0.0.1 reached through HF_ENDPOINT, HF_HOME and MESHP2P_HOME in a
temporary folder, and a test catalog (MESHP2P_CATALOG) whose entries point at tiny GGUFs on that hub."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.hub_server import GATED_TOKEN, LocalHub, local_hub
from helpers.processes import REPO, clean_environ, wait_for
from make_tiny_gguf import write_tiny_gguf

ORG = "tiny-org"
CHUNK = 10 * 1024 * 1024  # several of http_fetch's buffers
COMMAND_TIMEOUT_S = 120
SPLIT = ["Tiny-Split-Q4_K_M-00001-of-00002.gguf", "Tiny-Split-Q4_K_M-00002-of-00002.gguf"]


@dataclass(frozen=True)
class Setup:
    hub: LocalHub
    root: Path
    files: dict[str, bytes]

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in clean_environ().items()
               if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
        return {**env, "MESHP2P_HOME": str(self.root / "home"), "HF_HOME": str(self.root / "hf"),
                "HF_ENDPOINT": self.hub.endpoint, "MESHP2P_CATALOG": str(self.root / "catalog.json"),
                "COLUMNS": "200"}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "meshp2p", *args], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, cwd=REPO, env={**self.env, **env})


def _entry(name: str, repo: str, files: list[str], draft: str | None = None) -> dict[str, Any]:
    return {"name": name, "aliases": [], "source": "hub", "repo": f"{ORG}/{repo}", "revision": "main",
            "quant": "Q4_K_M", "files": [{"name": f, "sha256": None} for f in files], "size_bytes": 1_000_000,
            "architecture": "llama", "experts": None, "experts_used": None, "context_length": 2048, "draft": draft}


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("cli-ggufs")
    first = write_tiny_gguf(root / "split.gguf", "dense", seed=31, split_max_tensors=20)
    return {
        "Tiny-Chat-Q4_K_M.gguf": write_tiny_gguf(root / "chat.gguf", "dense", seed=32).read_bytes(),
        "Tiny-Draft-Q4_K_M.gguf": write_tiny_gguf(root / "draft.gguf", "dense", layers=2, seed=33).read_bytes(),
        "Tiny-Wide-Q4_K_M.gguf": write_tiny_gguf(root / "wide.gguf", "dense", layers=2, embd=512, ff=1024, heads=8,
                                                 kv_heads=4, seed=34).read_bytes(),
        SPLIT[0]: first.read_bytes(), SPLIT[1]: first.with_name("split-00002-of-00002.gguf").read_bytes(),
    }


@pytest.fixture
def setup(tmp_path: Path, ggufs: dict[str, bytes]) -> Iterator[Setup]:
    with local_hub() as hub:
        hub.add_repo(f"{ORG}/Tiny-Chat-GGUF", {k: ggufs[k] for k in ("Tiny-Chat-Q4_K_M.gguf",)})
        hub.add_repo(f"{ORG}/Tiny-Draft-GGUF", {k: ggufs[k] for k in ("Tiny-Draft-Q4_K_M.gguf",)})
        hub.add_repo(f"{ORG}/Tiny-Wide-GGUF", {k: ggufs[k] for k in ("Tiny-Wide-Q4_K_M.gguf",)})
        hub.add_repo(f"{ORG}/Tiny-Split-GGUF", {k: ggufs[k] for k in SPLIT})
        hub.add_repo(f"{ORG}/Tiny-Gated-GGUF", {"Tiny-Chat-Q4_K_M.gguf": ggufs["Tiny-Chat-Q4_K_M.gguf"]}, gated=True)
        catalog = {"version": 1, "models": [
            _entry("tiny-chat", "Tiny-Chat-GGUF", ["Tiny-Chat-Q4_K_M.gguf"], draft="tiny-draft"),
            _entry("tiny-draft", "Tiny-Draft-GGUF", ["Tiny-Draft-Q4_K_M.gguf"]),
            _entry("tiny-wide", "Tiny-Wide-GGUF", ["Tiny-Wide-Q4_K_M.gguf"]),
            _entry("tiny-split", "Tiny-Split-GGUF", SPLIT),
            _entry("tiny-gated", "Tiny-Gated-GGUF", ["Tiny-Chat-Q4_K_M.gguf"]),
        ]}
        (tmp_path / "catalog.json").write_text(json.dumps(catalog))
        yield Setup(hub, tmp_path, ggufs)


def test_download_fetches_a_model_and_its_draft_and_models_lists_them(setup):
    listed = setup.run("download", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {m["name"]: m["on_disk"] for m in json.loads(listed.stdout)["models"]} == {
        "tiny-chat": False, "tiny-draft": False, "tiny-wide": False, "tiny-split": False, "tiny-gated": False}
    assert not setup.hub.requests, "listing the catalog asks the hub nothing"

    r = setup.run("download", "tiny-chat", "--draft", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [g["id"] for g in got] == ["tiny-chat", "tiny-draft"]
    hub_cache = setup.root / "hf" / "hub"
    for g, name in zip(got, ("Tiny-Chat-Q4_K_M.gguf", "Tiny-Draft-Q4_K_M.gguf"), strict=True):
        assert Path(g["path"]).is_relative_to(hub_cache) and Path(g["path"]).read_bytes() == setup.files[name]
    assert "downloading tiny-chat: started" in r.stderr and "downloading tiny-chat: done" in r.stderr

    asked = len(setup.hub.requests)
    again = setup.run("download", "tiny-chat")
    assert again.returncode == 0 and got[0]["path"] in again.stdout.replace("\n", "")
    assert len(setup.hub.requests) == asked, "a model already downloaded is not downloaded again"

    models = setup.run("models", "--json")
    assert models.returncode == 0, models.stderr
    shown = json.loads(models.stdout)
    assert [(m["id"], m["source"]) for m in shown["on_disk"]] == [("tiny-chat", "catalog"), ("tiny-draft", "catalog")]
    assert shown["node"] is None
    table = setup.run("download")
    assert table.returncode == 0 and "tiny-chat" in table.stdout and "fits here" in table.stdout


def test_an_interrupted_download_resumes_where_it_stopped(setup):
    wide = setup.files["Tiny-Wide-Q4_K_M.gguf"]
    setup.hub.stall_after(wide, CHUNK + CHUNK // 2)
    blobs = setup.root / "hf" / "hub" / f"models--{ORG}--Tiny-Wide-GGUF" / "blobs"
    partial = blobs / (hashlib.sha256(wide).hexdigest() + ".incomplete")
    process = subprocess.Popen([sys.executable, "-m", "meshp2p", "download", "tiny-wide"], cwd=REPO, env=setup.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        sent = CHUNK + CHUNK // 2
        wait_for(lambda: partial.is_file() and partial.stat().st_size == sent, 60, "every byte sent on disk")
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it
        _, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        setup.hub.release()
    assert process.returncode == 130, stderr
    assert partial.stat().st_size == CHUNK + CHUNK // 2, "the bytes received are kept"

    r = setup.run("download", "tiny-wide", "--json")
    assert r.returncode == 0, r.stderr
    gets = setup.hub.made("cdn", "GET")
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={CHUNK + CHUNK // 2}-"]
    assert Path(json.loads(r.stdout)[0]["path"]).read_bytes() == wide and not partial.exists()


def test_offline_mode_and_gated_repos_say_what_to_do(setup):
    offline = setup.run("download", "tiny-chat", HF_HUB_OFFLINE="1")
    assert offline.returncode == 1 and "HF_HUB_OFFLINE is set" in offline.stderr
    assert not setup.hub.requests

    gated = setup.run("download", "tiny-gated")
    assert gated.returncode == 1 and "gated repo" in gated.stderr
    assert "HF_TOKEN" in gated.stderr and "accept the licence" in gated.stderr
    with_token = setup.run("download", "tiny-gated", HF_TOKEN=GATED_TOKEN)
    assert with_token.returncode == 0, with_token.stderr

    unknown = setup.run("download", "tiny-chta")
    assert unknown.returncode == 1 and "did you mean tiny-chat" in unknown.stderr


def test_up_downloads_a_model_by_name_then_serves_it(setup, node_factory, llama_binaries):
    env = {k: v for k, v in setup.env.items() if k != "MESHP2P_HOME"}  # the node's own home; the shared HF cache
    node = node_factory("--model", "tiny-split", "--solo", "--threads", "1", "--ctx-size", "2048", env=env)
    status = node.wait_ready()
    (model,) = status["models"]
    assert model["id"] == "tiny-split" and model["state"] == "ready"
    assert Path(model["path"]).name == SPLIT[0] and Path(model["path"]).is_relative_to(setup.root / "hf" / "hub")
    assert model["size_bytes"] == len(setup.files[SPLIT[0]]) + len(setup.files[SPLIT[1]])
    assert "downloading tiny-split: started" in node.output()

    answer = httpx.post(node.base_url + "/chat/completions", timeout=60,
                        json={"model": "tiny-split", "max_tokens": 4, "temperature": 0,
                              "messages": [{"role": "user", "content": "hello"}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]

    models = setup.run("models", "--json", "--console", str(node.console_port))
    assert models.returncode == 0, models.stderr
    shown = json.loads(models.stdout)
    assert [m["id"] for m in shown["on_disk"]] == ["tiny-split"]
    assert shown["node"]["mesh"] == [{"id": "tiny-split", "here": "ready", "served_by": [], "offered_by": []}]


def test_a_member_fetches_a_catalog_model_from_the_mesh_not_the_hub(setup, node_factory, bootstrap, llama_binaries,
                                                                    tmp_path):
    """A downloads tiny-chat from the hub and serves it; B, offline with an empty Hugging Face cache, asks for the
    same catalog name in the same mesh and gets the file from A over /meshp2p/model/1.0.0, then serves it. B holds
    the catalog's draft for tiny-chat (tiny-draft) already: the model that came after the start is paired with it
    exactly as one on disk at the start would be (inference/pairing.py), and llama-server gets the draft."""
    mesh = ("--mesh-name", f"fetch-{os.urandom(3).hex()}", "--bootstrap", bootstrap.addr, "--threads", "1",
            "--ctx-size", "2048")
    env = {k: v for k, v in setup.env.items() if k != "MESHP2P_HOME"}
    a = node_factory("--model", "tiny-chat", *mesh, env=env, name="a")
    a_model = next(iter(wait_model(a, "tiny-chat")))
    hub_requests = len(setup.hub.made())

    offline = {**env, "HF_HOME": str(tmp_path / "b-hf"), "HF_HUB_OFFLINE": "1"}
    draft = tmp_path / "b" / "models" / "Tiny-Draft-Q4_K_M.gguf"  # B's model store, under the catalog's file name
    draft.parent.mkdir(parents=True)
    draft.write_bytes(setup.files["Tiny-Draft-Q4_K_M.gguf"])
    b = node_factory("--model", "tiny-chat", *mesh, env=offline, name="b")
    b_model = next(iter(wait_model(b, "tiny-chat")))
    assert b.home == draft.parent.parent
    assert Path(b_model["path"]) == b.home / "models" / "Tiny-Chat-Q4_K_M.gguf"
    assert b_model["speculation"] is not None and b_model["speculation"]["draft"] == "tiny-draft", b_model
    args = Path(f"/proc/{b_model['pid']}/cmdline").read_bytes().decode().split("\0")
    assert args[args.index("--spec-draft-model") + 1] == str(draft)
    assert "tiny-chat speculates with the draft model tiny-draft" in b.output()
    assert Path(b_model["path"]).read_bytes() == setup.files["Tiny-Chat-Q4_K_M.gguf"]
    assert b_model["content_id"] == a_model["content_id"] is not None
    assert len(setup.hub.made()) == hub_requests, "B asked the hub"
    assert "fetched from 1 member" in b.output()

    answer = httpx.post(b.base_url + "/chat/completions", timeout=60,
                        json={"model": "tiny-chat", "max_tokens": 4, "temperature": 0,
                              "messages": [{"role": "user", "content": "hello"}]})
    assert answer.status_code == 200, answer.text


def test_a_member_fetches_a_split_model_from_the_mesh_file_by_file(setup, node_factory, bootstrap, llama_binaries,
                                                                   tmp_path):
    """tiny-split is two GGUF files. A downloads it from the hub and serves it; B, offline with an empty Hugging
    Face cache, asks A which files make it (`list`: their content ids), fetches each from A into its store under
    the catalog's names, and serves it with A's tokens at temperature 0. C already holds the first file (an earlier
    fetch stopped there): it fetches only the second."""
    mesh = ("--mesh-name", f"split-{os.urandom(3).hex()}", "--bootstrap", bootstrap.addr, "--threads", "1",
            "--ctx-size", "2048")
    env = {k: v for k, v in setup.env.items() if k != "MESHP2P_HOME"}
    a = node_factory("--model", "tiny-split", *mesh, env=env, name="a")
    a_model = next(iter(wait_model(a, "tiny-split")))
    hub_requests = len(setup.hub.made())
    prompt = {"model": "tiny-split", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0,
              "cache_prompt": False}

    def complete(node) -> str:
        answer = httpx.post(node.base_url + "/completions", timeout=60, json=prompt)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["choices"][0]["text"])

    expected = complete(a)
    offline = {**env, "HF_HOME": str(tmp_path / "b-hf"), "HF_HUB_OFFLINE": "1"}
    b = node_factory("--model", "tiny-split", *mesh, env=offline, name="b")
    b_model = next(iter(wait_model(b, "tiny-split")))
    store = b.home / "models"
    assert Path(b_model["path"]) == store / SPLIT[0]
    for name in SPLIT:
        assert (store / name).read_bytes() == setup.files[name], name
    assert b_model["content_id"] == a_model["content_id"] is not None
    assert b_model["size_bytes"] == a_model["size_bytes"] == sum(len(setup.files[n]) for n in SPLIT)
    assert len(setup.hub.made()) == hub_requests, "B asked the hub"
    assert "tiny-split fetched from 1 member(s): 2 files" in b.output()
    assert complete(b) == expected

    c_store = tmp_path / "c" / "models"
    c_store.mkdir(parents=True)
    (c_store / SPLIT[0]).write_bytes(setup.files[SPLIT[0]])
    held = (c_store / SPLIT[0]).stat().st_ino
    c = node_factory("--model", "tiny-split", *mesh, env={**offline, "HF_HOME": str(tmp_path / "c-hf")}, name="c")
    wait_model(c, "tiny-split")
    assert (c_store / SPLIT[1]).read_bytes() == setup.files[SPLIT[1]]
    assert (c_store / SPLIT[0]).stat().st_ino == held, "the file C held was not fetched again"
    assert complete(c) == expected


def test_a_member_too_slow_to_fetch_from_gives_way_to_the_hub(setup, node_factory, bootstrap, llama_binaries,
                                                               tmp_path):
    """A serves tiny-wide (15+ MiB) with its uploads capped at 2 Mbit/s; B must fetch at 16 Mbit/s or more: it
    starts from A, gives up once the floor's window has passed, downloads from the hub, and serves the model."""
    mesh = ("--mesh-name", f"slow-{os.urandom(3).hex()}", "--bootstrap", bootstrap.addr, "--threads", "1",
            "--ctx-size", "2048")
    env = {k: v for k, v in setup.env.items() if k != "MESHP2P_HOME"}
    a = node_factory("--model", "tiny-wide", "--max-upload-mbps", "2", *mesh, env=env, name="a")
    wait_model(a, "tiny-wide")
    wide = setup.files["Tiny-Wide-Q4_K_M.gguf"]
    gets_before = len(setup.hub.made("cdn", "GET"))

    b = node_factory("--model", "tiny-wide", "--min-fetch-mbps", "16", *mesh,
                     env={**env, "HF_HOME": str(tmp_path / "b-hf")}, name="b")
    b_model = next(iter(wait_model(b, "tiny-wide")))
    assert Path(b_model["path"]).read_bytes() == wide
    assert len(setup.hub.made("cdn", "GET")) == gets_before + 1, "B downloaded the file from the hub"
    said = " ".join(b.output().split())
    assert "below the 2.00 MB/s a fetch must keep" in said, said[-2000:]
    assert (b.home / "models" / "Tiny-Wide-Q4_K_M.gguf.partial").exists(), "what came from A is kept"


def wait_model(node, model_id: str) -> list[dict[str, Any]]:
    """The node's entry for `model_id` once that model is ready (it may come after the node itself is)."""
    node.wait_ready()
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        found[:] = [m for m in node.status()["models"] if m["id"] == model_id and m["state"] == "ready"]
        return bool(found)

    wait_for(ready, 120, f"{model_id} to be ready on {node.home.name}")
    return found
