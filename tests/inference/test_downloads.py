"""Models by name from a Hugging Face hub: a real local hub (tests/helpers/hub_server.py) on 127.0.0.1 speaking the
protocol as huggingface_hub uses it, a real HF cache in a temporary folder, real GGUF files.

Each test names its hub and cache explicitly (`Hub(endpoint, cache_dir)`): huggingface_hub reads HF_ENDPOINT and
HF_HOME once, at import, so the environment variables themselves are tested through the CLI (tests/cli/).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.hub_server import GATED_TOKEN, LocalHub, local_hub
from make_tiny_gguf import write_tiny_gguf

from meshp2p.errors import AccessDenied, ChecksumMismatch, ModelNotFound, NotDownloaded, NotEnoughDisk
from meshp2p.inference.catalog import Catalog, parse_catalog
from meshp2p.inference.gguf_names import pick_quant
from meshp2p.inference.hub import Hub, RemoteFile
from meshp2p.inference.on_disk import local_models
from meshp2p.inference.progress import ProgressSink
from meshp2p.inference.resolve import resolve_model

REPO_ID = "tiny-org/Tiny-Chat-GGUF"
CHUNK = 10 * 1024 * 1024  # a size that spans several of http_fetch's buffers


@dataclass(frozen=True)
class Files:
    dense: bytes
    wide: bytes  # over two download chunks: for resuming
    parts: tuple[bytes, bytes]  # a split GGUF


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("ggufs")
    dense = write_tiny_gguf(root / "dense.gguf", "dense", seed=21).read_bytes()
    wide = write_tiny_gguf(root / "wide.gguf", "dense", layers=2, embd=512, ff=1024, heads=8, kv_heads=4,
                           seed=22).read_bytes()
    first = write_tiny_gguf(root / "split.gguf", "dense", seed=23, split_max_tensors=20)
    second = first.with_name("split-00002-of-00002.gguf")
    assert len(wide) > 2 * CHUNK - CHUNK // 2
    return Files(dense, wide, (first.read_bytes(), second.read_bytes()))


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with local_hub() as server:
        yield server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "home"


def hub_for(server: LocalHub, tmp_path: Path, **kwargs: Any) -> Hub:
    return Hub(endpoint=server.endpoint, cache_dir=tmp_path / "hf" / "hub", offline=kwargs.pop("offline", False))


def catalog(*entries: dict[str, Any]) -> Catalog:
    return parse_catalog({"version": 1, "models": list(entries)}, source="test")


def entry(name: str, files: list[str], *, repo: str = REPO_ID, sha256: list[str | None] | None = None,
          **extra: Any) -> dict[str, Any]:
    pins = sha256 or [None] * len(files)
    return {"name": name, "aliases": extra.pop("aliases", []), "source": "hub", "repo": repo, "revision": "main",
            "quant": extra.pop("quant", "Q4_K_M"),
            "files": [{"name": f, "sha256": s} for f, s in zip(files, pins, strict=True)],
            "size_bytes": 1000, "architecture": "llama", "experts": None, "experts_used": None,
            "context_length": 2048, "draft": None, **extra}


class Recorder:
    """A ProgressSink that keeps what it was told."""

    def __init__(self) -> None:
        self.begun: list[tuple[str, int]] = []
        self.done = 0
        self.stages: list[str | None] = []

    def begin(self, title: str, *, total: int, unit: str) -> None:
        self.begun.append((title, total))

    def update(self, *, completed: int | None = None, advance: int = 0, stage: str | None = None) -> None:
        self.done += advance
        if stage is not None:
            self.stages.append(stage)

    def say(self, text: str) -> None:
        pass

    def end(self, *, stage: str | None = None, keep: bool = True) -> None:
        self.stages.append(stage)


def test_a_catalog_model_downloads_into_the_hf_cache_and_a_second_resolve_asks_nothing(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense, "README.md": b"# tiny\n"})
    cat = catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"], aliases=["Tiny"]))
    progress = Recorder()
    spec = resolve_model("TINY", catalog=cat, hub=hub_for(hub, tmp_path), progress=progress)

    assert spec.id == "tiny-chat" and spec.size_bytes == len(files.dense) and spec.architecture == "llama"
    assert spec.path.read_bytes() == files.dense
    commit = hub.repos[REPO_ID].commit
    cache = (tmp_path / "hf" / "hub").resolve()
    assert spec.path == cache / "models--tiny-org--Tiny-Chat-GGUF" / "snapshots" / commit / "Tiny-Chat-Q4_K_M.gguf"
    blob = spec.path.resolve()
    assert blob.name == hashlib.sha256(files.dense).hexdigest() and blob.parent.name == "blobs"
    assert not list(blob.parent.glob("*.incomplete"))
    assert progress.begun == [("downloading tiny-chat", len(files.dense))] and progress.done == len(files.dense)
    assert [r.headers.get("range") for r in hub.made("cdn")] == [None]

    asked = len(hub.requests)
    again = resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path))
    assert again == spec and len(hub.requests) == asked, "a model in the cache is used without a request"
    listed = local_models(cat, hub_for(hub, tmp_path))
    assert [(m.id, m.source, m.paths) for m in listed] == [("tiny-chat", "catalog", (spec.path,))]


def test_a_cut_connection_resumes_with_a_range_request_and_the_file_is_whole(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Wide-Q4_K_M.gguf": files.wide})
    hub.cut_after(files.wide, CHUNK + CHUNK // 2)
    spec = resolve_model(f"hf://{REPO_ID}/Wide-Q4_K_M.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path))

    gets = hub.made("cdn", "GET")
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={CHUNK + CHUNK // 2}-"], "nothing received is lost"
    assert hashlib.sha256(spec.path.read_bytes()).digest() == hashlib.sha256(files.wide).digest()
    assert spec.id == "Wide-Q4_K_M"


def test_a_file_whose_sha256_is_not_the_hubs_is_rejected_and_removed(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense})
    hub.corrupt(files.dense)
    with pytest.raises(ChecksumMismatch, match="does not match its sha256") as caught:
        resolve_model("tiny-chat", catalog=catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"])),
                      hub=hub_for(hub, tmp_path))
    assert "it was removed" in caught.value.message and caught.value.hint
    repo_dir = tmp_path / "hf" / "hub" / "models--tiny-org--Tiny-Chat-GGUF"
    assert not [p for p in (repo_dir / "blobs").iterdir()], "neither the bad blob nor a partial is left"
    assert not (repo_dir / "snapshots").exists()


def test_a_catalog_pin_the_hub_does_not_match_fails_before_downloading(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense})
    cat = catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"], sha256=["0" * 64]))
    with pytest.raises(ChecksumMismatch, match="the catalog pins"):
        resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path))
    assert not hub.made("cdn")


def test_a_gated_repo_says_to_set_hf_token_and_works_with_it(files, hub, home, tmp_path, monkeypatch):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense}, gated=True)
    cat = catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"]))
    with pytest.raises(AccessDenied) as caught:
        resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path))
    assert "gated" in caught.value.message and "401" in caught.value.message
    assert "HF_TOKEN" in caught.value.hint and f"https://huggingface.co/{REPO_ID}" in caught.value.hint

    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)
    spec = resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path))
    assert spec.path.read_bytes() == files.dense
    assert all("authorization" not in r.headers for r in hub.made("cdn")), "the token never goes to the CDN"


def test_a_missing_repo_or_file_is_model_not_found(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense})
    with pytest.raises(ModelNotFound, match="there is no repo nobody/Nothing-GGUF"):
        resolve_model("hf://nobody/Nothing-GGUF/x.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path))
    with pytest.raises(ModelNotFound, match=f"{REPO_ID} has no file Other.gguf"):
        resolve_model(f"hf://{REPO_ID}/Other.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path))
    with pytest.raises(ModelNotFound, match="has no GGUF file of quantisation Q8_0") as caught:
        resolve_model(f"{REPO_ID}:Q8_0", catalog=catalog(), hub=hub_for(hub, tmp_path))
    assert "Tiny-Chat-Q4_K_M" in caught.value.hint


def test_a_catalog_file_gone_from_its_repo_falls_back_to_the_repos_file_of_its_quant(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Renamed-Q4_K_M.gguf": files.dense})
    cat = catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"]))
    spec = resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path))
    assert spec.id == "tiny-chat" and spec.path.name == "Tiny-Chat-Renamed-Q4_K_M.gguf"
    asked = len(hub.requests)
    assert resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path)) == spec
    assert len(hub.requests) == asked


def test_offline_a_missing_file_is_a_clear_error_and_a_present_one_needs_no_request(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense})
    cat = catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"]))
    with pytest.raises(NotDownloaded, match="HF_HUB_OFFLINE is set") as caught:
        resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path, offline=True))
    assert "meshp2p download" in caught.value.hint
    with pytest.raises(NotDownloaded, match="HF_HUB_OFFLINE is set"):
        resolve_model(f"{REPO_ID}:Q4_K_M", catalog=cat, hub=hub_for(hub, tmp_path, offline=True))
    assert not hub.requests

    online = resolve_model("tiny-chat", catalog=cat, hub=hub_for(hub, tmp_path))
    asked = len(hub.requests)
    offline = hub_for(hub, tmp_path, offline=True)
    assert resolve_model("tiny-chat", catalog=cat, hub=offline) == online
    assert resolve_model(f"{REPO_ID}:q4_k_m", catalog=cat, hub=offline).path == online.path
    assert len(hub.requests) == asked


def test_a_client_node_never_downloads(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense})
    with pytest.raises(NotDownloaded, match="--client node"):
        resolve_model("tiny-chat", catalog=catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"])),
                      hub=hub_for(hub, tmp_path), allow_download=False)
    assert not hub.requests


def test_split_files_are_one_model_served_from_the_first_part(files, hub, home, tmp_path):
    names = ["Tiny-Split-Q4_K_M-00001-of-00002.gguf", "Tiny-Split-Q4_K_M-00002-of-00002.gguf"]
    hub.add_repo(REPO_ID, dict(zip(names, files.parts, strict=True)))
    progress = Recorder()
    spec = resolve_model("tiny-split", catalog=catalog(entry("tiny-split", names)), hub=hub_for(hub, tmp_path),
                         progress=progress)
    assert spec.path.name == names[0] and [p.name for p in spec.files] == names
    assert spec.files[0].parent == spec.files[1].parent, "llama.cpp finds the other parts beside the first"
    assert [p.read_bytes() for p in spec.files] == list(files.parts)
    assert spec.size_bytes == sum(map(len, files.parts)) and spec.architecture == "llama"
    assert progress.begun == [("downloading tiny-split", spec.size_bytes)] and names[1] in progress.stages

    by_part = resolve_model(f"hf://{REPO_ID}/{names[1]}", catalog=catalog(), hub=hub_for(hub, tmp_path))
    assert by_part.files == spec.files and by_part.id == "Tiny-Split-Q4_K_M"


def test_owner_repo_quant_picks_the_file_of_that_quant(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Tiny-Q4_K_S.gguf": files.wide, "Tiny-Q4_K_M.gguf": files.dense,
                           "mmproj-Tiny-Q4_K_M.gguf": b"projector", "Tiny-Q8_0-00001-of-00002.gguf": files.parts[0],
                           "Tiny-Q8_0-00002-of-00002.gguf": files.parts[1], "README.md": b"# tiny\n"},
                 not_lfs=frozenset({"README.md"}))
    spec = resolve_model(f"{REPO_ID}:q4_k_m", catalog=catalog(), hub=hub_for(hub, tmp_path))
    assert spec.path.name == "Tiny-Q4_K_M.gguf" and spec.id == "Tiny-Q4_K_M"
    split = resolve_model(f"{REPO_ID}:Q8_0", catalog=catalog(), hub=hub_for(hub, tmp_path))
    assert [p.name for p in split.files] == ["Tiny-Q8_0-00001-of-00002.gguf", "Tiny-Q8_0-00002-of-00002.gguf"]
    assert [r.path.split("?")[0] for r in hub.made("hub", "GET")][:1] == [f"/api/models/{REPO_ID}/revision/main"]


def test_pick_quant_matches_whole_tags_only():
    names = ["a/M-Q4_K_M.gguf", "a/M-Q4_K.gguf", "M-UD-Q4_K_XL.gguf", "M-IQ4_XS.gguf", "M-f16.gguf"]
    assert pick_quant(names, "Q4_K", repo="r") == ("a/M-Q4_K.gguf",)
    assert pick_quant(names, "q4_k_m", repo="r") == ("a/M-Q4_K_M.gguf",)
    assert pick_quant(names, "IQ4_XS", repo="r") == ("M-IQ4_XS.gguf",)
    with pytest.raises(ModelNotFound, match="matches several models"):
        pick_quant(["x/M-Q4_0.gguf", "y/M-Q4_0.gguf"], "Q4_0", repo="r")
    with pytest.raises(ModelNotFound, match="lists 1 of the 3 parts"):
        pick_quant(["M-Q4_0-00001-of-00003.gguf"], "Q4_0", repo="r")


def test_no_room_on_disk_is_refused_before_any_byte_moves(files, hub, home, tmp_path, monkeypatch):
    hub.add_repo(REPO_ID, {"Tiny-Chat-Q4_K_M.gguf": files.dense})
    real = shutil.disk_usage

    def nearly_full(path: Any) -> Any:  # the one edge a test cannot reach: a full disk
        usage = real(path)
        return type(usage)(usage.total, usage.total - 1000, 1000)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    with pytest.raises(NotEnoughDisk) as caught:
        resolve_model("tiny-chat", catalog=catalog(entry("tiny-chat", ["Tiny-Chat-Q4_K_M.gguf"])),
                      hub=hub_for(hub, tmp_path))
    assert f"needs {len(files.dense) / 1e6:.2f} MB more" in caught.value.message
    assert "0.00 MB free" in caught.value.message
    assert str(tmp_path) in caught.value.message and "HF_HOME" in caught.value.hint
    assert not hub.made("cdn")


def test_an_unknown_name_gets_the_closest_catalog_names(home):
    with pytest.raises(ModelNotFound) as caught:
        resolve_model("qwen2.5-32b-instrct")
    assert "model 'qwen2.5-32b-instrct' not found" in caught.value.message
    assert "did you mean qwen2.5-32b-instruct" in caught.value.hint


class Peers:
    """A PeerSource holding some files, as mesh members would (the seam issue 13's peer fetch plugs into)."""

    def __init__(self, held: dict[str, bytes]) -> None:
        self.held = held
        self.asked: list[str] = []

    def fetch(self, remote: RemoteFile, into: Path, progress: ProgressSink) -> bool:
        self.asked.append(remote.file.filename)
        data = self.held.get(remote.sha256 or "")
        if data is None:
            return False
        into.write_bytes(data)
        return True


def test_a_peer_source_is_asked_first_and_checked_like_the_hub(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"A-Q4_K_M.gguf": files.dense, "B-Q4_K_M.gguf": files.wide})
    peers = Peers({hashlib.sha256(files.dense).hexdigest(): files.dense})
    spec = resolve_model(f"hf://{REPO_ID}/A-Q4_K_M.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path), peers=peers)
    assert spec.path.read_bytes() == files.dense and peers.asked == ["A-Q4_K_M.gguf"] and not hub.made("cdn")

    liar = Peers({hashlib.sha256(files.wide).hexdigest(): files.dense})
    with pytest.raises(ChecksumMismatch):
        resolve_model(f"hf://{REPO_ID}/B-Q4_K_M.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path), peers=liar)


def test_received_hears_each_byte_from_the_hub_once_and_none_for_a_cached_model(files, hub, home, tmp_path):
    hub.add_repo(REPO_ID, {"Wide-Q4_K_M.gguf": files.wide})
    hub.cut_after(files.wide, CHUNK + CHUNK // 2)  # a resumed range counts only what it brought
    received: list[int] = []
    resolve_model(f"hf://{REPO_ID}/Wide-Q4_K_M.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path),
                  received=received.append)
    assert sum(received) == len(files.wide)
    again: list[int] = []
    resolve_model(f"hf://{REPO_ID}/Wide-Q4_K_M.gguf", catalog=catalog(), hub=hub_for(hub, tmp_path),
                  received=again.append)
    assert again == []
