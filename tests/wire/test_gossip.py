"""Gossip messages against protocols/vectors/gossip.json, plus replay state and fuzzing."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from helpers.wire import expect_reason, flip_bit, identity, ids, load_vectors, maps_with_keys, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import (
    ReplayGuard,
    SequenceCounter,
    ShardOffer,
    StatusBody,
    WireError,
    decode_gossip,
    encode_gossip,
    status_from_body,
    status_to_body,
    topic_name,
)
from meshp2p.wire._cbor import dumps
from meshp2p.wire.gossip import (
    GOSSIP_DOMAIN,
    MAX_MESSAGE_AGE_S,
    MAX_MESSAGE_AHEAD_S,
    SEALED_SIZES,
    check_topic,
    gossip_key,
    is_sealed_topic,
    parse_topic,
    topic_key,
)
from meshp2p.wire.identity import sign_object
from meshp2p.wire.model_id import parse_content_id
from meshp2p.wire.status import Recruit

V = load_vectors("gossip.json")
A = identity(V, "A")
B = identity(V, "B")
PUBLIC, DEMAND, PRIVATE = V["valid"]


def opt_hex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def decode_case(case: dict[str, Any], data: bytes | None = None, **changes: Any) -> Any:
    args = {
        "mesh_id": bytes.fromhex(case["mesh_id"]),
        "topic": case["topic"],
        "now": case.get("decode_now", case["now"]),
        "secret": opt_hex(case["secret"]),
        **changes,
    }
    return decode_gossip(bytes.fromhex(case["data"]) if data is None else data, **args)


def status(body: dict[str, Any]) -> StatusBody:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in body.items()}
    fields["files"] = {model: parse_content_id(text) for model, text in body.get("files", {}).items()}
    fields["recruit"] = {model: Recruit(parse_content_id(call["file"]), tuple(call["peers"]))
                         for model, call in body.get("recruit", {}).items()}
    fields["moe_shards"] = {parse_content_id(cid): ShardOffer(offer["cap_bytes"], offer["usage"])
                            for cid, offer in body.get("moe_shards", {}).items()}
    return StatusBody(**fields)


def test_topics_and_keys() -> None:
    for case in V["topics"]:
        mesh_id, secret = bytes.fromhex(case["mesh_id"]), opt_hex(case["secret"])
        assert topic_name(mesh_id, case["name"], secret) == case["topic"]
        assert check_topic(case["topic"], mesh_id, secret) == case["name"]
        if secret is None:
            assert parse_topic(case["topic"]) == (mesh_id, case["name"])
        else:
            # A private mesh's topic names neither the mesh nor the purpose.
            assert is_sealed_topic(case["topic"])
            assert mesh_id.hex() not in case["topic"] and case["name"] not in case["topic"]
    for case in V["gossip_keys"]:
        mesh_id, secret = bytes.fromhex(case["mesh_id"]), bytes.fromhex(case["secret"])
        assert gossip_key(mesh_id, secret).hex() == case["key"]
        assert topic_key(mesh_id, secret).hex() == case["topic_key"]
    expect_reason("malformed", lambda: topic_name(bytes(16), "chat"))
    for topic in ("/meshp2p/00/status/1", "/meshp2p/" + "0" * 32 + "/status/2", "meshp2p", "/x/" + "0" * 32 + "/s/1"):
        expect_reason("malformed", lambda topic=topic: parse_topic(topic))


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_encoding_reproduces_vector(case: dict[str, Any]) -> None:
    data = encode_gossip(
        identity(V, case["seed"]),
        bytes.fromhex(case["mesh_id"]),
        case["topic"],
        case["type"],
        case["body"],
        seq=case["seq"],
        now=case["now"],
        secret=opt_hex(case["secret"]),
        nonce=opt_hex(case["nonce"]),
    )
    assert data.hex() == case["data"]


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_decoding_valid_vector(case: dict[str, Any]) -> None:
    msg = decode_case(case)
    assert msg.type == case["type"]
    assert msg.sender == case["sender"] == A.peer_id
    assert msg.public_key == A.public_key
    assert msg.seq == case["seq"]
    assert msg.sent_at_ms == case["sent_at_ms"]
    assert msg.body == case["body"]


def test_status_body_round_trip() -> None:
    body = PUBLIC["body"]
    assert status_from_body(body) == status(body)
    assert status_to_body(status(body)) == body
    assert status_from_body({**body, "added_later": [1, 2]}) == status(body)
    whole = status({**body, "load": 2, "rtt_ms": {B.peer_id: 3}})
    assert status_from_body(status_to_body(whole)).load == 2.0
    # `addrs`, `loading` and `files` were added within v1: a body from a node that does not send them is still read.
    older = status_from_body({k: v for k, v in body.items()
                              if k not in ("addrs", "loading", "files", "recruit", "moe_shards")})
    assert (older.addrs, older.loading, older.files, older.recruit, older.moe_shards) == ((), (), {}, {}, {})
    assert status_from_body(body).recruit["Qwen/Qwen3-8B-GGUF:Q4_K_M"].peers == (B.peer_id,)
    assert status_from_body(body).files["Qwen/Qwen3-8B-GGUF:Q4_K_M"].size == 5_027_783_488


@pytest.mark.parametrize("case", V["status_invalid"], ids=ids(V["status_invalid"]))
def test_invalid_status_body(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: status_from_body(case["body"]))


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: decode_case(case, bytes.fromhex(case["data"])))


def test_age_window_boundaries() -> None:
    now = PUBLIC["now"]
    assert decode_case(PUBLIC, now=now + MAX_MESSAGE_AGE_S).seq == PUBLIC["seq"], "accepted at the oldest edge"
    expect_reason("expired", lambda: decode_case(PUBLIC, now=now + MAX_MESSAGE_AGE_S + 0.001))
    assert decode_case(PUBLIC, now=now - MAX_MESSAGE_AHEAD_S).seq == PUBLIC["seq"], "accepted at the newest edge"
    expect_reason("future", lambda: decode_case(PUBLIC, now=now - MAX_MESSAGE_AHEAD_S - 0.001))


def test_private_messages_need_the_secret_and_fresh_nonces() -> None:
    mesh_id, secret = bytes.fromhex(PRIVATE["mesh_id"]), bytes.fromhex(PRIVATE["secret"])
    args = (A, mesh_id, PRIVATE["topic"], "status", PRIVATE["body"])
    first = encode_gossip(*args, seq=1, now=PRIVATE["now"], secret=secret)
    second = encode_gossip(*args, seq=1, now=PRIVATE["now"], secret=secret)
    assert first != second  # random nonce
    assert A.public_key not in first and mesh_id not in first  # neither sender nor mesh shows to non-members
    # Without the secret a node cannot even tell the topic is this mesh's.
    expect_reason("key_mismatch", lambda: decode_case(PRIVATE, first, secret=None))
    expect_reason("malformed", lambda: decode_case(PRIVATE, first, secret=None, topic=topic_name(mesh_id, "status")))
    expect_reason("bad_mesh_id", lambda: encode_gossip(*args, seq=1, now=PRIVATE["now"], secret=bytes(32)))
    public_args = (A, bytes.fromhex(PUBLIC["mesh_id"]), PRIVATE["topic"], "status", {})
    expect_reason("key_mismatch", lambda: encode_gossip(*public_args, seq=1, now=PUBLIC["now"], secret=None))


def test_sealed_messages_come_in_a_few_sizes() -> None:
    """Status, demand and a post are indistinguishable by size: each sealed message is padded to SEALED_SIZES."""
    mesh_id, secret = bytes.fromhex(PRIVATE["mesh_id"]), bytes.fromhex(PRIVATE["secret"])
    now = PRIVATE["now"]
    sizes = set()
    for name, body in (("status", PRIVATE["body"]), ("demand", DEMAND["body"]), ("blackboard", {"text": "hi"}),
                       ("blackboard", {"text": "x" * 2000}), ("blackboard", {"text": "x" * 9000})):
        data = encode_gossip(A, mesh_id, topic_name(mesh_id, name, secret), name, body, seq=1, now=now, secret=secret)
        assert len(data) in SEALED_SIZES
        assert decode_gossip(data, mesh_id=mesh_id, topic=topic_name(mesh_id, name, secret), now=now,
                             secret=secret).body == body
        sizes.add(len(data))
    assert sizes == set(SEALED_SIZES)
    too_big = {"text": "x" * (SEALED_SIZES[-1] - 200)}
    expect_reason("oversized", lambda: encode_gossip(A, mesh_id, topic_name(mesh_id, "blackboard", secret),
                                                     "blackboard", too_big, seq=1, now=now, secret=secret))


def test_encoder_refuses_oversized_and_bad_fields() -> None:
    mesh_id = bytes.fromhex(PUBLIC["mesh_id"])
    topic, now = PUBLIC["topic"], PUBLIC["now"]
    huge = {"pad": "x" * 20000}
    expect_reason("oversized", lambda: encode_gossip(A, mesh_id, topic, "status", huge, seq=1, now=now, secret=None))
    expect_reason("malformed", lambda: encode_gossip(A, mesh_id, topic, "status", {}, seq=-1, now=now, secret=None))
    expect_reason("malformed", lambda: encode_gossip(A, mesh_id, topic, "", {}, seq=1, now=now, secret=None))


def test_replay_vector() -> None:
    guard = ReplayGuard()
    for step in V["replay"]:
        if step["reason"] is None:
            guard.accept(step["sender"], step["seq"])
        else:
            expect_reason(step["reason"], lambda step=step: guard.accept(step["sender"], step["seq"]))
    assert guard.last_seq(A.peer_id) == 7 and len(guard) == 2


def test_replay_guard_evicts_least_recently_seen() -> None:
    guard = ReplayGuard(max_senders=2)
    guard.accept("a", 1)
    guard.accept("b", 1)
    guard.accept("a", 2)  # "b" is now the least recently seen
    guard.accept("c", 1)
    assert guard.last_seq("b") is None and guard.last_seq("a") == 2 and len(guard) == 2
    expect_reason("replay", lambda: guard.accept("a", 2))
    assert guard.last_seq("a") == 2


def test_sequence_vector_and_restart() -> None:
    counter = SequenceCounter()
    for step in V["sequence"]:
        assert counter.next(now=step["now"]) == step["seq"]
    before = [counter.next(now=V["sequence"][-1]["now"]) for _ in range(10)]
    restarted = SequenceCounter().next(now=V["sequence"][-1]["now"] + 0.1)
    assert restarted > max(before)


def test_one_counter_per_mesh_with_one_guard_per_topic() -> None:
    """Topics are not ordered against each other, so a guard per topic accepts interleaved delivery."""
    counter = SequenceCounter()
    now = PUBLIC["now"]
    status_seq, demand_seq = counter.next(now=now), counter.next(now=now)
    status_guard, demand_guard = ReplayGuard(), ReplayGuard()
    demand_guard.accept(A.peer_id, demand_seq)
    status_guard.accept(A.peer_id, status_seq)  # arrived later, still accepted on its own topic
    assert status_seq < demand_seq, "one counter for both topics"
    assert (status_guard.last_seq(A.peer_id), demand_guard.last_seq(A.peer_id)) == (status_seq, demand_seq)
    with pytest.raises(WireError):
        status_guard.accept(A.peer_id, status_seq)  # the same message again on its topic is a replay


# ---------------------------------------------------------------- hostile input

VALID = [(case, bytes.fromhex(case["data"])) for case in V["valid"]]
INNER_KEYS = ["v", "t", "mesh", "pk", "seq", "ts", "body", "sig"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([PUBLIC, PRIVATE]))
def test_random_bytes_only_raise_wire_error(data: bytes, case: dict[str, Any]) -> None:
    assert not only_wire_errors(lambda: decode_case(case, data))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.integers(min_value=0), st.data())
def test_bit_flips_and_truncations_are_rejected(valid: tuple[dict[str, Any], bytes], bit: int, data: Any) -> None:
    case, encoded = valid
    assert not only_wire_errors(lambda: decode_case(case, flip_bit(encoded, bit)))
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    assert not only_wire_errors(lambda: decode_case(case, encoded[:cut]))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=511))
def test_flipped_signature_is_never_accepted(bit: int) -> None:
    m = cbor2.loads(bytes.fromhex(PUBLIC["data"]))
    expect_reason("bad_signature", lambda: decode_case(PUBLIC, dumps({**m, "sig": flip_bit(m["sig"], bit)})))


@settings(max_examples=100, deadline=None)  # generating nested maps is the slow part
@given(maps_with_keys(INNER_KEYS, {"v": 1, "mesh": bytes.fromhex(PUBLIC["mesh_id"])}))
def test_structured_garbage_only_raises_wire_error(m: dict[str, Any]) -> None:
    try:
        data = cbor2.dumps(m, canonical=True)
    except (cbor2.CBOREncodeError, ValueError):
        return
    assert not only_wire_errors(lambda: decode_case(PUBLIC, data))
    # Correctly signed garbage gets past the signature and must still only raise WireError in the body reader.
    signed = {**m, "pk": A.public_key}
    try:
        data = cbor2.dumps(sign_object(A, GOSSIP_DOMAIN, signed), canonical=True)
    except (cbor2.CBOREncodeError, ValueError):
        return
    if only_wire_errors(lambda: decode_case(PUBLIC, data)):
        only_wire_errors(lambda: status_from_body(m["body"]))
