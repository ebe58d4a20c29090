"""The listing exchange against protocols/vectors/listing.json: frames, the bindings it checks, limits, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.wire import expect_reason, flip_bit, generator_check, ids, load_vectors, maps_with_keys, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import listing as lp
from meshp2p.wire._cbor import dumps
from meshp2p.wire.identity import Identity

V = load_vectors("listing.json")
GOOD = V["answers"][0]


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_listing.py") == 0


def test_constants() -> None:
    assert V["constants"] == {"protocol_id": lp.LISTING_PROTOCOL_ID, "max_frame_bytes": lp.MAX_FRAME_BYTES,
                              "max_record_bytes": 8192}


def test_request_vector() -> None:
    assert lp.encode_request().hex() == V["request"]
    reader = lp.SingleFrameReader()
    lp.decode_request(reader.feed(bytes.fromhex(V["request"])) or b"")


@pytest.mark.parametrize("payload", [dumps({"v": 2}), dumps({"v": 1, "mesh": None}), dumps([1]), b""])
def test_bad_requests(payload: bytes) -> None:
    assert not only_wire_errors(lambda: lp.decode_request(payload))


@pytest.mark.parametrize("case", V["answers"], ids=ids(V["answers"]))
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_answer_vector(case: dict[str, Any], chunk: int | None) -> None:
    node = None if case["node"] is None else bytes.fromhex(case["node"])
    mesh = None if case["mesh"] is None else bytes.fromhex(case["mesh"])
    received = bytes.fromhex(case["received"])
    assert lp.encode_answer(node, mesh) == received
    reader = lp.SingleFrameReader()
    step = chunk or len(received)
    for i in range(0, len(received), step):
        reader.feed(received[i : i + step])
    got = lp.decode_answer(reader.eof(), peer_id=case["peer_id"], now=case["now"])
    assert got.mesh_id == case["mesh_id"]
    assert got.listing_value == mesh
    assert (got.mesh_listing.name if got.mesh_listing else None) == case["listing_name"]


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    expect_reason(case["reason"],
                  lambda: lp.read_answer(bytes.fromhex(case["received"]), peer_id=case["peer_id"], now=case["now"]))


def test_an_answer_is_bound_to_the_peer_it_came_from() -> None:
    """A's valid answer relayed by B carries a node record that is not B's: refused."""
    b = Identity.from_seed(bytes.fromhex(V["seeds"]["B"])).peer_id
    received = bytes.fromhex(GOOD["received"])
    expect_reason("key_mismatch", lambda: lp.read_answer(received, peer_id=b, now=GOOD["now"]))


def test_a_listing_needs_its_node_record_and_records_have_a_limit() -> None:
    node = bytes.fromhex(GOOD["node"])
    expect_reason("malformed", lambda: lp.encode_answer(None, node))
    expect_reason("oversized", lambda: lp.encode_answer(node + bytes(8192), None))


def test_frame_limit_is_judged_from_the_header() -> None:
    reader = lp.SingleFrameReader()
    expect_reason("oversized", lambda: reader.feed((lp.MAX_FRAME_BYTES + 1).to_bytes(4, "big")))
    expect_reason("oversized", lambda: reader.feed(b""))  # failed for good


def test_answers_expire_with_their_records() -> None:
    received = bytes.fromhex(GOOD["received"])
    expect_reason("expired", lambda: lp.read_answer(received, peer_id=GOOD["peer_id"], now=GOOD["now"] + 10**6))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=64))
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    reader = lp.SingleFrameReader()

    def run() -> None:
        for i in range(0, len(data), chunk):
            reader.feed(data[i : i + chunk])
        lp.decode_answer(reader.eof(), peer_id=GOOD["peer_id"], now=GOOD["now"])

    only_wire_errors(run)


@settings(max_examples=200, deadline=None)
@given(maps_with_keys(["v", "node", "mesh"], {"v": 1}))
def test_fuzz_answer_fields(m: dict[str, Any]) -> None:
    payload = dumps(m)
    only_wire_errors(lambda: lp.decode_answer(payload, peer_id=GOOD["peer_id"], now=GOOD["now"]))


def test_every_bit_flip_of_an_answer_is_refused() -> None:
    """Every byte of an answer is framing, deterministic CBOR or signed: no flipped bit gets through."""
    good = bytes.fromhex(GOOD["received"])
    accepted = [bit for bit in range(len(good) * 8)
                if only_wire_errors(lambda bit=bit: lp.read_answer(flip_bit(good, bit), peer_id=GOOD["peer_id"],
                                                                   now=GOOD["now"]))]
    assert accepted == [], f"{len(accepted)} of {len(good) * 8} flipped bits were accepted"
