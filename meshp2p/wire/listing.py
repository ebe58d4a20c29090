"""`/meshp2p/listing/1.0.0` (protocols/listing.md): ask a mesh member directly for its signed records.

`discover` learns providers (with their addresses) from the DHT; instead of two more DHT walks (the provider's
node record, then its mesh's listing) it asks the provider for both over one stream. The answer carries the
same signed DHT values, verified exactly as if read from the DHT, plus one binding: the node record must be the
answering peer's own (its subject is the PeerID of the secured connection), and the listing must be for the mesh
that node record names.

Sans-IO: one request frame, one answer frame (4-byte length, deterministic CBOR map, wire/framing.py); the caller
moves the bytes and passes `now` in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshp2p.wire import framing
from meshp2p.wire._cbor import check_keys, check_version, dumps, loads_map
from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import frame_bytes
from meshp2p.wire.records import (
    MAX_RECORD_BYTES,
    MeshListing,
    NodeRecord,
    SignedRecord,
    decode_record,
    mesh_key,
    node_key,
)

LISTING_PROTOCOL_ID = "/meshp2p/listing/1.0.0"
#: Two records at their limit plus the map around them.
MAX_FRAME_BYTES = 2 * MAX_RECORD_BYTES + 256
_REQUEST_KEYS = frozenset({"v"})
_ANSWER_KEYS = frozenset({"v", "node", "mesh"})


@dataclass(frozen=True)
class ListingAnswer:
    """A verified answer. `node` is the answering peer's own record; `listing` is its mesh's, or None when it had
    none to give; `listing_value` the listing's exact bytes (to pick the newest of several answers)."""

    node: SignedRecord | None
    listing: SignedRecord | None
    listing_value: bytes | None

    @property
    def mesh_id(self) -> str | None:
        return self.node.body.mesh if self.node is not None and isinstance(self.node.body, NodeRecord) else None

    @property
    def mesh_listing(self) -> MeshListing | None:
        body = self.listing.body if self.listing is not None else None
        return body if isinstance(body, MeshListing) else None


def encode_request() -> bytes:
    return frame_bytes(dumps({"v": 1}), max_bytes=MAX_FRAME_BYTES)


def decode_request(payload: bytes) -> None:
    """Check a request payload (the frame's contents)."""
    m = loads_map(payload, max_bytes=MAX_FRAME_BYTES)
    check_version(m)
    check_keys(m, _REQUEST_KEYS)


def encode_answer(node: bytes | None, listing: bytes | None) -> bytes:
    """The answer frame: our node record's value and our mesh's listing value, either may be None."""
    if listing is not None and node is None:
        raise WireError("malformed", "a listing is only sent with the node record that names its mesh")
    for value in (node, listing):
        if value is not None and len(value) > MAX_RECORD_BYTES:
            raise WireError("oversized", f"record of {len(value)} bytes > {MAX_RECORD_BYTES}")
    return frame_bytes(dumps({"v": 1, "node": node, "mesh": listing}), max_bytes=MAX_FRAME_BYTES)


def decode_answer(payload: bytes, *, peer_id: str, now: float) -> ListingAnswer:
    """Verify an answer payload from `peer_id` (the PeerID of the secured connection) at `now`."""
    m = loads_map(payload, max_bytes=MAX_FRAME_BYTES)
    check_version(m)
    check_keys(m, _ANSWER_KEYS)
    node_value, listing_value = _opt_bytes(m, "node"), _opt_bytes(m, "mesh")
    if node_value is None:
        if listing_value is not None:
            raise WireError("malformed", "a listing without the node record that names its mesh")
        return ListingAnswer(None, None, None)
    node = decode_record(node_key(peer_id), node_value, now=now)
    if listing_value is None:
        return ListingAnswer(node, None, None)
    assert isinstance(node.body, NodeRecord)  # decode_record of a node key gives a NodeRecord
    listing = decode_record(mesh_key(bytes.fromhex(node.body.mesh)), listing_value, now=now)
    return ListingAnswer(node, listing, listing_value)


def _opt_bytes(m: dict[str, Any], key: str) -> bytes | None:
    value = m[key]
    if value is None:
        return None
    if type(value) is not bytes:
        raise WireError("malformed", f"{key!r} is neither bytes nor null")
    if len(value) > MAX_RECORD_BYTES:
        raise WireError("oversized", f"{key!r} is {len(value)} bytes > {MAX_RECORD_BYTES}")
    return value


class SingleFrameReader(framing.SingleFrameReader):
    """The one frame of a listing stream (a request or an answer), at most MAX_FRAME_BYTES."""

    def __init__(self) -> None:
        super().__init__(max_bytes=MAX_FRAME_BYTES)


def read_answer(received: bytes, *, peer_id: str, now: float) -> ListingAnswer:
    """Everything a dialer received before the listener closed the stream, checked as protocols/listing.md says."""
    reader = SingleFrameReader()
    reader.feed(received)
    return decode_answer(reader.eof(), peer_id=peer_id, now=now)
