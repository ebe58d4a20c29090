"""app/model_fetcher.py on real overlays and a real local hub: a split catalog model is fetched file by file from
the member that lists its files, and the file that member cannot send comes from the hub, checked to be the one
the member listed, and linked into the store beside the others."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
from helpers.hub_server import local_hub
from helpers.network import network

from meshp2p.app.model_fetcher import MeshModelFetcher
from meshp2p.inference.catalog import parse_catalog
from meshp2p.inference.hub import Hub
from meshp2p.mesh.view import MeshView, PeerView
from meshp2p.p2p.model_fetch import ModelFileServer
from meshp2p.wire import model_fetch as mf
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.status import Role, StatusBody

NAMES = [f"Tiny-Split-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]


def _content_id(data: bytes) -> ContentId:
    return ContentId(hashlib.sha256(data).digest()[:16], len(data))


def _entry(name: str, repo: str) -> dict[str, object]:
    return {"name": name, "aliases": [], "source": "hub", "repo": f"tiny-org/{repo}", "revision": "main",
            "quant": "Q4_K_M", "files": [{"name": n, "sha256": None} for n in NAMES], "size_bytes": 1_000_000,
            "architecture": "llama", "experts": None, "experts_used": None, "context_length": 2048, "draft": None}


def _status(model_id: str, first: ContentId) -> StatusBody:
    return StatusBody(role=Role.HOST, ram_mb=1, vram_mb=0, gpu=None, loaded=(model_id,), load=0.0, api_port=None,
                      available=(model_id,), version="0", region=None, rtt_ms={}, files={model_id: first})


async def test_a_split_model_comes_file_by_file_from_members_and_the_hub_for_a_file_none_sends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))  # the content-id cache
    datas = [os.urandom(2 * mf.MIN_CHUNK_BYTES + 3), os.urandom(mf.MIN_CHUNK_BYTES), os.urandom(11)]
    ids = tuple(_content_id(d) for d in datas)
    held = tmp_path / "holder"
    held.mkdir()
    for name, data in zip(NAMES, datas, strict=True):
        (held / name).write_bytes(data)
    # The member lists all three files but no longer has the second on disk (say, it is being moved).
    files = {ids[0]: held / NAMES[0], ids[2]: held / NAMES[2]}
    catalog = parse_catalog({"version": 1, "models": [_entry("tiny-split", "Tiny-Split-GGUF"),
                                                      _entry("tiny-other", "Tiny-Other-GGUF")]}, source="test")
    members: set[str] = set()
    with local_hub() as hub:
        hub.add_repo("tiny-org/Tiny-Split-GGUF", dict(zip(NAMES, datas, strict=True)))
        # Another upload under the same names: its second file is not the one the member listed.
        hub.add_repo("tiny-org/Tiny-Other-GGUF", {NAMES[0]: datas[0], NAMES[1]: os.urandom(100), NAMES[2]: datas[2]})
        async with network() as net:
            a = await net.start_overlay()
            ModelFileServer(a.overlay, is_member=lambda p: str(p) in members, files=files.get,
                            parts={ids[0]: ids}.get).install()
            b = await net.start_overlay(bootstrap=(a.overlay.addrs()[0],))
            members.add(b.peer_id)
            view = MeshView(b"mesh", b.peer_id, {a.peer_id: PeerView(a.peer_id, _status("tiny-split", ids[0]), 1.0)})
            store = tmp_path / "store"
            cache = tmp_path / "hf" / "hub"
            fetcher = MeshModelFetcher(b.overlay, lambda: view, store=lambda: store,
                                       hub=lambda: Hub(endpoint=hub.endpoint, cache_dir=cache))

            fetched = await fetcher.fetch(catalog.entries[0], wait_s=1)
            assert fetched is not None
            assert fetched.paths == tuple(store / n for n in NAMES)
            assert fetched.content_id == ids[0] and fetched.parts == ids
            assert [p.read_bytes() for p in fetched.paths] == datas
            assert not fetched.paths[0].is_symlink() and not fetched.paths[2].is_symlink()
            assert fetched.paths[1].is_symlink() and fetched.paths[1].resolve().is_relative_to(cache)
            assert len(hub.made("cdn", "GET")) == 1, "only the file no member sent came from the hub"

            # The other upload's second file is not the member's: the model is left to the hub as a whole.
            view.peers = {a.peer_id: PeerView(a.peer_id, _status("tiny-other", ids[0]), 1.0)}
            store = tmp_path / "store-other"
            with caplog.at_level(logging.WARNING):
                assert await fetcher.fetch(catalog.entries[1], wait_s=1) is None
            assert f"the hub's {NAMES[1]}" in caplog.text and "is not the file the members hold" in caplog.text
            assert not (store / NAMES[1]).exists()
            assert (store / NAMES[0]).read_bytes() == datas[0], "what came from the member is kept"
