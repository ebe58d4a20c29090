"""Write listing.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Same conventions as generate.py (fixed seeds and times, lowercase hex, every negative vector checked against the
implementation to fail with the reason it names). An answer vector is everything the dialer received before the
listener closed the stream, checked with `read_answer(received, peer_id, now)`.

    /work/venv/bin/python protocols/vectors/generate_listing.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_listing.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cbor2

from meshp2p.wire import listing as lp
from meshp2p.wire._cbor import dumps
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.records import KIND_MESH, KIND_NODE, MAX_RECORD_BYTES, MeshListing, NodeRecord, encode_record

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import expect, write_or_check

FILE_NAME = "listing.json"
SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
NOW = 1_750_000_000
TTL_S = 300
A = Identity.from_seed(SEED_A)  # the listener, a member of Poker-Night
B = Identity.from_seed(SEED_B)  # another node
MESH = named_mesh_id("Poker-Night")
OTHER_MESH = named_mesh_id("Other-Mesh")


def raw_frame(payload: bytes) -> bytes:
    """A frame around any payload, for the negative vectors no encoder would write."""
    return len(payload).to_bytes(4, "big") + payload


def node_record(who: Identity, mesh: bytes = MESH, *, now: int = NOW) -> bytes:
    body = NodeRecord(mesh=mesh.hex(), region="AU", role="host", addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{who.peer_id}",),
                      models=("gemma-3-270m",), version="0.1.0")
    return encode_record(who, KIND_NODE, who.peer_id, body, now=now, ttl_s=TTL_S)[1]


def listing_record(signer: Identity, mesh: bytes = MESH, *, now: int = NOW) -> bytes:
    body = MeshListing(name="poker-night", region="AU", public=True, nodes=2, clients=1, max_clients=None,
                       served=("gemma-3-270m",), wanted=(), capacity_mb=16384,
                       addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{A.peer_id}",), version="0.1.0")
    return encode_record(signer, KIND_MESH, mesh.hex(), body, now=now, ttl_s=TTL_S)[1]


def answer_map(node: Any, mesh: Any, **changes: Any) -> bytes:
    return raw_frame(dumps({"v": 1, "node": node, "mesh": mesh, **changes}))


def tampered(value: bytes) -> bytes:
    m = cbor2.loads(value)
    return dumps({**m, "sig": m["sig"][:-1] + bytes([m["sig"][-1] ^ 0x01])})


def answer_vectors() -> list[dict[str, Any]]:
    node, listing = node_record(A), listing_record(B)  # anyone may sign a listing; the node record must be A's
    cases = []
    for name, n, m in [("node_and_listing", node, listing), ("node_only", node, None), ("nothing", None, None)]:
        received = lp.encode_answer(n, m)
        got = lp.read_answer(received, peer_id=A.peer_id, now=NOW)
        assert got.mesh_id == (MESH.hex() if n else None) and got.listing_value == m, name
        cases.append({
            "name": name, "peer_id": A.peer_id, "now": NOW, "received": received.hex(),
            "node": None if n is None else n.hex(), "mesh": None if m is None else m.hex(),
            "mesh_id": got.mesh_id, "listing_name": None if got.mesh_listing is None else got.mesh_listing.name,
        })
    return cases


def invalid_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    node, listing = node_record(A), listing_record(B)

    def bad(name: str, reason: str, received: bytes) -> None:
        expect(reason, lambda: lp.read_answer(received, peer_id=A.peer_id, now=NOW), name)
        cases.append({"name": name, "peer_id": A.peer_id, "now": NOW, "received": received.hex(), "reason": reason})

    good = lp.encode_answer(node, listing)
    bad("frame_over_limit", "oversized", (lp.MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    bad("empty_frame", "malformed", raw_frame(b""))
    bad("not_a_map", "malformed", raw_frame(dumps([1, node, listing])))
    bad("bad_version", "bad_version", answer_map(node, listing, v=2))
    bad("extra_key", "malformed", answer_map(node, listing, addrs=[]))
    bad("missing_mesh", "malformed", raw_frame(dumps({"v": 1, "node": node})))
    bad("listing_without_node", "malformed", answer_map(None, listing))
    bad("node_is_text", "malformed", answer_map(node.hex(), None))
    bad("node_over_record_limit", "oversized", answer_map(node + bytes(MAX_RECORD_BYTES + 1 - len(node)), None))
    bad("node_record_of_another_node", "key_mismatch", answer_map(node_record(B), None))
    bad("node_record_tampered", "bad_signature", answer_map(tampered(node), listing))
    bad("node_record_expired", "expired", answer_map(node_record(A, now=NOW - TTL_S), listing))
    bad("listing_tampered", "bad_signature", answer_map(node, tampered(listing)))
    bad("listing_expired", "expired", answer_map(node, listing_record(B, now=NOW - TTL_S)))
    bad("listing_of_another_mesh", "key_mismatch", answer_map(node, listing_record(B, OTHER_MESH)))
    bad("bytes_after_the_frame", "malformed", good + b"\x00")
    bad("truncated_frame", "truncated", good[:-1])
    bad("nothing", "truncated", b"")
    return cases


def build() -> dict[str, Any]:
    request = lp.encode_request()
    lp.decode_request(request[4:])
    return {
        "format": "listing",
        "spec": "protocols/listing.md",
        "constants": {"protocol_id": lp.LISTING_PROTOCOL_ID, "max_frame_bytes": lp.MAX_FRAME_BYTES,
                      "max_record_bytes": MAX_RECORD_BYTES},
        "seeds": {"A": SEED_A.hex(), "B": SEED_B.hex()},
        "request": request.hex(),
        "answers": answer_vectors(),
        "invalid": invalid_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", lambda: {FILE_NAME: build()}, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
