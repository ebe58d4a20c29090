"""Blackboard posts and sync maps against protocols/vectors/blackboard.json, plus fuzzing: only WireError escapes."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.wire import (
    expect_reason,
    flip_bit,
    generator_check,
    identity,
    ids,
    load_vectors,
    maps_with_keys,
    only_wire_errors,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.blackboard.sync import posts_to_offer
from meshp2p.wire import WireError
from meshp2p.wire import blackboard as bb
from meshp2p.wire._cbor import dumps
from meshp2p.wire.framing import PayloadReader, frame_bytes
from meshp2p.wire.gossip import decode_gossip
from meshp2p.wire.identity import sign_object

V = load_vectors("blackboard.json")
A = identity(V, "A")
B = identity(V, "B")
MINIMAL = V["valid"][0]
NOW: float = MINIMAL["now"]
TTL_S: int = MINIMAL["ttl_s"]


def post_fields(post: bb.Post) -> dict[str, Any]:
    return {
        "id": post.id.hex(),
        "author": post.author,
        "public_key": post.public_key.hex(),
        "ts": post.ts,
        "text": post.text,
        "display_name": post.name,
        "tags": list(post.tags),
        "thread": None if post.thread is None else post.thread.hex(),
    }


def encode_case(case: dict[str, Any]) -> bytes:
    return bb.encode_post(
        identity(V, case["seed"]),
        text=case["text"],
        now=case["now"],
        name=case["display_name"],
        tags=case["tags"],
        thread=None if case["thread"] is None else bytes.fromhex(case["thread"]),
    )


# ---------------------------------------------------------------- vectors


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_blackboard.py") == 0


def test_constants() -> None:
    c = V["constants"]
    assert bytes.fromhex(c["domain"]) == bb.BLACKBOARD_DOMAIN == b"meshp2p/blackboard/v1\x00"
    assert (c["max_post_bytes"], c["max_text_bytes"], c["max_name_chars"]) == (8192, 4096, 64)
    assert (c["max_tags"], c["max_tag_chars"], c["post_id_bytes"]) == (8, 32, 16)
    assert (c["max_post_ahead_s"], c["default_post_ttl_s"]) == (300, 48 * 3600)
    assert (c["max_digest_items"], c["max_sync_posts"]) == (bb.MAX_DIGEST_ITEMS, bb.MAX_SYNC_POSTS)


def test_limits_fit_the_gossip_envelope() -> None:
    """The largest legal post must fit MAX_POST_BYTES, and MAX_POST_BYTES a sealed gossip message."""
    from meshp2p.wire.gossip import MAX_GOSSIP_BYTES

    largest = bytes.fromhex(V["valid"][2]["hex"])
    assert len(largest) < bb.MAX_POST_BYTES and 2 * bb.MAX_POST_BYTES <= MAX_GOSSIP_BYTES
    assert bb.MAX_SYNC_POSTS * (bb.MAX_POST_BYTES + 3) + bb.MAX_DIGEST_ITEMS * 17 + 64 <= bb.MAX_SYNC_REPLY_BYTES
    assert bb.MAX_DIGEST_ITEMS * 27 + 64 <= bb.MAX_DIGEST_BYTES


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_encoding_reproduces_vector(case: dict[str, Any]) -> None:
    assert encode_case(case).hex() == case["hex"]


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_decoding_valid_vector(case: dict[str, Any]) -> None:
    post = bb.decode_post(bytes.fromhex(case["hex"]), now=case["decode_now"], ttl_s=case["ttl_s"])
    assert post_fields(post) == case["post"]
    assert post.author == identity(V, case["seed"]).peer_id


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["data"])
    expect_reason(case["reason"], lambda: bb.decode_post(data, now=case["now"], ttl_s=case["ttl_s"]))


def test_id_is_sha256_of_the_signed_bytes() -> None:
    import hashlib

    import cbor2

    data = bytes.fromhex(MINIMAL["hex"])
    m = cbor2.loads(data)
    signed = bb.BLACKBOARD_DOMAIN + dumps({k: v for k, v in m.items() if k != "sig"})
    assert hashlib.sha256(signed).digest()[:16].hex() == MINIMAL["post"]["id"]
    # A second signature over the same content (Ed25519 allows many for a malicious signer) keeps the id.
    other_sig = dumps({**m, "sig": flip_bit(m["sig"], 0)})
    assert bb._post_id(cbor2.loads(other_sig)) == bytes.fromhex(MINIMAL["post"]["id"])


def test_ttl_and_skew_boundaries() -> None:
    data = bytes.fromhex(MINIMAL["hex"])
    ts_s = MINIMAL["post"]["ts"] / 1000
    bb.decode_post(data, now=ts_s + TTL_S, ttl_s=TTL_S)
    expect_reason("expired", lambda: bb.decode_post(data, now=ts_s + TTL_S + 0.001, ttl_s=TTL_S))
    bb.decode_post(data, now=ts_s - bb.MAX_POST_AHEAD_S, ttl_s=TTL_S)
    expect_reason("future", lambda: bb.decode_post(data, now=ts_s - bb.MAX_POST_AHEAD_S - 0.001, ttl_s=TTL_S))


def test_encoder_sorts_tags_and_refuses_what_peers_would_drop() -> None:
    a = bb.encode_post(A, text="x", now=NOW, tags=["b", "a", "b"])
    b = bb.encode_post(A, text="x", now=NOW, tags=("a", "b"))
    assert a == b and bb.decode_post(a, now=NOW, ttl_s=TTL_S).tags == ("a", "b")
    expect_reason("oversized", lambda: bb.encode_post(A, text="x" * 4097, now=NOW))
    bb.encode_post(A, text="x" * 4096, now=NOW)
    expect_reason("malformed", lambda: bb.encode_post(A, text="", now=NOW))
    expect_reason("malformed", lambda: bb.encode_post(A, text="\ud800", now=NOW))
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=NOW, tags=["GPU"]))
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=NOW, tags="gpu"))  # type: ignore[arg-type]
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=NOW, tags=[1]))  # type: ignore[list-item]
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=NOW, thread=b"short"))
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=NOW, name="a\x1bb"))
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=-1.0))
    expect_reason("malformed", lambda: bb.encode_post(A, text="x", now=float("nan")))


def test_normalizers_make_user_input_postable() -> None:
    text = bb.normalize_text("line 1\r\nline 2\rline 3\x1b[31m red\x00\tend")
    assert text == "line 1\nline 2\nline 3[31m red\tend"
    bb.encode_post(A, text=text, now=NOW)
    assert [bb.normalize_tag(t) for t in ("#GPU", " Llama-CPP ", "x_y")] == ["gpu", "llama-cpp", "x_y"]


# ---------------------------------------------------------------- inside gossip

G = V["gossip"]


def read_gossip(data: bytes) -> tuple[bb.Post, bytes]:
    msg = decode_gossip(data, mesh_id=bytes.fromhex(G["mesh_id"]), topic=G["topic"], now=G["now"], secret=None)
    return bb.post_from_gossip(msg, now=G["now"], ttl_s=G["ttl_s"])


def test_gossip_vector() -> None:
    (case,) = G["valid"]
    post, raw = read_gossip(bytes.fromhex(case["data"]))
    assert raw.hex() == case["post_hex"] and post_fields(post) == case["post"]
    assert bb.post_to_body(raw) == {"post": raw}


@pytest.mark.parametrize("case", G["invalid"], ids=ids(G["invalid"]))
def test_gossip_invalid_vector(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: read_gossip(bytes.fromhex(case["data"])))


# ---------------------------------------------------------------- sync

S = V["sync"]


@pytest.mark.parametrize("case", S["digests"], ids=ids(S["digests"]))
def test_digest_vector(case: dict[str, Any]) -> None:
    digest = bb.SyncDigest(case["since_ms"], tuple((bytes.fromhex(pid), ts) for pid, ts in case["have"]))
    assert bb.encode_digest(digest).hex() == case["hex"]
    assert bb.decode_digest(bytes.fromhex(case["hex"])) == digest


@pytest.mark.parametrize("case", S["replies"], ids=ids(S["replies"]))
def test_reply_vector(case: dict[str, Any]) -> None:
    reply = bb.SyncReply(
        tuple(bytes.fromhex(p) for p in case["posts"]), tuple(bytes.fromhex(p) for p in case["want"]), case["more"]
    )
    assert bb.encode_sync_reply(reply).hex() == case["hex"]
    assert bb.decode_sync_reply(bytes.fromhex(case["hex"])) == reply
    for post in reply.posts:
        bb.decode_post(post, now=NOW, ttl_s=TTL_S)


@pytest.mark.parametrize("case", S["invalid"], ids=ids(S["invalid"]))
def test_sync_invalid_vector(case: dict[str, Any]) -> None:
    data = bytes(case["zero_bytes"]) if "zero_bytes" in case else bytes.fromhex(case["data"])
    decode = bb.decode_digest if case["kind"] == "digest" else bb.decode_sync_reply
    expect_reason(case["reason"], lambda: decode(data))


def test_session_vector_replays_through_the_framing_and_the_sync_rules() -> None:
    session = S["session"]
    assert session["protocol"] == bb.SYNC_PROTOCOL_ID and session["max_frame_bytes"] == bb.MAX_SYNC_REPLY_BYTES
    stream = b"".join(bytes.fromhex(f["hex"]) for f in session["frames"])
    reader = PayloadReader(max_bytes=bb.MAX_SYNC_REPLY_BYTES)
    payloads = [p for i in range(0, len(stream), 7) for p in reader.feed(stream[i : i + 7])]
    assert reader.buffered == 0 and len(payloads) == 3
    digest = bb.decode_digest(payloads[0])
    offered = bb.decode_sync_reply(payloads[1])
    post = bb.decode_post(offered.posts[0], now=NOW, ttl_s=TTL_S)
    # The peer holding that one post decides exactly what the vector shows.
    assert posts_to_offer([(post.id, post.ts)], digest, set()) == ([post.id], False)
    assert bb.decode_sync_reply(payloads[2]) == bb.SyncReply((), (), False)
    assert frame_bytes(payloads[1], max_bytes=bb.MAX_SYNC_REPLY_BYTES).hex() == session["frames"][1]["hex"]


def test_frames_over_the_limit_are_refused_from_the_header() -> None:
    reader = PayloadReader(max_bytes=bb.MAX_SYNC_REPLY_BYTES)
    expect_reason("oversized", lambda: reader.feed((bb.MAX_SYNC_REPLY_BYTES + 1).to_bytes(4, "big")))
    expect_reason("oversized", lambda: reader.feed(b""))  # and it stays failed


def test_make_digest_orders_filters_and_truncates() -> None:
    items = [(bytes([i % 256, i // 256]) * 8, 1000 + i) for i in range(bb.MAX_DIGEST_ITEMS + 10)]
    digest = bb.make_digest(1005, list(reversed(items)))
    assert len(digest.have) == bb.MAX_DIGEST_ITEMS
    assert [ts for _, ts in digest.have] == sorted((ts for _, ts in digest.have), reverse=True)
    assert digest.since_ms == digest.have[-1][1] == 1000 + 10
    bb.decode_digest(bb.encode_digest(digest))
    small = bb.make_digest(1005, items[:8])
    assert small.since_ms == 1005 and [ts for _, ts in small.have] == [1007, 1006, 1005]


# ---------------------------------------------------------------- hostile input

POST_KEYS = ["v", "pk", "ts", "text", "name", "tags", "thread", "sig"]
VALID_POSTS = [bytes.fromhex(case["hex"]) for case in V["valid"]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    assert not only_wire_errors(lambda: bb.decode_post(data, now=NOW, ttl_s=TTL_S))
    only_wire_errors(lambda: bb.decode_digest(data))
    only_wire_errors(lambda: bb.decode_sync_reply(data))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_POSTS), st.integers(min_value=0))
def test_any_bit_flip_is_rejected(data: bytes, bit: int) -> None:
    assert not only_wire_errors(lambda: bb.decode_post(flip_bit(data, bit), now=NOW, ttl_s=TTL_S))


@settings(max_examples=300, deadline=None)
@given(maps_with_keys(POST_KEYS, {"v": 1}))
def test_random_fields_only_raise_wire_error(m: dict[str, Any]) -> None:
    try:
        data = dumps(m)
    except WireError:
        return
    assert not only_wire_errors(lambda: bb.decode_post(data, now=NOW, ttl_s=TTL_S))


@settings(max_examples=200, deadline=None)
@given(maps_with_keys(["v", "pk", "ts", "text", "name", "tags", "thread"], {"v": 1, "pk": A.public_key}))
def test_random_fields_correctly_signed_only_raise_wire_error(m: dict[str, Any]) -> None:
    """Signed with A's key, so decoding gets past the signature to the time checks when the fields are valid."""
    try:
        data = dumps(sign_object(A, bb.BLACKBOARD_DOMAIN, m))
    except WireError:
        return
    only_wire_errors(lambda: bb.decode_post(data, now=NOW, ttl_s=TTL_S))


@settings(max_examples=200, deadline=None)
@given(maps_with_keys(["v", "since", "have"], {"v": 1}), maps_with_keys(["v", "posts", "want", "more"], {"v": 1}))
def test_random_sync_maps_only_raise_wire_error(digest: dict[str, Any], reply: dict[str, Any]) -> None:
    for m, decode in ((digest, bb.decode_digest), (reply, bb.decode_sync_reply)):
        try:
            data = dumps(m)
        except WireError:
            continue
        only_wire_errors(lambda data=data, decode=decode: decode(data))  # type: ignore[misc]


@settings(max_examples=100, deadline=None)
@given(
    st.text(min_size=1, max_size=200).map(bb.normalize_text).filter(bool),
    st.none() | st.text(min_size=1, max_size=64).filter(lambda s: s.isprintable()),
    st.lists(st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True), max_size=8),
    st.none() | st.binary(min_size=16, max_size=16),
)
def test_round_trip(text: str, name: str | None, tags: list[str], thread: bytes | None) -> None:
    try:
        data = bb.encode_post(B, text=text, now=NOW, name=name, tags=tags, thread=thread)
    except WireError as exc:  # lone surrogates from st.text
        assert exc.reason == "malformed"
        return
    post = bb.decode_post(data, now=NOW, ttl_s=TTL_S)
    assert (post.text, post.name, post.tags, post.thread) == (text, name, tuple(sorted(set(tags))), thread)
    assert post.author == B.peer_id and post.ts == int(NOW * 1000)
