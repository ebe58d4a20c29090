"""Content ids of local model files: the cache rules on plain data, then real files hashed once and cached."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from meshp2p.inference.content_id import (
    CACHE_VERSION,
    FILES_GOSSIP_BUDGET_BYTES,
    MAX_CACHE_ENTRIES,
    READ_CHUNK_BYTES,
    FileStamp,
    HashingStopped,
    ModelFileIds,
    cached_id,
    content_id,
    files_to_gossip,
    hash_file,
    parse_cache,
    render_cache,
    stamp_of,
    with_entry,
)
from meshp2p.inference.models import spec_from_gguf
from meshp2p.wire.model_id import content_id_of, parse_content_id

CID = content_id_of(b"abc")
STAMP = FileStamp("/models/m.gguf", 3, 1_700_000_000_123_456_789)


# -- the cache: pure ----------------------------------------------------------------------------------------------


def test_an_entry_is_used_only_for_the_same_path_size_and_mtime() -> None:
    entries = with_entry({}, STAMP, CID)
    assert cached_id(entries, STAMP) == CID
    assert cached_id(parse_cache(render_cache(entries)), STAMP) == CID
    for changed in (FileStamp("/models/other.gguf", 3, STAMP.mtime_ns), FileStamp(STAMP.path, 4, STAMP.mtime_ns),
                    FileStamp(STAMP.path, 3, STAMP.mtime_ns + 1)):
        assert cached_id(entries, changed) is None


@pytest.mark.parametrize(("entry", "size"), [
    ({"size": 3, "mtime_ns": STAMP.mtime_ns, "id": "sha256_128:nothex:3"}, 3),
    ({"size": 3, "mtime_ns": STAMP.mtime_ns}, 3),
    ({"size": 3, "mtime_ns": STAMP.mtime_ns, "id": content_id_of(b"abcd").text}, 3),  # the id's size disagrees
    ({"size": 3.0, "mtime_ns": STAMP.mtime_ns, "id": CID.text}, 3),
    ({"size": True, "mtime_ns": STAMP.mtime_ns, "id": content_id_of(b"a").text}, 1),  # JSON true is not 1
])
def test_a_damaged_entry_means_hash_again(entry: dict[str, object], size: int) -> None:
    assert cached_id({STAMP.path: entry}, FileStamp(STAMP.path, size, STAMP.mtime_ns)) is None


@pytest.mark.parametrize("text", ["", "not json", "[]", json.dumps({"v": 2, "files": {}}),
                                  json.dumps({"v": CACHE_VERSION, "files": []}), json.dumps({"files": {}})])
def test_an_unreadable_cache_counts_as_empty(text: str) -> None:
    assert parse_cache(text) == {}


def test_the_cache_keeps_the_newest_entries() -> None:
    entries = {}
    for i in range(MAX_CACHE_ENTRIES + 5):
        entries = with_entry(entries, FileStamp(f"/m/{i}.gguf", 3, i), CID)
    assert len(entries) == MAX_CACHE_ENTRIES
    assert "/m/0.gguf" not in entries and f"/m/{MAX_CACHE_ENTRIES + 4}.gguf" in entries
    # Rewriting an entry makes it the newest.
    entries = with_entry(entries, FileStamp("/m/5.gguf", 3, 99), CID)
    assert list(entries)[-1] == "/m/5.gguf" and len(entries) == MAX_CACHE_ENTRIES


def test_gossiped_files_are_the_offered_ones_within_the_status_budget() -> None:
    ids = {"a": CID, "b": content_id_of(b"b"), "dropped": CID}
    assert files_to_gossip(ids, ["b", "a", "unhashed"]) == {"b": ids["b"], "a": CID}
    many = {f"{i:0128d}": CID for i in range(64)}
    files = files_to_gossip(many, list(many))
    assert 0 < len(files) < 64
    assert sum(len(m) + len(c.text) + 4 for m, c in files.items()) <= FILES_GOSSIP_BUDGET_BYTES


# -- real files ---------------------------------------------------------------------------------------------------


def test_hash_file_is_sha256_of_the_whole_file(tmp_path: Path) -> None:
    data = os.urandom(2 * READ_CHUNK_BYTES + 123)
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    seen: list[int] = []
    cid = hash_file(path, seen.append)
    assert cid.digest == hashlib.sha256(data).digest()[:16] and cid.size == len(data)
    assert seen == [READ_CHUNK_BYTES, 2 * READ_CHUNK_BYTES, len(data)]
    stop = threading.Event()
    stop.set()
    with pytest.raises(HashingStopped):
        hash_file(path, stop=stop)


async def test_a_file_is_hashed_once_then_read_from_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"abc")
    cache = tmp_path / "home" / "cache" / "content-ids.json"
    assert await content_id(path, cache_file=cache) == CID
    stored = json.loads(cache.read_text())
    assert stored["files"][str(path.resolve())]["id"] == CID.text

    # A cached entry is trusted while the file looks unchanged (the cache says so, not the bytes).
    planted = content_id_of(b"xyz")
    stored["files"][str(path.resolve())]["id"] = planted.text
    cache.write_text(json.dumps(stored))
    assert await content_id(path, cache_file=cache) == planted
    # Through a symlink it is the same file (the key is the resolved path).
    link = tmp_path / "link.gguf"
    link.symlink_to(path)
    assert await content_id(link, cache_file=cache) == planted

    # Another file written in its place (new mtime) is hashed again and replaces the entry.
    path.write_bytes(b"abd")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert await content_id(path, cache_file=cache) == content_id_of(b"abd")
    assert parse_content_id(json.loads(cache.read_text())["files"][str(path.resolve())]["id"]) == content_id_of(b"abd")
    assert stamp_of(link) == stamp_of(path)


async def test_model_file_ids_fills_in_every_model(tmp_path: Path, tiny_models) -> None:
    changes = []
    ids = ModelFileIds(cache_file=tmp_path / "ids.json")
    specs = [spec_from_gguf(tiny_models.dense), spec_from_gguf(tiny_models.other),
             spec_from_gguf(tiny_models.dense, model_id="same-file-other-name")]
    await ids.run(specs, lambda: changes.append(dict(ids.ids)))
    assert ids.done.is_set() and not ids.hashing and not ids.errors
    assert ids.ids["tiny-dense"] == ids.ids["same-file-other-name"] == content_id_of(tiny_models.dense.read_bytes())
    assert ids.ids["tiny-other"] != ids.ids["tiny-dense"]
    assert len(changes) == 3 and len(changes[0]) == 1


def _split_model(folder: Path) -> tuple[Path, ...]:
    from make_tiny_gguf import write_tiny_gguf

    first = write_tiny_gguf(folder / "split.gguf", "dense", seed=31, split_max_tensors=20)
    paths = tuple(sorted(folder.glob("split-*-of-*.gguf")))
    assert len(paths) >= 2 and paths[0] == first
    return paths


async def test_a_split_model_is_named_by_its_first_file_and_every_file_is_hashed(tmp_path: Path) -> None:
    """Gossip names a split GGUF by its first file; members fetching it ask for all of them (`parts`)."""
    from meshp2p.inference.models import spec_from_parts

    paths = _split_model(tmp_path)
    first = paths[0]
    ids = ModelFileIds(cache_file=tmp_path / "ids.json")
    await ids.run([spec_from_parts(paths, model_id="tiny-split"), spec_from_gguf(paths[0], model_id="whole")])
    assert ids.parts["tiny-split"] == tuple(content_id_of(p.read_bytes()) for p in paths)
    assert ids.ids["tiny-split"] == ids.ids["whole"] == content_id_of(first.read_bytes())
    assert "whole" not in ids.parts
