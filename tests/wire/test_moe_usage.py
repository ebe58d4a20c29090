"""The MoE usage exchange against protocols/vectors/moe-usage.json: the digest, frames, every check a dialer makes,
limits, and hostile answers (only WireError ever comes out)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.wire import expect_reason, generator_check, ids, load_vectors, maps_with_keys, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.inference.calibration import ExpertUsage
from meshp2p.wire import moe_usage as mu
from meshp2p.wire._cbor import dumps
from meshp2p.wire.model_id import parse_content_id

V = load_vectors("moe-usage.json")
A = V["answer"]


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_moe_usage.py") == 0


def test_constants() -> None:
    assert V["constants"] == {"protocol_id": mu.MOE_USAGE_PROTOCOL_ID, "max_layers": 256, "max_experts": 1024,
                              "max_request_bytes": 256, "max_answer_bytes": mu.MAX_ANSWER_BYTES}
    # The answer cap holds the widest table the limits allow.
    widest = mu.encode_usage(mu.SOURCE_IMATRIX, ((2**63 - 1,) * mu.MAX_EXPERTS,) * mu.MAX_LAYERS)
    assert len(widest) - 4 <= mu.MAX_ANSWER_BYTES


@pytest.mark.parametrize("case", V["digests"], ids=lambda c: c["json"][:30])
def test_digest_vectors_and_calibration_use_the_same_digest(case: dict[str, Any]) -> None:
    counts = tuple(tuple(r) for r in case["counts"])
    assert mu.usage_digest(case["source"], counts) == case["digest"]
    usage = ExpertUsage(case["source"], counts)
    assert usage.digest == case["digest"] and usage.tag == case["tag"]
    assert mu.parse_usage_tag(case["tag"]) == (case["source"], case["digest"])
    # Where counts came from is not part of them.
    assert ExpertUsage(case["source"], counts, origin="12D3KooWpeer").tag == case["tag"]


@pytest.mark.parametrize("tag", ["imatrix", "imatrix:", "imatrix:ABCDEF0123456789", ":0123456789abcdef",
                                 "IMATRIX:0123456789abcdef", "imatrix:0123456789abcde"])
def test_unparsable_tags(tag: str) -> None:
    assert mu.parse_usage_tag(tag) is None


def test_request_vector() -> None:
    cid = parse_content_id(V["request"]["content_id"])
    frame = bytes.fromhex(V["request"]["frame"])
    assert mu.encode_request(cid) == frame
    reader = mu.RequestReader()
    assert mu.decode_request(reader.feed(frame) or b"") == cid


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_answer_vector(chunk: int | None) -> None:
    counts = tuple(tuple(r) for r in A["counts"])
    frame = bytes.fromhex(A["frame"])
    assert mu.encode_usage(A["source"], counts) == frame
    reader = mu.AnswerReader()
    step = chunk or len(frame)
    for i in range(0, len(frame), step):
        reader.feed(frame[i:i + step])
    got = mu.check_answer(reader.eof(), n_layers=A["n_layers"], n_expert=A["n_expert"], digest=A["digest"])
    assert got == mu.UsageAnswer(A["source"], counts, A["digest"]) and got.tag == A["tag"]


@pytest.mark.parametrize("case", V["refusals"], ids=lambda c: c["refusal"])
def test_refusal_vectors(case: dict[str, Any]) -> None:
    assert mu.encode_refused(case["refusal"]).hex() == case["frame"]
    got = mu.read_answer(bytes.fromhex(case["frame"]), n_layers=3, n_expert=4, digest=None)
    assert got == mu.UsageRefused(case["refusal"])


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    shape = {"n_layers": case["n_layers"], "n_expert": case["n_expert"], "digest": case["digest"]}
    if "payload" in case:
        expect_reason(case["reason"], lambda: mu.check_answer(bytes.fromhex(case["payload"]), **shape))
    else:
        expect_reason(case["reason"], lambda: mu.read_answer(bytes.fromhex(case["frame"]), **shape))


@pytest.mark.parametrize("case", V["invalid_requests"], ids=ids(V["invalid_requests"]))
def test_invalid_request_vector(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: mu.decode_request(bytes.fromhex(case["payload"])))


def test_encoder_refuses_what_a_dialer_would() -> None:
    expect_reason("malformed", lambda: mu.encode_usage("imatrix", ((1, 2), (3,))))
    expect_reason("malformed", lambda: mu.encode_usage("imatrix", ()))
    expect_reason("malformed", lambda: mu.encode_usage("Imatrix", ((1,),)))


@settings(max_examples=300, deadline=None)
@given(maps_with_keys(["v", "t", "source", "counts", "digest"], fixed={"v": 1, "t": "usage"}))
def test_hostile_answers_only_raise_wire_errors(m: dict[str, Any]) -> None:
    payload = dumps(m)
    only_wire_errors(lambda: mu.check_answer(payload, n_layers=3, n_expert=4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=-2, max_value=2**64 - 1), max_size=5), max_size=5),
       st.sampled_from(["imatrix", "weight-norm", "x"]))
def test_random_tables_decode_or_fail_cleanly(rows: list[list[int]], source: str) -> None:
    payload = dumps({"v": 1, "t": "usage", "source": source, "counts": rows,
                     "digest": "0" * mu.DIGEST_HEX_CHARS})
    assert not only_wire_errors(lambda: mu.check_answer(payload, n_layers=len(rows), n_expert=4))
