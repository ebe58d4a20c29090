"""`/meshp2p/model/1.0.0` over libp2p streams (protocols/model-fetch.md): serve the model files this node offers to
members, and fetch one from several members at once, chunk by checked chunk, resumable; and ask members which files
make a split model (`list_parts`), each then fetched as a file of its own.

The rules are wire/model_fetch.py's; this module moves bytes and touches the disk. Disk reads, writes and hashing
run in worker threads so neither side holds the node's event loop while its inference streams wait.

Both sides of the protocol live here (~600 lines, with the upload cap, the dialer's rate floor watch and `list`) because
they are one session read from its two ends: the listener's chunk sending and the dialer's chunk plan change
together whenever the spec does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from libp2p.peer.id import ID

from meshp2p.errors import MeshP2PError
from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import FramedStream, close_quietly, read_some, reset_quietly
from meshp2p.p2p.throughput import ThroughputFloor
from meshp2p.wire import model_fetch as mf
from meshp2p.wire.errors import WireError
from meshp2p.wire.model_id import ContentId

log = logging.getLogger(__name__)

#: The longest a dialer waits for a manifest: a listener that never cut this file hashes it first (~1 s per GB).
MANIFEST_TIMEOUT_S = 300.0
#: The longest a dialer waits for one chunk before it drops the peer and gives its chunks to the others.
CHUNK_TIMEOUT_S = 60.0
OPEN_TIMEOUT_S = 10.0
#: A chunk goes out in writes of at most this, each waiting for the upload cap: one upload never holds the
#: connection's (or the event loop's) turn for a whole chunk.
SEND_PIECE_BYTES = 256 * 1024
#: How many chunks pass between two saves of a partial fetch's state (and at every end).
SAVE_EVERY_CHUNKS = 32
HASH_READ_BYTES = 4 * 2**20
#: Checked chunks that may wait in memory for the whole-file digest to reach them (`_ChunkStore`).
MAX_AHEAD_BYTES = 64 * 2**20
#: The longest a dialer waits for a `parts` answer (the listener knows it: no hashing).
PARTS_TIMEOUT_S = 30.0


class FetchFailed(MeshP2PError):
    """No member could deliver the file (none has it, all refused, broke, lied or were too slow); what was fetched
    is kept for a later try, and the caller goes to the hub."""


# -- serving -----------------------------------------------------------------------------------------------------


#: What uploads may use while this node answers inference requests (`UploadCap.yield_to`): 40 Mbit/s, above the
#: 20 Mbit/s a fetching member's floor asks by default (app/model_fetcher.py), so fetches go on, slowly, instead of
#: giving way to the hub; tools/bench/model_fetch.py --inference measures what a fetch costs a stream.
BUSY_UPLOAD_BYTES_S = 5e6


class UploadCap:
    """A token bucket over all uploads: at most `bytes_per_s` on average, bursts of one second's worth; and while
    `yield_to()` says this node's own inference is running, at most `busy_bytes_per_s` (a fetch must never slow the
    node's streams: its Noise encryption and disk reads take the CPU they need)."""

    def __init__(self, bytes_per_s: float | None, clock: Callable[[], float] = trio.current_time, *,
                 yield_to: Callable[[], bool] = lambda: False,
                 busy_bytes_per_s: float = BUSY_UPLOAD_BYTES_S) -> None:
        self.bytes_per_s = bytes_per_s
        self.yield_to = yield_to
        self.busy_bytes_per_s = busy_bytes_per_s
        self._clock = clock
        self._tokens = 0.0
        self._at: float | None = None

    def rate_now(self) -> float | None:
        """The cap in force: None for none."""
        if self.yield_to():
            return self.busy_bytes_per_s if self.bytes_per_s is None else min(self.bytes_per_s,
                                                                                self.busy_bytes_per_s)
        return self.bytes_per_s

    def delay_for(self, n: int, now: float) -> float:
        """Take `n` bytes' worth; how long to wait before sending them (0 when under the cap)."""
        rate = self.rate_now()
        if rate is None:
            self._at = None
            return 0.0
        # A cap that starts (or restarts after a spell without one) starts with a full second's worth.
        self._tokens = rate if self._at is None else min(rate, self._tokens + (now - self._at) * rate)
        self._at = now
        self._tokens -= n
        return max(0.0, -self._tokens / rate)

    async def take(self, n: int) -> None:
        delay = self.delay_for(n, self._clock())
        if delay:
            await trio.sleep(delay)


@dataclass
class UploadStats:
    sessions: int = 0
    bytes_sent: int = 0
    active: int = 0


class ModelFileServer:
    """Answers fetches of the files `files` offers (content id -> path, None when not offered) to members, and
    `list` questions with `parts` (the first file's content id -> every file's, in order; None when not offered)."""

    def __init__(self, overlay: Overlay, *, is_member: Callable[[ID], bool],
                 files: Callable[[ContentId], Path | None], max_upload_bytes_s: float | None = None,
                 yield_to: Callable[[], bool] = lambda: False,
                 parts: Callable[[ContentId], tuple[ContentId, ...] | None] = lambda cid: None) -> None:
        self.overlay = overlay
        self.is_member = is_member
        self.files = files
        self.parts = parts
        self.cap = UploadCap(max_upload_bytes_s, yield_to=yield_to)
        self.stats = UploadStats()
        self._manifests: dict[ContentId, mf.Manifest] = {}
        self._cutting: dict[ContentId, trio.Event] = {}

    def install(self) -> None:
        self.overlay.serve(mf.MODEL_FETCH_PROTOCOL_ID, self._handle, rejects_as="model_fetch")

    async def _handle(self, stream: Any) -> None:
        """One session; the ladder (p2p/streams.serve_stream) closes it on return, resets it on failure, and
        counts a broken rule as `model_fetch:<reason>`."""
        peer: ID = stream.muxed_conn.peer_id
        framed = FramedStream(stream, max_bytes=mf.MAX_FRAME_BYTES)
        with trio.fail_after(mf.IDLE_TIMEOUT_S):
            first = mf.decode_message(await framed.expect())
        if isinstance(first, mf.ListParts):
            await self._list(stream, peer, first.content_id)
            return
        opened: mf.Open = mf.expect(first, mf.Open)
        refusal = self._refusal(peer, opened.content_id)
        path = self.files(opened.content_id)
        if refusal is not None or path is None:
            refusal = refusal or "not_found"
            self.overlay.rejects.add("model_fetch", refusal)
            await stream.write(mf.encode_refused(refusal))
            return
        self.stats.active += 1
        self.stats.sessions += 1
        try:
            manifest = await self._manifest(opened.content_id, path)
            await stream.write(mf.encode_manifest(manifest))
            fd = await trio.to_thread.run_sync(os.open, path, os.O_RDONLY)
            try:
                while True:
                    with trio.fail_after(mf.IDLE_TIMEOUT_S):
                        payload = await framed.receive()
                    if payload is None:
                        return
                    index = mf.expect(mf.decode_message(payload), mf.Get).index
                    mf.check_index(manifest, index)
                    with trio.fail_after(mf.IDLE_TIMEOUT_S):  # a dialer that stopped reading
                        await self._send_chunk(stream, fd, manifest, index)
            finally:
                os.close(fd)
        finally:
            self.stats.active -= 1

    async def _list(self, stream: Any, peer: ID, content_id: ContentId) -> None:
        """The files of the model whose first file is `content_id` (no upload slot: the answer is known)."""
        ids = self.parts(content_id) if self.is_member(peer) else None
        if ids is None:
            refusal: mf.RefusalReason = "not_member" if not self.is_member(peer) else "not_found"
            self.overlay.rejects.add("model_fetch", refusal)
            await stream.write(mf.encode_refused(refusal))
            return
        await stream.write(mf.encode_parts(ids))

    def _refusal(self, peer: ID, content_id: ContentId) -> mf.RefusalReason | None:
        if not self.is_member(peer):
            return "not_member"
        if self.files(content_id) is None:
            return "not_found"
        if self.stats.active >= mf.MAX_UPLOADS:
            return "busy"
        return None

    async def _manifest(self, content_id: ContentId, path: Path) -> mf.Manifest:
        """Cut the file once per content id (in a thread); sessions asking meanwhile wait for that one cut."""
        while content_id not in self._manifests:
            cutting = self._cutting.get(content_id)
            if cutting is not None:
                await cutting.wait()
                continue
            self._cutting[content_id] = done = trio.Event()
            try:
                self._manifests[content_id] = await trio.to_thread.run_sync(_cut, path, content_id.size)
            finally:
                del self._cutting[content_id]
                done.set()
        return self._manifests[content_id]

    async def _send_chunk(self, stream: Any, fd: int, manifest: mf.Manifest, index: int) -> None:
        offset, length = mf.chunk_span(manifest.size, index)
        data = await trio.to_thread.run_sync(os.pread, fd, length, offset)
        if len(data) != length:
            raise OSError(f"the file shrank under chunk {index}")
        await stream.write(mf.encode_chunk_header(index))
        view = memoryview(data)
        for start in range(0, length, SEND_PIECE_BYTES):
            piece = view[start:start + SEND_PIECE_BYTES]
            await self.cap.take(len(piece))
            await stream.write(piece)  # a slice, not a copy: the muxer copies it into its frames
            self.stats.bytes_sent += len(piece)


def _cut(path: Path, size: int) -> mf.Manifest:
    if path.stat().st_size != size:
        raise OSError(f"{path} is no longer the offered file")
    chunk = mf.chunk_bytes(size)
    with open(path, "rb") as file:
        return mf.manifest_of(size, iter(lambda: file.read(chunk), b""))


# -- fetching ----------------------------------------------------------------------------------------------------


@dataclass
class FetchReport:
    """Where a fetched file went and who delivered it (chunks per peer), and who was dropped and why."""

    path: Path
    delivered: dict[str, int]
    dropped: dict[str, str]
    resumed_chunks: int


@dataclass
class _Session:
    peer: ID
    stream: Any
    reader: mf.DialerReader
    manifest: mf.Manifest | None = None
    pending: list[mf.ManifestMessage | mf.Refused | mf.Chunk] = field(default_factory=list)

    async def next_event(self, timeout_s: float) -> mf.ManifestMessage | mf.Refused | mf.Chunk:
        with trio.fail_after(timeout_s):
            while not self.pending:
                data = await read_some(self.stream, 1024 * 1024)
                if not data:
                    self.reader.eof()
                    raise WireError("truncated", "the listener closed the session")
                self.pending.extend(self.reader.feed(data))
        return self.pending.pop(0)


class PartialFetch:
    """`<file>.partial` and, beside it, the chunks already in it (`<file>.partial.json`), for a fetch to resume."""

    def __init__(self, target: Path, content_id: ContentId, manifest: mf.Manifest) -> None:
        self.data = target.with_name(target.name + ".partial")
        self.state = target.with_name(target.name + ".partial.json")
        self.content_id = content_id
        self.manifest_digest = hashlib.sha256(manifest.hashes).hexdigest()

    def load(self) -> set[int]:
        """The chunks a former fetch of the same file (same content id and manifest) left; none if anything is off."""
        try:
            state = json.loads(self.state.read_text())
            if (state.get("id"), state.get("manifest")) != (self.content_id.text, self.manifest_digest):
                return set()
            if self.data.stat().st_size != self.content_id.size:
                return set()
            return {int(i) for i in state["done"]}
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def save(self, done: set[int]) -> None:
        tmp = self.state.with_name(self.state.name + ".tmp")
        tmp.write_text(json.dumps({"v": 1, "id": self.content_id.text, "manifest": self.manifest_digest,
                                   "done": sorted(done)}))
        tmp.replace(self.state)

    def discard(self) -> None:
        for path in (self.data, self.state):
            path.unlink(missing_ok=True)


async def fetch_model_file(overlay: Overlay, content_id: ContentId, peers: Sequence[ID], target: Path, *,
                           on_progress: Callable[[int], None] = lambda done: None,
                           on_bytes: Callable[[int], None] = lambda n: None,
                           chunk_timeout_s: float = CHUNK_TIMEOUT_S,
                           min_bytes_per_s: float | None = None) -> FetchReport:
    """Fetch `content_id` from `peers` (members that offer it) into `target`, or raise FetchFailed.

    `on_progress(bytes_done)` hears of every chunk that passed its check (`bytes_done` counts what a former fetch
    left too); `on_bytes(n)` of the `n` bytes each such chunk brought (a node's byte counter). The file appears at
    `target` only once it is whole and matches the content id. With `min_bytes_per_s`, a fetch whose chunks come
    slower than that (p2p/throughput.py) stops with FetchFailed, what it got kept for a later try.
    """
    sessions: list[_Session] = []
    dropped: dict[str, str] = {}
    finished = False
    try:
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(_open_session, overlay, peer, content_id, sessions, dropped)
        manifest, dissenters = mf.majority_manifest((str(s.peer), s.manifest) for s in sessions
                                                    if s.manifest is not None)
        for dissenter in dissenters:
            dropped[dissenter] = "bad_manifest"
            overlay.rejects.add("model_fetch", "bad_manifest")
        usable = [s for s in sessions if str(s.peer) not in dissenters]
        if manifest is None or not usable:
            raise FetchFailed(f"no member could send {content_id.short}: "
                              + (", ".join(f"{p[:12]}… {r}" for p, r in dropped.items()) or "nobody has it"),
                              hint="it is downloaded from Hugging Face instead")
        report = await _fetch_chunks(overlay, content_id, manifest, usable, target, dropped, on_progress,
                                     chunk_timeout_s, on_bytes, min_bytes_per_s)
        finished = True
        return report
    finally:
        # A fetch that stops early resets its streams: a listener blocked on a chunk the dialer no longer reads
        # ends at once instead of holding one of its few upload slots until its timeout.
        for session in sessions:
            await (close_quietly(session.stream) if finished else reset_quietly(session.stream))


@dataclass(frozen=True)
class PartsReport:
    """What members said makes a model: every file's content id (None when no member answered, say older nodes that
    do not know `list`), the members that sent that list, and why each other member was not used."""

    ids: tuple[ContentId, ...] | None
    holders: tuple[ID, ...]
    dropped: dict[str, str]


async def list_parts(overlay: Overlay, content_id: ContentId, peers: Sequence[ID]) -> PartsReport:
    """Ask `peers` at once which files make the model whose first file is `content_id`; the list most of them
    sent (protocols/model-fetch.md, "Split models")."""
    answers: list[tuple[ID, tuple[ContentId, ...]]] = []
    dropped: dict[str, str] = {}

    async def ask(peer: ID) -> None:
        stream = await _open_stream(overlay, peer, dropped)
        if stream is None:
            return
        try:
            with trio.fail_after(PARTS_TIMEOUT_S):
                await stream.write(mf.encode_list(content_id))
                answer = mf.decode_message(await FramedStream(stream, max_bytes=mf.MAX_FRAME_BYTES).expect())
            if isinstance(answer, mf.Refused):
                dropped[str(peer)] = answer.reason
            else:
                answers.append((peer, mf.check_parts_for(content_id, mf.expect(answer, mf.Parts))))
        except WireError as exc:
            if exc.reason == "truncated":  # closed unanswered: what an older listener, which knows no `list`, does
                dropped[str(peer)] = "no_list"
            else:
                overlay.rejects.add("model_fetch", exc.reason)
                dropped[str(peer)] = exc.reason
        except Exception as exc:  # broken or timed out
            dropped[str(peer)] = "broken"
            log.debug("model fetch: %s did not list the parts of %s: %s", peer, content_id.short, exc)
        finally:
            await close_quietly(stream)

    async with trio.open_nursery() as nursery:
        for peer in peers:
            nursery.start_soon(ask, peer)
    ids, dissenters = mf.majority_parts((str(p), a) for p, a in answers)
    for dissenter in dissenters:
        dropped[dissenter] = "bad_parts"
        overlay.rejects.add("model_fetch", "bad_parts")
    return PartsReport(ids, tuple(p for p, a in answers if a == ids), dropped)


async def _open_stream(overlay: Overlay, peer: ID, dropped: dict[str, str]) -> Any:
    """A model-fetch stream to `peer` (libp2p's, untyped as `Overlay.open_stream`), or None with the peer noted
    as unreachable in `dropped`."""
    try:
        with trio.fail_after(OPEN_TIMEOUT_S):
            return await overlay.open_stream(peer, mf.MODEL_FETCH_PROTOCOL_ID)
    except Exception as exc:  # unreachable, or it does not speak the protocol (py-libp2p raises several types)
        dropped[str(peer)] = "unreachable"
        log.debug("model fetch: %s unreachable: %s", peer, exc)
        return None


async def _open_session(overlay: Overlay, peer: ID, content_id: ContentId, sessions: list[_Session],
                        dropped: dict[str, str]) -> None:
    stream = await _open_stream(overlay, peer, dropped)
    if stream is None:
        return
    session = _Session(peer, stream, mf.DialerReader(content_id))
    sessions.append(session)
    try:
        await stream.write(mf.encode_open(content_id))
        event = await session.next_event(MANIFEST_TIMEOUT_S)
    except WireError as exc:
        overlay.rejects.add("model_fetch", exc.reason)
        dropped[str(peer)] = exc.reason
        return
    except Exception as exc:  # the stream broke or timed out
        dropped[str(peer)] = "broken"
        log.debug("model fetch: %s did not send a manifest: %s", peer, exc)
        return
    if isinstance(event, mf.Refused):
        dropped[str(peer)] = event.reason
    elif isinstance(event, mf.ManifestMessage):
        session.manifest = event.manifest


async def _fetch_chunks(overlay: Overlay, content_id: ContentId, manifest: mf.Manifest, sessions: list[_Session],
                        target: Path, dropped: dict[str, str], on_progress: Callable[[int], None],
                        chunk_timeout_s: float, on_bytes: Callable[[int], None],
                        min_bytes_per_s: float | None) -> FetchReport:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = PartialFetch(target, content_id, manifest)
    done = partial.load()
    resumed = len(done)
    plan = mf.ChunkPlan(manifest, done=set(done))
    if not resumed:
        await trio.to_thread.run_sync(_preallocate, partial.data, content_id.size)
    progress = [sum(mf.chunk_span(manifest.size, i)[1] for i in plan.done)]
    told = [progress[0]]
    told_at_start = progress[0]

    def progressed(done: int) -> None:
        on_bytes(done - told[0])
        told[0] = done
        on_progress(done)

    changed = [trio.Event()]

    def touch() -> None:
        changed[0].set()
        changed[0] = trio.Event()

    fd = os.open(partial.data, os.O_WRONLY)
    # A resumed fetch hashes the whole file at the end: the chunks a former one left are on disk, not in memory.
    store = _ChunkStore(manifest, fd, digest=not resumed)
    slow: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            for session in sessions:
                nursery.start_soon(_pull, overlay, session, plan, store, partial, progress, progressed, touch,
                                   changed, chunk_timeout_s)
            if min_bytes_per_s is not None:
                nursery.start_soon(_watch_rate, ThroughputFloor(min_bytes_per_s, start=trio.current_time()),
                                   lambda: progress[0] - told_at_start, slow, nursery.cancel_scope)
    finally:
        os.close(fd)
        partial.save(plan.done)
    dropped.update(plan.dropped)
    if slow and min_bytes_per_s is not None and not plan.complete:
        raise FetchFailed(f"the members holding {content_id.short} send it at {slow[0] / 1e6:.2f} MB/s, below "
                          f"the {min_bytes_per_s / 1e6:.2f} MB/s a fetch must keep ({len(plan.done)} of "
                          f"{manifest.count} chunks kept for a retry)",
                          hint="it is downloaded from Hugging Face instead (--min-fetch-mbps sets the floor)")
    if not plan.complete:
        raise FetchFailed(f"the members holding {content_id.short} stopped before it was whole "
                          f"({len(plan.done)} of {manifest.count} chunks kept for a retry): "
                          + ", ".join(f"{p[:12]}… {r}" for p, r in dropped.items()),
                          hint="it is downloaded from Hugging Face instead, or fetched again later")
    digest = store.digest()
    if digest is None:
        digest = await trio.to_thread.run_sync(_sha256_of, partial.data)
    try:
        mf.check_content(content_id, content_id.size, digest)
    except WireError:
        partial.discard()
        overlay.rejects.add("model_fetch", "content_mismatch")
        dropped.update({str(s.peer): "content_mismatch" for s in sessions})
        raise FetchFailed(f"the chunks fetched for {content_id.short} do not make that file (the manifest lied)",
                          hint="it is downloaded from Hugging Face instead") from None
    partial.data.replace(target)
    partial.state.unlink(missing_ok=True)
    return FetchReport(target, dict(plan.delivered), dropped, resumed)


async def _watch_rate(floor: ThroughputFloor, fetched: Callable[[], int], slow: list[float],
                      scope: trio.CancelScope) -> None:
    """Stop the fetch (cancel `scope`, the rate in `slow`) the first time its rate falls below the floor."""
    while True:
        now = trio.current_time()
        floor.observe(fetched(), now)
        rate = floor.too_slow(now)
        if rate is not None:
            slow.append(rate)
            scope.cancel()
            return
        await trio.sleep_until(floor.next_check_at(now))


async def _pull(overlay: Overlay, session: _Session, plan: mf.ChunkPlan, store: _ChunkStore, partial: PartialFetch,
                progress: list[int], on_progress: Callable[[int], None], touch: Callable[[], None],
                changed: list[trio.Event], chunk_timeout_s: float) -> None:
    """One peer's share: keep up to MAX_PIPELINED chunks asked, check and write each, until nothing is left."""
    peer = str(session.peer)
    asked: deque[int] = deque()
    since_save = 0
    try:
        while not plan.complete and peer not in plan.dropped:
            while len(asked) < mf.MAX_PIPELINED and (index := plan.next_for(peer)) is not None:
                await session.stream.write(mf.encode_get(index))
                asked.append(index)
            if not asked:
                await changed[0].wait()  # others hold the rest: wait for one to finish or give chunks back
                continue
            event = await session.next_event(chunk_timeout_s)
            expected = asked.popleft()
            if not isinstance(event, mf.Chunk) or event.index != expected:
                raise WireError("unexpected", f"expected chunk {expected}")
            bad = await trio.to_thread.run_sync(store.store, event.index, event.data)
            if bad is not None:
                overlay.rejects.add("model_fetch", bad.reason)
                log.warning("model fetch: %s sent a bad chunk %d; fetching it from another member", peer,
                            event.index)
                plan.chunk_bad(peer, event.index, bad.reason)
                return
            plan.chunk_ok(peer, event.index)
            progress[0] += len(event.data)
            on_progress(progress[0])
            since_save += 1
            if since_save >= SAVE_EVERY_CHUNKS:
                since_save = 0
                await trio.to_thread.run_sync(partial.save, set(plan.done))
    except WireError as exc:
        overlay.rejects.add("model_fetch", exc.reason)
        plan.peer_gone(peer, exc.reason)
    except trio.TooSlowError:
        plan.peer_gone(peer, "timeout")
    except Exception as exc:  # the stream broke (py-libp2p raises several types)
        log.debug("model fetch from %s broke: %s", peer, exc)
        plan.peer_gone(peer, "broken")
    finally:
        touch()


class _ChunkStore:
    """Checks each chunk against the manifest and writes it, in a worker thread (the event loop never hashes),
    and feeds the file's SHA-256 the chunks in file order as they are written, so the whole-file check needs no
    second pass over the file (a second read of it, and a serial wait at the end of ~1 s per GB).

    Chunks written ahead of the digest's next one wait for it in memory, up to MAX_AHEAD_BYTES; past that (a peer
    far behind the others) the digest is given up and the file is hashed at the end, as a resumed fetch is.
    """

    def __init__(self, manifest: mf.Manifest, fd: int, *, digest: bool) -> None:
        self.manifest = manifest
        self._fd = fd
        self._sha: Any = hashlib.sha256() if digest else None
        self._next = 0
        self._ahead: dict[int, bytes] = {}
        self._ahead_bytes = 0
        self._lock = threading.Lock()  # stores run in several worker threads at once

    def store(self, index: int, data: bytes) -> WireError | None:
        """Chunk `index` checked and written; the broken rule if it is not the manifest's (nothing written)."""
        try:
            self.manifest.check_chunk(index, data)
        except WireError as exc:
            return exc
        os.pwrite(self._fd, data, mf.chunk_span(self.manifest.size, index)[0])
        with self._lock:
            if self._sha is not None:
                self._ahead[index] = data
                self._ahead_bytes += len(data)
                while (ready := self._ahead.pop(self._next, None)) is not None:
                    self._sha.update(ready)
                    self._ahead_bytes -= len(ready)
                    self._next += 1
                if self._ahead_bytes > MAX_AHEAD_BYTES:
                    self._sha, self._ahead, self._ahead_bytes = None, {}, 0
        return None

    def digest(self) -> bytes | None:
        """The file's SHA-256 if every chunk went through `store` in time, else None (hash the file)."""
        if self._sha is None or self._next != self.manifest.count:
            return None
        digest: bytes = self._sha.digest()
        return digest


def _preallocate(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        file.truncate(size)


def _sha256_of(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_READ_BYTES):
            digest.update(block)
    return digest.digest()
