"""Every other decoder of bytes from the network or a user: 10 000 hostile inputs each, only WireError comes out.

Inputs start from the spec's vectors (protocols/vectors/): bit flips, truncations, splices and random bytes of the
valid encodings, and for CBOR bodies the valid maps with one field wrong. Stream machines (tunnels, join, listing)
are fed the hostile bytes in two chunks, as a stream would deliver them, then told of the EOF.
"""

from __future__ import annotations

import cbor2
import pytest
from helpers.fuzz import FUZZ_EXAMPLES, fuzz, hostile_bytes, hostile_cbor, mutated
from helpers.wire import load_vectors
from hypothesis import strategies as st

from meshp2p.wire.blackboard import decode_digest, decode_post, decode_sync_reply
from meshp2p.wire.demand import demand_from_body
from meshp2p.wire.gossip import decode_gossip
from meshp2p.wire.join import FrameReader, JoinListener
from meshp2p.wire.listing import read_answer
from meshp2p.wire.rpc_tunnel import RpcListener
from meshp2p.wire.status import status_from_body
from meshp2p.wire.token import decode_token
from meshp2p.wire.tunnel import TunnelClientConnection, TunnelServerConnection

GOSSIP = load_vectors("gossip.json")
TOKENS = load_vectors("invite-token.json")
TUNNEL = load_vectors("http-tunnel.json")
RPC = load_vectors("rpc-tunnel.json")
JOIN = load_vectors("join.json")
LISTING = load_vectors("listing.json")
BOARD = load_vectors("blackboard.json")


def _split(data: bytes, at: int) -> tuple[bytes, bytes]:
    cut = at % (len(data) + 1)
    return data[:cut], data[cut:]


def _chunked(valid: list[bytes]) -> st.SearchStrategy[tuple[bytes, bytes]]:
    return st.tuples(hostile_bytes(valid), st.integers(min_value=0)).map(lambda t: _split(*t))


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_gossip_envelopes_10k(sealed: bool) -> None:
    cases = [c for c in GOSSIP["valid"] if (c["secret"] is not None) == sealed]
    assert cases, "the vectors have both kinds"
    case = cases[0]
    data = [bytes.fromhex(c["data"]) for c in cases]
    mesh_id, secret = bytes.fromhex(case["mesh_id"]), bytes.fromhex(case["secret"]) if sealed else None
    hostile = hostile_bytes(data)
    if not sealed:
        hostile = hostile | hostile_cbor([cbor2.loads(d) for d in data])
    count = fuzz(hostile, lambda d: decode_gossip(d, mesh_id=mesh_id, topic=case["topic"],
                                                  now=case["decode_now"], secret=secret))
    assert count >= FUZZ_EXAMPLES


def test_status_and_demand_bodies_10k() -> None:
    bodies = [c["body"] for c in GOSSIP["valid"] if c["type"] == "status"]
    assert fuzz(mutated(bodies), status_from_body) >= FUZZ_EXAMPLES
    rates = {"v": 1, "rates": {"gemma-3-270m": 4.5, "qwen": 0.25}}
    assert fuzz(mutated([rates]), demand_from_body) >= FUZZ_EXAMPLES


def test_invite_tokens_10k() -> None:
    valid = [c["token"] for c in TOKENS["valid"]]
    alphabet = st.sampled_from("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0OIl+/= \n")
    hostile = st.one_of(
        st.text(max_size=200),
        st.text(alphabet, max_size=300).map(lambda t: "mp1" + t),
        st.tuples(st.sampled_from(valid), st.integers(min_value=0), alphabet).map(
            lambda t: t[0][: t[1] % len(t[0])] + t[2] + t[0][t[1] % len(t[0]) + 1:]),
        st.tuples(st.sampled_from(valid), st.integers(min_value=0)).map(lambda t: t[0][: t[1] % len(t[0])]),
    )
    assert fuzz(hostile, lambda text: decode_token(text, now=TOKENS["valid"][0]["now"])) >= FUZZ_EXAMPLES


def test_http_tunnel_frames_10k_both_sides() -> None:
    frames = [bytes.fromhex(f["hex"]) for f in TUNNEL["frames"]]
    valid = [*frames, b"".join(frames[:3])]

    def server(chunks: tuple[bytes, bytes]) -> None:
        conn = TunnelServerConnection()
        for chunk in chunks:
            conn.receive(chunk)
        conn.eof()

    def client(chunks: tuple[bytes, bytes]) -> None:
        conn = TunnelClientConnection()
        for chunk in chunks:
            conn.receive(chunk)
        conn.eof()

    assert fuzz(_chunked(valid), server) >= FUZZ_EXAMPLES
    assert fuzz(_chunked(valid), client) >= FUZZ_EXAMPLES


def test_rpc_tunnel_hello_10k() -> None:
    valid = [bytes.fromhex(h["hex"]) for h in RPC["hellos"]]

    def listener(chunks: tuple[bytes, bytes]) -> None:
        machine = RpcListener()
        for chunk in chunks:
            if machine.receive(chunk) is not None:
                return

    assert fuzz(_chunked(valid), listener) >= FUZZ_EXAMPLES


def test_join_frames_10k() -> None:
    case = JOIN["handshakes"][0]
    valid = [bytes.fromhex(r) for c in JOIN["invalid"] for r in c["received"] if isinstance(r, str)]
    meshes = {bytes.fromhex(case["mesh_id"]): bytes.fromhex(case["secret"]) if case["secret"] else b""}

    def listen(chunks: tuple[bytes, bytes]) -> None:
        reader = FrameReader()
        listener = JoinListener(meshes, local_peer_id=b"\x00\x24listener", remote_peer_id=b"\x00\x24dialer")
        for chunk in chunks:
            for msg in reader.feed(chunk):
                listener.receive(msg)

    assert fuzz(_chunked(valid), listen) >= FUZZ_EXAMPLES


def test_listing_answers_10k() -> None:
    case = LISTING["answers"][0]
    valid = [bytes.fromhex(a["received"]) for a in LISTING["answers"]]

    def answer(chunks: tuple[bytes, bytes]) -> None:
        read_answer(b"".join(chunks), peer_id=case["peer_id"], now=case["now"])

    assert fuzz(_chunked(valid), answer) >= FUZZ_EXAMPLES


def test_blackboard_posts_and_sync_frames_10k() -> None:
    posts = [bytes.fromhex(c["hex"]) for c in BOARD["valid"]]
    case = BOARD["valid"][0]
    assert fuzz(hostile_bytes(posts) | hostile_cbor([cbor2.loads(p) for p in posts]),
                lambda d: decode_post(d, now=case["decode_now"], ttl_s=case["ttl_s"])) >= FUZZ_EXAMPLES
    sync = BOARD["sync"]
    digests = [bytes.fromhex(d["hex"]) for d in sync["digests"]]
    replies = [bytes.fromhex(r["hex"]) for r in sync["replies"]]
    assert fuzz(hostile_bytes(digests), decode_digest) >= FUZZ_EXAMPLES
    assert fuzz(hostile_bytes(replies), decode_sync_reply) >= FUZZ_EXAMPLES
