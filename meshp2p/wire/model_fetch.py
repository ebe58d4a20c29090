"""`/meshp2p/model/1.0.0` (protocols/model-fetch.md): a model file from the mesh members that hold it, in chunks.

The spec's rules as pure code: the chunk rule (`chunk_bytes`, `chunk_count`), the manifest, the messages of a
session (`open`, `manifest`, `refused`, `get`, `chunk`; `list` and `parts` for the files of a split model) and
`ChunkPlan`, the dialer's bookkeeping of which chunk to ask which peer for, what is done and whom to blame. No I/O:
p2p/model_fetch.py moves the bytes and touches the disk. One file (~420 lines) because the session's messages,
the manifest and the plan are one protocol, each checked against the others (a chunk against its manifest entry,
a manifest against the content id asked for).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from meshp2p.wire._cbor import dumps, loads_typed_map
from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import FRAME_HEADER_BYTES, frame_bytes
from meshp2p.wire.model_id import ContentId, parse_content_id

MODEL_FETCH_PROTOCOL_ID = "/meshp2p/model/1.0.0"
MIN_CHUNK_BYTES = 2**20
MAX_CHUNKS = 65536
HASH_BYTES = 32
#: A 2 MiB manifest and the map around it.
MAX_FRAME_BYTES = MAX_CHUNKS * HASH_BYTES + 256
#: `get`s a dialer may send before reading their answers.
MAX_PIPELINED = 8
MAX_UPLOADS = 2
IDLE_TIMEOUT_S = 30.0
#: Files in a `parts` answer: GGUF splits of even the largest models have a few dozen.
MAX_PARTS = 512

RefusalReason = Literal["not_member", "not_found", "busy"]
REFUSAL_REASONS: frozenset[str] = frozenset({"not_member", "not_found", "busy"})

_KEYS = {
    "open": frozenset({"v", "t", "id"}),
    "manifest": frozenset({"v", "t", "size", "chunk", "hashes"}),
    "refused": frozenset({"v", "t", "reason"}),
    "get": frozenset({"v", "t", "index"}),
    "chunk": frozenset({"v", "t", "index"}),
    "list": frozenset({"v", "t", "id"}),
    "parts": frozenset({"v", "t", "ids"}),
}


def chunk_bytes(size: int) -> int:
    """The smallest power of two >= 1 MiB that cuts `size` bytes into at most 65536 chunks."""
    chunk = MIN_CHUNK_BYTES
    while -(-size // chunk) > MAX_CHUNKS:
        chunk *= 2
    return chunk


def chunk_count(size: int) -> int:
    return -(-size // chunk_bytes(size))


def chunk_span(size: int, index: int) -> tuple[int, int]:
    """(offset, length) of chunk `index` of a `size`-byte file."""
    chunk = chunk_bytes(size)
    offset = index * chunk
    return offset, min(chunk, size - offset)


@dataclass(frozen=True)
class Manifest:
    """One SHA-256 per chunk of a file; every honest holder of the file computes the same one."""

    size: int
    hashes: bytes

    def __post_init__(self) -> None:
        if len(self.hashes) != HASH_BYTES * chunk_count(self.size):
            raise WireError("bad_manifest", f"{len(self.hashes)} hash bytes for {chunk_count(self.size)} chunks")

    @property
    def count(self) -> int:
        return chunk_count(self.size)

    def hash_of(self, index: int) -> bytes:
        return self.hashes[index * HASH_BYTES:(index + 1) * HASH_BYTES]

    def check_chunk(self, index: int, data: bytes) -> None:
        """`bad_chunk` unless `data` is chunk `index` as the manifest says."""
        if len(data) != chunk_span(self.size, index)[1] or hashlib.sha256(data).digest() != self.hash_of(index):
            raise WireError("bad_chunk", f"chunk {index} does not match the manifest")


def manifest_of(size: int, chunks: Iterable[bytes]) -> Manifest:
    """The manifest of a file given as its chunks in order (each `chunk_bytes(size)` long, the last shorter)."""
    return Manifest(size, b"".join(hashlib.sha256(c).digest() for c in chunks))


# -- messages ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    content_id: ContentId


@dataclass(frozen=True)
class ManifestMessage:
    manifest: Manifest


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason


@dataclass(frozen=True)
class Get:
    index: int


@dataclass(frozen=True)
class ChunkHeader:
    index: int


@dataclass(frozen=True)
class ListParts:
    """The dialer asks for the files of the model whose first file is `content_id` (instead of `open`)."""

    content_id: ContentId


@dataclass(frozen=True)
class Parts:
    """The content ids of every file of a model, in order (one for a whole file; the parts of a split GGUF)."""

    ids: tuple[ContentId, ...]


Message = Open | ManifestMessage | Refused | Get | ChunkHeader | ListParts | Parts


def _frame(m: dict[str, Any]) -> bytes:
    return frame_bytes(dumps({"v": 1, **m}), max_bytes=MAX_FRAME_BYTES)


def encode_open(content_id: ContentId) -> bytes:
    return _frame({"t": "open", "id": content_id.text})


def encode_manifest(manifest: Manifest) -> bytes:
    return _frame({"t": "manifest", "size": manifest.size, "chunk": chunk_bytes(manifest.size),
                   "hashes": manifest.hashes})


def encode_list(content_id: ContentId) -> bytes:
    return _frame({"t": "list", "id": content_id.text})


def encode_parts(ids: tuple[ContentId, ...]) -> bytes:
    if not 1 <= len(ids) <= MAX_PARTS or len(set(ids)) != len(ids):
        raise WireError("malformed", f"a parts list has 1 to {MAX_PARTS} distinct files, not {len(ids)}")
    return _frame({"t": "parts", "ids": [cid.text for cid in ids]})


def encode_refused(reason: RefusalReason) -> bytes:
    return _frame({"t": "refused", "reason": reason})


def encode_get(index: int) -> bytes:
    return _frame({"t": "get", "index": index})


def encode_chunk_header(index: int) -> bytes:
    """The frame sent before a chunk's bytes (which follow unframed)."""
    return _frame({"t": "chunk", "index": index})


def _int(m: dict[str, Any], key: str) -> int:
    value = m[key]
    if type(value) is not int or value < 0:
        raise WireError("malformed", f"{key!r} must be a non-negative integer")
    return value


def decode_message(payload: bytes) -> Message:
    """One frame's payload as the message it is (any step's; the caller checks it is the one expected)."""
    kind, m = loads_typed_map(payload, max_bytes=MAX_FRAME_BYTES, keys_by_type=_KEYS)
    if kind == "open":
        return Open(parse_content_id(m["id"]))
    if kind == "list":
        return ListParts(parse_content_id(m["id"]))
    if kind == "parts":
        texts = m["ids"]
        if type(texts) is not list or not 1 <= len(texts) <= MAX_PARTS:
            raise WireError("malformed", f"'ids' must be a list of 1 to {MAX_PARTS} content ids")
        ids = tuple(parse_content_id(t) for t in texts)
        if len(set(ids)) != len(ids):
            raise WireError("malformed", "a file is listed twice")
        return Parts(ids)
    if kind == "refused":
        reason = m["reason"]
        if type(reason) is not str or reason not in REFUSAL_REASONS:
            raise WireError("malformed", f"unknown refusal {str(reason)[:40]!r}")
        return Refused(reason)  # type: ignore[arg-type]  # checked against REFUSAL_REASONS just above
    if kind == "manifest":
        size, chunk, hashes = _int(m, "size"), _int(m, "chunk"), m["hashes"]
        if type(hashes) is not bytes:
            raise WireError("malformed", "'hashes' must be bytes")
        if chunk != chunk_bytes(size):
            raise WireError("bad_manifest", f"chunk size {chunk} is not the rule's {chunk_bytes(size)}")
        return ManifestMessage(Manifest(size, hashes))
    index = _int(m, "index")
    return Get(index) if kind == "get" else ChunkHeader(index)


def expect(message: Message, kind: type[Any]) -> Any:
    """`message` if it is a `kind`, else `unexpected` (a message out of its step)."""
    if not isinstance(message, kind):
        raise WireError("unexpected", f"expected {kind.__name__}, got {type(message).__name__}")
    return message


def check_index(manifest: Manifest, index: int) -> None:
    if not 0 <= index < manifest.count:
        raise WireError("malformed", f"chunk {index} is out of range (the file has {manifest.count})")


def check_manifest_for(content_id: ContentId, message: ManifestMessage) -> Manifest:
    """The dialer's first check: the manifest is of a file of the asked size."""
    if message.manifest.size != content_id.size:
        raise WireError("bad_manifest", f"manifest of {message.manifest.size} bytes for a {content_id.size}-byte file")
    return message.manifest


def check_parts_for(content_id: ContentId, message: Parts) -> tuple[ContentId, ...]:
    """The dialer's check of a `parts` answer: its first file is the one asked about."""
    if message.ids[0] != content_id:
        raise WireError("bad_parts", f"the parts list starts with {message.ids[0].text}, not {content_id.text}")
    return message.ids


def majority_parts(answers: Iterable[tuple[str, tuple[ContentId, ...]]]) -> tuple[tuple[ContentId, ...] | None,
                                                                                   list[str]]:
    """The parts list most peers sent (ties: the first received) and the peers that sent another one."""
    seen = list(answers)
    if not seen:
        return None, []
    votes: dict[tuple[ContentId, ...], int] = {}
    for _, ids in seen:
        votes[ids] = votes.get(ids, 0) + 1
    best = max(votes.values())
    chosen = next(ids for _, ids in seen if votes[ids] == best)
    return chosen, [peer for peer, ids in seen if ids != chosen]


@dataclass(frozen=True)
class Chunk:
    """A chunk's bytes as they arrived (not yet checked against the manifest: `Manifest.check_chunk`)."""

    index: int
    data: bytes


class DialerReader:
    """The dialer's side of a session: the listener's bytes in, `ManifestMessage` or `Refused` first, then a
    `Chunk` per `chunk` message with its bytes, which follow the frame unframed (their length is the manifest's)."""

    def __init__(self, content_id: ContentId) -> None:
        self.content_id = content_id
        self.manifest: Manifest | None = None
        #: The frame arriving (header and payload so far): only control frames are buffered here.
        self._buffer = bytearray()
        self._chunk: tuple[int, int] | None = None  # index, length of the chunk whose bytes are arriving
        #: The arriving chunk's bytes so far, as slices of what was fed (joined once, when the chunk is whole).
        self._body: list[memoryview] = []
        self._body_bytes = 0
        self._refused = False

    def feed(self, data: bytes) -> list[ManifestMessage | Refused | Chunk]:
        """Everything `data` completes. A chunk's bytes are copied once, into the `Chunk`, however they were cut."""
        out: list[ManifestMessage | Refused | Chunk] = []
        view = memoryview(data if type(data) is bytes else bytes(data))
        at, end = 0, len(view)
        while True:
            if self._chunk is not None:
                index, length = self._chunk
                took = min(length - self._body_bytes, end - at)
                if took:
                    self._body.append(view[at:at + took])
                    self._body_bytes += took
                    at += took
                if self._body_bytes < length:
                    return out
                out.append(Chunk(index, b"".join(self._body)))
                self._body, self._body_bytes, self._chunk = [], 0, None
                continue
            if len(self._buffer) < FRAME_HEADER_BYTES:
                took = min(FRAME_HEADER_BYTES - len(self._buffer), end - at)
                self._buffer += view[at:at + took]
                at += took
                if len(self._buffer) < FRAME_HEADER_BYTES:
                    return out
            length = int.from_bytes(self._buffer[:FRAME_HEADER_BYTES], "big")
            if length > MAX_FRAME_BYTES:
                raise WireError("oversized", f"frame of {length} bytes > {MAX_FRAME_BYTES}")
            missing = FRAME_HEADER_BYTES + length - len(self._buffer)
            took = min(missing, end - at)
            self._buffer += view[at:at + took]
            at += took
            if took < missing:
                return out
            payload = bytes(self._buffer[FRAME_HEADER_BYTES:])
            self._buffer = bytearray()
            answer = self._message(decode_message(payload))
            if answer is not None:
                out.append(answer)

    def _message(self, message: Message) -> ManifestMessage | Refused | None:
        """The manifest or a refusal, or None for a chunk header (its bytes come next)."""
        if self._refused:
            raise WireError("unexpected", "bytes after a refusal")
        if self.manifest is None:
            if isinstance(message, Refused):
                self._refused = True
                return message
            self.manifest = check_manifest_for(self.content_id, expect(message, ManifestMessage))
            return ManifestMessage(self.manifest)
        header: ChunkHeader = expect(message, ChunkHeader)
        check_index(self.manifest, header.index)
        self._chunk = (header.index, chunk_span(self.manifest.size, header.index)[1])
        return None

    def eof(self) -> None:
        """The listener closed: fine between messages, `truncated` in the middle of one."""
        if self._buffer or self._chunk is not None:
            raise WireError("truncated", "the listener left mid-message")


# -- the dialer's plan -------------------------------------------------------------------------------------------


@dataclass
class ChunkPlan:
    """Which chunks are done, which are out with which peer, and who is no longer asked.

    Peers pull work (`next_for`), report each chunk (`chunk_ok`, `chunk_bad`) and their end (`peer_gone`): a bad
    chunk drops its peer and the chunk goes back to the pool, as do a gone peer's outstanding chunks. Chunks are
    handed out lowest index first, so a partial file fills from its start.
    """

    manifest: Manifest
    done: set[int] = field(default_factory=set)
    out: dict[int, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    #: Chunks each peer delivered (for the fetch's report).
    delivered: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._todo = sorted(set(range(self.manifest.count)) - self.done, reverse=True)

    @property
    def complete(self) -> bool:
        return len(self.done) == self.manifest.count

    @property
    def waiting(self) -> int:
        """Chunks nobody is fetching yet."""
        return len(self._todo)

    def next_for(self, peer: str) -> int | None:
        """The next chunk `peer` should fetch, or None (nothing left to hand out, or the peer is dropped)."""
        if peer in self.dropped or not self._todo:
            return None
        index = self._todo.pop()
        self.out[index] = peer
        return index

    def chunk_ok(self, peer: str, index: int) -> None:
        self.out.pop(index, None)
        self.done.add(index)
        self.delivered[peer] = self.delivered.get(peer, 0) + 1

    def chunk_bad(self, peer: str, index: int, reason: str) -> None:
        """`peer` sent a chunk that failed its check: it is dropped, the chunk goes back to the pool."""
        self.peer_gone(peer, reason)
        self._give_back(index)

    def peer_gone(self, peer: str, reason: str) -> None:
        """`peer` is no longer asked (its stream broke, it timed out, it lied); its chunks go to the others."""
        self.dropped.setdefault(peer, reason)
        for index in [i for i, p in self.out.items() if p == peer]:
            self._give_back(index)

    def _give_back(self, index: int) -> None:
        self.out.pop(index, None)
        if index not in self.done and index not in self._todo:
            self._todo.append(index)
            self._todo.sort(reverse=True)


def majority_manifest(manifests: Iterable[tuple[str, Manifest]]) -> tuple[Manifest | None, list[str]]:
    """The manifest most peers sent (ties: the first received) and the peers that sent another one."""
    seen: list[tuple[str, Manifest]] = list(manifests)
    if not seen:
        return None, []
    votes: dict[bytes, int] = {}
    for _, manifest in seen:
        votes[manifest.hashes] = votes.get(manifest.hashes, 0) + 1
    best = max(votes.values())
    chosen = next(m for _, m in seen if votes[m.hashes] == best)
    return chosen, [peer for peer, m in seen if m.hashes != chosen.hashes]


def check_content(content_id: ContentId, size: int, sha256_digest: bytes) -> None:
    """The dialer's last check: the assembled file (its length and whole-file SHA-256) is the asked content id."""
    if size != content_id.size or sha256_digest[:len(content_id.digest)] != content_id.digest:
        raise WireError("content_mismatch", f"the assembled file is not {content_id.text}")
