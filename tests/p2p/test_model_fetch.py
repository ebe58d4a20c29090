"""`/meshp2p/model/1.0.0` between real overlays on loopback: one peer, several at once, a peer whose chunks are
bad, an outsider, and fetches interrupted again and again that resume where they stopped; the files of a split model
listed by their holders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio
from helpers.network import Node, network

from meshp2p.p2p.model_fetch import FetchFailed, ModelFileServer, fetch_model_file, list_parts
from meshp2p.p2p.streams import FramedStream
from meshp2p.wire import model_fetch as mf
from meshp2p.wire.model_id import ContentId

SIZE = 10 * mf.MIN_CHUNK_BYTES + 12345


def _content_id(data: bytes) -> ContentId:
    return ContentId(hashlib.sha256(data).digest()[:16], len(data))


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, bytes, ContentId]:
    data = os.urandom(SIZE)
    path = tmp_path / "holder" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(data)
    return path, data, _content_id(data)


async def _holders(net, count: int, offered: dict[ContentId, Path], members: set[str]) -> list[Node]:
    nodes = [await net.start_overlay() for _ in range(count)]
    for node in nodes:
        ModelFileServer(node.overlay, is_member=lambda p: str(p) in members, files=offered.get).install()
    return nodes


async def _fetcher(net, holders: list[Node]) -> Node:
    node = await net.start_overlay(bootstrap=tuple(h.overlay.addrs()[0] for h in holders))
    return node


async def test_a_member_fetches_a_file_from_one_peer(model, tmp_path: Path):
    path, data, cid = model
    members: set[str] = set()
    async with network() as net:
        (a,) = await _holders(net, 1, {cid: path}, members)
        b = await _fetcher(net, [a])
        members.add(b.peer_id)
        seen: list[int] = []
        arrived: list[int] = []
        report = await fetch_model_file(b.overlay, cid, [a.overlay.peer_id], tmp_path / "got" / "tiny.gguf",
                                        on_progress=seen.append, on_bytes=arrived.append)
        assert report.path.read_bytes() == data
        assert sum(arrived) == SIZE and len(arrived) == len(seen)
        assert report.delivered == {a.peer_id: mf.chunk_count(SIZE)} and report.dropped == {}
        assert seen[-1] == SIZE and seen == sorted(seen)
        assert not (tmp_path / "got" / "tiny.gguf.partial").exists()
        assert not (tmp_path / "got" / "tiny.gguf.partial.json").exists()


async def test_two_peers_share_one_fetch(model, tmp_path: Path):
    path, data, cid = model
    members: set[str] = set()
    async with network() as net:
        holders = await _holders(net, 2, {cid: path}, members)
        b = await _fetcher(net, holders)
        members.add(b.peer_id)
        report = await fetch_model_file(b.overlay, cid, [h.overlay.peer_id for h in holders], tmp_path / "x.gguf")
        assert report.path.read_bytes() == data
        assert set(report.delivered) == {h.peer_id for h in holders} and all(report.delivered.values())
        assert sum(report.delivered.values()) == mf.chunk_count(SIZE)


async def test_a_peer_sending_a_bad_chunk_is_dropped_and_the_file_completes_from_the_other(model, tmp_path: Path):
    """The bad peer cut its manifest from the good file, which then changed on its disk (rot, a partial copy)."""
    path, data, cid = model
    rotten = tmp_path / "rotten.gguf"
    spoiled = bytearray(data)
    for offset in range(17, SIZE, mf.MIN_CHUNK_BYTES):  # one byte in every chunk: whichever it is handed is bad
        spoiled[offset] ^= 0xFF
    rotten.write_bytes(bytes(spoiled))
    members: set[str] = set()
    async with network() as net:
        good = await net.start_overlay()
        bad = await net.start_overlay()
        ModelFileServer(good.overlay, is_member=lambda p: str(p) in members, files={cid: path}.get).install()
        bad_server = ModelFileServer(bad.overlay, is_member=lambda p: str(p) in members, files={cid: rotten}.get)
        bad_server._manifests[cid] = mf.manifest_of(SIZE, (data[o:o + mf.MIN_CHUNK_BYTES]
                                                           for o in range(0, SIZE, mf.MIN_CHUNK_BYTES)))
        bad_server.install()
        b = await _fetcher(net, [good, bad])
        members.add(b.peer_id)
        report = await fetch_model_file(b.overlay, cid, [bad.overlay.peer_id, good.overlay.peer_id],
                                        tmp_path / "x.gguf")
        assert report.path.read_bytes() == data
        assert report.dropped == {bad.peer_id: "bad_chunk"}
        assert b.overlay.rejects.as_dict().get("model_fetch:bad_chunk") == 1
        assert report.delivered == {good.peer_id: mf.chunk_count(SIZE)}


async def test_an_outsider_is_refused_and_counted(model, tmp_path: Path):
    path, _, cid = model
    async with network() as net:
        (a,) = await _holders(net, 1, {cid: path}, members=set())
        b = await _fetcher(net, [a])
        with pytest.raises(FetchFailed, match="not_member"):
            await fetch_model_file(b.overlay, cid, [a.overlay.peer_id], tmp_path / "x.gguf")
        assert a.overlay.rejects.as_dict() == {"model_fetch:not_member": 1}
        assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.partial").exists()


async def test_a_file_nobody_offers_is_not_found(model, tmp_path: Path):
    path, _, cid = model
    other = ContentId(bytes(16), 5)
    members: set[str] = set()
    async with network() as net:
        (a,) = await _holders(net, 1, {cid: path}, members)
        b = await _fetcher(net, [a])
        members.add(b.peer_id)
        with pytest.raises(FetchFailed, match="not_found"):
            await fetch_model_file(b.overlay, other, [a.overlay.peer_id], tmp_path / "x.gguf")


async def test_a_fetch_interrupted_ten_times_resumes_each_time_and_never_fetches_a_chunk_twice(model, tmp_path):
    path, data, cid = model
    target = tmp_path / "x.gguf"
    members: set[str] = set()
    async with network() as net:
        (a,) = await _holders(net, 1, {cid: path}, members)
        b = await _fetcher(net, [a])
        members.add(b.peer_id)
        fetched = 0
        for round_ in range(10):
            with trio.CancelScope() as scope:
                def stop_after_one(done: int, scope: trio.CancelScope = scope) -> None:
                    scope.cancel()
                report = await fetch_model_file(b.overlay, cid, [a.overlay.peer_id], target,
                                                on_progress=stop_after_one)
            assert scope.cancelled_caught, f"round {round_}: the fetch finished instead of stopping"
            fetched += 1
            assert not target.exists()
        arrived: list[int] = []
        report = await fetch_model_file(b.overlay, cid, [a.overlay.peer_id], target, on_bytes=arrived.append)
        assert report.path.read_bytes() == data
        # What former rounds left is not counted again as arrived (the short last chunk may be among it).
        left, chunk = SIZE - sum(arrived), mf.MIN_CHUNK_BYTES
        assert left in (report.resumed_chunks * chunk, (report.resumed_chunks - 1) * chunk + SIZE % chunk)
        # At least one chunk per interrupted round was kept; the last round fetched only what was missing.
        assert report.resumed_chunks >= fetched
        assert report.resumed_chunks + sum(report.delivered.values()) == mf.chunk_count(SIZE)


async def test_a_holder_killed_mid_fetch_leaves_a_partial_file_another_holder_completes(model, tmp_path: Path):
    path, data, cid = model
    target = tmp_path / "x.gguf"
    members: set[str] = set()
    async with network() as net:
        first, second = await _holders(net, 2, {cid: path}, members)
        b = await _fetcher(net, [first, second])
        members.add(b.peer_id)

        def kill_at_half(done: int) -> None:
            if done >= SIZE // 2:
                first.kill()

        with pytest.raises(FetchFailed, match="stopped before it was whole"):
            await fetch_model_file(b.overlay, cid, [first.overlay.peer_id], target, on_progress=kill_at_half,
                                   chunk_timeout_s=5.0)
        assert not target.exists() and (tmp_path / "x.gguf.partial").exists()
        report = await fetch_model_file(b.overlay, cid, [second.overlay.peer_id], target)
        assert report.path.read_bytes() == data and report.resumed_chunks >= mf.chunk_count(SIZE) // 2


async def test_a_holder_whose_bytes_are_not_the_content_id_is_caught_by_the_whole_file_check(model, tmp_path: Path):
    """Its manifest is cut from its own bytes, so every chunk passes: only the whole-file digest tells."""
    *_, cid = model
    impostor = tmp_path / "impostor.gguf"
    impostor.write_bytes(os.urandom(SIZE))
    members: set[str] = set()
    async with network() as net:
        (a,) = await _holders(net, 1, {cid: impostor}, members)
        b = await _fetcher(net, [a])
        members.add(b.peer_id)
        with pytest.raises(FetchFailed, match="do not make that file"):
            await fetch_model_file(b.overlay, cid, [a.overlay.peer_id], tmp_path / "got.gguf")
        assert not (tmp_path / "got.gguf").exists() and not (tmp_path / "got.gguf.partial").exists()


@pytest.mark.parametrize("ahead_bytes", [64 * 2**20, 2 * mf.MIN_CHUNK_BYTES], ids=["in-memory", "given-up"])
def test_the_chunk_store_digests_chunks_stored_in_any_order(tmp_path: Path, monkeypatch, ahead_bytes: int):
    from meshp2p.p2p import model_fetch as pmf

    monkeypatch.setattr(pmf, "MAX_AHEAD_BYTES", ahead_bytes)
    data = os.urandom(SIZE)
    manifest = mf.manifest_of(SIZE, (data[i:i + mf.MIN_CHUNK_BYTES] for i in range(0, SIZE, mf.MIN_CHUNK_BYTES)))
    target = tmp_path / "f"
    target.write_bytes(b"\0" * SIZE)
    fd = os.open(target, os.O_WRONLY)
    try:
        store = pmf._ChunkStore(manifest, fd, digest=True)
        order = list(range(manifest.count))
        order[0], order[-1] = order[-1], order[0]  # every other chunk waits for chunk 0
        assert store.store(1, data[:mf.MIN_CHUNK_BYTES]) is not None, "a chunk that is not the manifest's"
        for index in order:
            offset, length = mf.chunk_span(SIZE, index)
            assert store.store(index, data[offset:offset + length]) is None
    finally:
        os.close(fd)
    assert target.read_bytes() == data
    expected = hashlib.sha256(data).digest() if ahead_bytes > SIZE else None
    assert store.digest() == expected


async def test_a_fetch_slower_than_its_floor_stops_and_keeps_what_arrived(model, tmp_path: Path):
    """A holder capped at 0.4 MB/s, a fetch that must keep 2 MB/s: it stops once the floor's window has passed
    (about 5 s; a whole 10 MiB would take 25 s), says how fast it went, and a later fetch resumes from its chunks."""
    path, data, cid = model
    target = tmp_path / "x.gguf"
    members: set[str] = set()
    async with network() as net:
        slow = await net.start_overlay()
        server = ModelFileServer(slow.overlay, is_member=lambda p: str(p) in members, files={cid: path}.get,
                                 max_upload_bytes_s=400_000)
        server.install()
        b = await _fetcher(net, [slow])
        members.add(b.peer_id)
        started = trio.current_time()
        with pytest.raises(FetchFailed, match=r"send it at 0\.[0-9]+ MB/s, below the 2\.00 MB/s"):
            await fetch_model_file(b.overlay, cid, [slow.overlay.peer_id], target, min_bytes_per_s=2e6)
        assert trio.current_time() - started < 15, "the floor stops a crawl long before it ends"
        assert not target.exists() and (tmp_path / "x.gguf.partial").exists()
        server.cap.bytes_per_s = None  # the holder's uplink frees up: no floor is missed now
        report = await fetch_model_file(b.overlay, cid, [slow.overlay.peer_id], target, min_bytes_per_s=2e6)
        assert report.path.read_bytes() == data and report.resumed_chunks >= 1


async def test_holders_list_a_split_models_files_and_the_list_most_send_is_used(tmp_path: Path):
    """`list`: two holders send the same three content ids; one lists another second file (blamed: bad_parts), one
    does not take the dialer as a member, one is an older node that knows only `open` (it resets the stream); one
    holds the file whole. Each listed file is then fetched on its own, from the holders that listed it."""
    datas = [os.urandom(n) for n in (2 * mf.MIN_CHUNK_BYTES + 5, mf.MIN_CHUNK_BYTES, 7)]
    ids = tuple(_content_id(d) for d in datas)
    paths = []
    for i, data in enumerate(datas):
        paths.append(tmp_path / "holder" / f"split-{i + 1:05d}-of-00003.gguf")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_bytes(data)
    files = dict(zip(ids, paths, strict=True))
    lie = (ids[0], _content_id(b"another second file"), ids[2])
    members: set[str] = set()

    async def older(stream) -> None:
        opened = mf.decode_message(await FramedStream(stream, max_bytes=mf.MAX_FRAME_BYTES).expect())
        mf.expect(opened, mf.Open)  # an older listener's first step: `list` is not a message it knows

    async with network() as net:
        honest = [await net.start_overlay() for _ in range(2)]
        liar, stranger, old, whole = [await net.start_overlay() for _ in range(4)]
        for node, listed in ((honest[0], ids), (honest[1], ids), (liar, lie)):
            ModelFileServer(node.overlay, is_member=lambda p: str(p) in members, files=files.get,
                            parts={ids[0]: listed}.get).install()
        ModelFileServer(stranger.overlay, is_member=lambda p: False, files=files.get,
                        parts={ids[0]: ids}.get).install()
        old.overlay.serve(mf.MODEL_FETCH_PROTOCOL_ID, older, rejects_as="model_fetch")
        ModelFileServer(whole.overlay, is_member=lambda p: str(p) in members, files=files.get,
                        parts={ids[1]: (ids[1],)}.get).install()
        everyone = [*honest, liar, stranger, old, whole]
        b = await _fetcher(net, everyone)
        members.add(b.peer_id)
        report = await list_parts(b.overlay, ids[0], [n.overlay.peer_id for n in everyone[:-1]])
        assert report.ids == ids
        assert sorted(map(str, report.holders)) == sorted(n.peer_id for n in honest)
        assert report.dropped == {liar.peer_id: "bad_parts", stranger.peer_id: "not_member",
                                  old.peer_id: "no_list"}
        assert b.overlay.rejects.as_dict() == {"model_fetch:bad_parts": 1}
        assert (await list_parts(b.overlay, ids[1], [whole.overlay.peer_id])).ids == (ids[1],)
        nobody = await list_parts(b.overlay, ids[2], [whole.overlay.peer_id])
        assert nobody.ids is None and nobody.dropped == {whole.peer_id: "not_found"}
        for cid, data in zip(ids, datas, strict=True):
            target = tmp_path / "got" / f"{cid.digest.hex()}.gguf"
            got = await fetch_model_file(b.overlay, cid, list(report.holders), target)
            assert got.path.read_bytes() == data
