"""DHT records against protocols/vectors/dht-records.json, plus hostile-input fuzzing."""

from __future__ import annotations

import dataclasses
from typing import Any

import cbor2
import pytest
from helpers.wire import expect_reason, flip_bit, identity, ids, load_vectors, maps_with_keys, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import WireError
from meshp2p.wire._cbor import dumps
from meshp2p.wire.identity import sign_object
from meshp2p.wire.records import (
    MAX_CLOCK_SKEW_S,
    RECORD_DOMAIN,
    MeshListing,
    NodeRecord,
    decode_record,
    encode_record,
    mesh_key,
    named_mesh_id,
    node_key,
    private_mesh_id,
    provider_key,
    select_record,
)

V = load_vectors("dht-records.json")
A = identity(V, "A")
B = identity(V, "B")
MESH_VALUE = V["valid"][0]
NOW = MESH_VALUE["now"]


def typed_body(kind: str, body: dict[str, Any]) -> MeshListing | NodeRecord:
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in body.items()}
    return MeshListing(**fields) if kind == "mesh" else NodeRecord(**fields)


def as_json(body: MeshListing | NodeRecord) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(body).items()}


@pytest.mark.parametrize("case", V["named_mesh_ids"], ids=lambda c: c["name"].strip())
def test_named_mesh_ids(case: dict[str, Any]) -> None:
    assert named_mesh_id(case["name"]).hex() == case["mesh_id"]
    assert named_mesh_id(case["normalised"]).hex() == case["mesh_id"]


def test_private_mesh_ids_and_keys() -> None:
    for case in V["private_mesh_ids"]:
        assert private_mesh_id(bytes.fromhex(case["secret"])).hex() == case["mesh_id"]
    mesh, node = V["keys"]
    assert mesh_key(bytes.fromhex(mesh["mesh_id"])) == mesh["key"]
    assert node_key(node["peer_id"]) == node["key"]


def test_provider_keys() -> None:
    keys = {case["topic"]: case["key"] for case in V["provider_keys"]}
    for topic, key in keys.items():
        assert provider_key(topic).hex() == key
        assert bytes.fromhex(key)[:2] == b"\x12\x20" and len(bytes.fromhex(key)) == 34
    assert keys["region:au"] == keys["region:AU"]
    assert len(set(keys.values())) == len(keys) - 1
    for topic in ("", "mesh", "region:", "model:", "region:" + "x" * 129):
        expect_reason("malformed", lambda topic=topic: provider_key(topic))


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_encoding_reproduces_vector(case: dict[str, Any]) -> None:
    key, value = encode_record(
        identity(V, case["seed"]),
        case["kind"],
        case["subject"],
        typed_body(case["kind"], case["body"]),
        now=case["now"],
        ttl_s=case["ttl_s"],
    )
    assert key == case["key"]
    assert value.hex() == case["value"]


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_decoding_valid_vector(case: dict[str, Any]) -> None:
    record = decode_record(case["key"], bytes.fromhex(case["value"]), now=case["now"])
    assert record.kind == case["kind"]
    assert record.subject == case["subject"]
    assert record.publisher == case["publisher"]
    assert record.public_key.hex() == case["public_key"]
    assert (record.issued_at, record.expires_at) == (case["issued_at"], case["expires_at"])
    assert as_json(record.body) == case["body"]


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: decode_record(case["key"], bytes.fromhex(case["value"]), now=case["now"]))


@pytest.mark.parametrize("case", V["select"], ids=ids(V["select"]))
def test_select_vector(case: dict[str, Any]) -> None:
    values = [bytes.fromhex(v) for v in case["values"]]
    if case["index"] is None:
        expect_reason(case["reason"], lambda: select_record(case["key"], values, now=case["now"]))
    else:
        assert select_record(case["key"], values, now=case["now"]) == case["index"]
        assert select_record(case["key"], values[::-1], now=case["now"]) == len(values) - 1 - case["index"]


def test_time_boundaries() -> None:
    body = typed_body("mesh", MESH_VALUE["body"])
    key, value = encode_record(A, "mesh", MESH_VALUE["subject"], body, now=NOW, ttl_s=60)
    assert decode_record(key, value, now=NOW + 59.999).body == body, "accepted until it expires"
    expect_reason("expired", lambda: decode_record(key, value, now=NOW + 60))
    assert decode_record(key, value, now=NOW - MAX_CLOCK_SKEW_S).body == body, "accepted at the clock skew allowed"
    expect_reason("future", lambda: decode_record(key, value, now=NOW - MAX_CLOCK_SKEW_S - 0.001))


def test_unknown_body_keys_are_ignored_but_signed() -> None:
    m = {
        "v": 1,
        "k": "mesh",
        "s": MESH_VALUE["subject"],
        "pk": A.public_key,
        "iat": NOW,
        "exp": NOW + 60,
        "body": {**MESH_VALUE["body"], "added_in_v1_5": {"x": [1, 2.5]}},
    }
    value = dumps(sign_object(A, RECORD_DOMAIN, m))
    assert as_json(decode_record(MESH_VALUE["key"], value, now=NOW).body) == MESH_VALUE["body"]


def test_encoder_refuses_what_peers_would_reject() -> None:
    listing = typed_body("mesh", MESH_VALUE["body"])
    node = typed_body("node", V["valid"][1]["body"])
    subject = MESH_VALUE["subject"]
    expect_reason("key_mismatch", lambda: encode_record(A, "mesh", subject, node, now=NOW, ttl_s=60))
    expect_reason("key_mismatch", lambda: encode_record(B, "node", A.peer_id, node, now=NOW, ttl_s=60))
    expect_reason("unknown_kind", lambda: encode_record(A, "model", subject, listing, now=NOW, ttl_s=60))
    for ttl in (0, 86401, True):
        expect_reason("malformed", lambda ttl=ttl: encode_record(A, "mesh", subject, listing, now=NOW, ttl_s=ttl))
    too_long = dataclasses.replace(listing, served=("m",) * 65)
    expect_reason("malformed", lambda: encode_record(A, "mesh", subject, too_long, now=NOW, ttl_s=60))
    huge = dataclasses.replace(listing, addrs=("/" + "x" * 255,) * 16, served=("y" * 128,) * 64)
    expect_reason("oversized", lambda: encode_record(A, "mesh", subject, huge, now=NOW, ttl_s=60))


# ---------------------------------------------------------------- hostile input

VALID_VALUES = [(case["key"], bytes.fromhex(case["value"]), case["now"]) for case in V["valid"]]
RECORD_KEYS = ["v", "k", "s", "pk", "iat", "exp", "body", "sig"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    assert not only_wire_errors(lambda: decode_record(MESH_VALUE["key"], data, now=NOW))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_VALUES), st.integers(min_value=0), st.data())
def test_bit_flips_and_truncations_are_rejected(valid: tuple[str, bytes, float], bit: int, data: st.DataObject) -> None:
    key, value, now = valid
    assert not only_wire_errors(lambda: decode_record(key, flip_bit(value, bit), now=now))
    cut = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    assert not only_wire_errors(lambda: decode_record(key, value[:cut], now=now))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=511))
def test_flipped_signature_is_never_accepted(bit: int) -> None:
    key, value, now = VALID_VALUES[0]
    m = cbor2.loads(value)
    tampered = dumps({**m, "sig": flip_bit(m["sig"], bit)})
    expect_reason("bad_signature", lambda: decode_record(key, tampered, now=now))


@settings(max_examples=100, deadline=None)  # generating nested maps is the slow part
@given(maps_with_keys(RECORD_KEYS, {"v": 1, "k": "mesh", "s": MESH_VALUE["subject"]}))
def test_structured_garbage_only_raises_wire_error(m: dict[str, Any]) -> None:
    try:
        data = cbor2.dumps(m, canonical=True)
    except (cbor2.CBOREncodeError, ValueError):
        return
    assert not only_wire_errors(lambda: decode_record(MESH_VALUE["key"], data, now=NOW))


def test_deep_nesting_and_tags_are_malformed() -> None:
    deep = b"\x81" * 50 + b"\x01"
    expect_reason("malformed", lambda: decode_record(MESH_VALUE["key"], deep, now=NOW))
    tagged = cbor2.dumps(cbor2.CBORTag(1, 5))
    expect_reason("malformed", lambda: decode_record(MESH_VALUE["key"], tagged, now=NOW))
    indefinite = b"\xbf\x61\x76\x01\xff"
    expect_reason("malformed", lambda: decode_record(MESH_VALUE["key"], indefinite, now=NOW))
    duplicate = b"\xa2\x61\x76\x01\x61\x76\x01"
    expect_reason("malformed", lambda: decode_record(MESH_VALUE["key"], duplicate, now=NOW))
    assert isinstance(WireError("malformed"), Exception)
