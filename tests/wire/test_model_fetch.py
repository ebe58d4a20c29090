"""The model fetch protocol against protocols/vectors/model-fetch.json: the chunk rule, frames, checks, the plan."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from helpers.wire import expect_reason, generator_check, load_vectors, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import model_fetch as mf
from meshp2p.wire.framing import FRAME_HEADER_BYTES, PayloadReader
from meshp2p.wire.model_id import parse_content_id

V = load_vectors("model-fetch.json")
FILE = V["file"]


def _file_bytes() -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(FILE["size"]))


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_model_fetch.py") == 0


@pytest.mark.parametrize("case", V["chunk_rule"], ids=lambda c: str(c["size"]))
def test_chunk_rule_is_the_specs_formula(case: dict[str, Any]) -> None:
    size = case["size"]
    # The spec's words, computed independently: the smallest power of two >= 1 MiB giving <= 65536 chunks.
    power = max(20, math.ceil(math.log2(size / 65536))) if size else 20
    while math.ceil(size / 2**power) > 65536:
        power += 1
    assert case["chunk_bytes"] == 2**power == mf.chunk_bytes(size)
    assert case["chunk_count"] == math.ceil(size / 2**power) == mf.chunk_count(size)


def test_the_file_vector_is_its_pattern_and_its_manifest_is_sha256_per_chunk() -> None:
    data = _file_bytes()
    assert FILE["content_id"] == parse_content_id(FILE["content_id"]).text
    assert parse_content_id(FILE["content_id"]).digest == hashlib.sha256(data).digest()[:16]
    chunk = 2**20
    expected = b"".join(hashlib.sha256(data[o:o + chunk]).digest() for o in range(0, len(data), chunk))
    assert bytes.fromhex(FILE["manifest"]) == expected


def test_a_whole_session_decodes_step_by_step() -> None:
    data = _file_bytes()
    cid = parse_content_id(FILE["content_id"])
    frames = [bytes.fromhex(step["frame"]) for step in FILE["session"]]
    reader = PayloadReader(max_bytes=mf.MAX_FRAME_BYTES)
    messages = [mf.decode_message(p) for f in frames for p in reader.feed(f)]
    assert messages[0] == mf.Open(cid)
    manifest = mf.check_manifest_for(cid, mf.expect(messages[1], mf.ManifestMessage))
    count = manifest.count
    assert [mf.expect(m, mf.Get).index for m in messages[2:2 + count]] == list(range(count))
    for step, message in zip(FILE["session"][2 + count:], messages[2 + count:], strict=True):
        index = mf.expect(message, mf.ChunkHeader).index
        offset, length = mf.chunk_span(len(data), index)
        manifest.check_chunk(index, data[offset:offset + length])
        assert step["sha256"] == hashlib.sha256(data[offset:offset + length]).hexdigest()
    mf.check_content(cid, len(data), hashlib.sha256(data).digest())
    # Encoding gives the same frames back.
    assert mf.encode_open(cid) == frames[0] and mf.encode_manifest(manifest) == frames[1]


def test_refusals() -> None:
    for case in FILE["refusals"]:
        frame = bytes.fromhex(case["frame"])
        assert mf.decode_message(frame[FRAME_HEADER_BYTES:]) == mf.Refused(case["refusal"])
        assert mf.encode_refused(case["refusal"]) == frame


@pytest.mark.parametrize("case", [c for c in V["invalid"] if "payload" in c and "asked" not in c
                                  and "past the end" not in c["name"] and "where the manifest" not in c["name"]],
                         ids=lambda c: c["name"])
def test_invalid_payloads(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: mf.decode_message(bytes.fromhex(case["payload"])))


def test_an_oversized_header_is_refused_before_any_body() -> None:
    case = next(c for c in V["invalid"] if "frame" in c)
    reader = PayloadReader(max_bytes=mf.MAX_FRAME_BYTES)
    expect_reason(case["reason"], lambda: reader.feed(bytes.fromhex(case["frame"])))


def test_checks_that_need_the_session() -> None:
    data = _file_bytes()
    cid = parse_content_id(FILE["content_id"])
    manifest = mf.Manifest(len(data), bytes.fromhex(FILE["manifest"]))
    by_name = {c["name"]: c for c in V["invalid"]}
    wrong = mf.decode_message(bytes.fromhex(by_name["manifest of another size than the asked id"]["payload"]))
    expect_reason("bad_manifest", lambda: mf.check_manifest_for(cid, mf.expect(wrong, mf.ManifestMessage)))
    early = mf.decode_message(bytes.fromhex(by_name["a chunk header where the manifest was expected"]["payload"]))
    expect_reason("unexpected", lambda: mf.expect(early, mf.ManifestMessage))
    past = mf.expect(mf.decode_message(bytes.fromhex(by_name["get of a chunk past the end"]["payload"])), mf.Get)
    expect_reason("malformed", lambda: mf.check_index(manifest, past.index))
    offset, length = mf.chunk_span(len(data), 1)
    flipped = bytes([data[offset] ^ 1]) + data[offset + 1:offset + length]
    expect_reason("bad_chunk", lambda: manifest.check_chunk(1, flipped))
    expect_reason("bad_chunk", lambda: manifest.check_chunk(1, data[offset:offset + length - 1]))
    other = data[:-1] + b"\x00"
    expect_reason("content_mismatch", lambda: mf.check_content(cid, len(other), hashlib.sha256(other).digest()))
    expect_reason("content_mismatch", lambda: mf.check_content(cid, len(data) - 1, hashlib.sha256(data).digest()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_fail_with_a_wire_error(data: bytes) -> None:
    only_wire_errors(lambda: mf.decode_message(data))


def _plan(count: int) -> mf.ChunkPlan:
    size = count * mf.MIN_CHUNK_BYTES
    return mf.ChunkPlan(mf.Manifest(size, bytes(32 * count)))


def test_the_plan_hands_out_every_chunk_once_lowest_first() -> None:
    plan = _plan(5)
    got = [plan.next_for("a"), plan.next_for("b"), plan.next_for("a")]
    assert got == [0, 1, 2] and plan.out == {0: "a", 1: "b", 2: "a"}
    for index, peer in list(plan.out.items()):
        plan.chunk_ok(peer, index)
    assert [plan.next_for("b"), plan.next_for("b"), plan.next_for("b")] == [3, 4, None]
    plan.chunk_ok("b", 3)
    plan.chunk_ok("b", 4)
    assert plan.complete and plan.delivered == {"a": 2, "b": 3}


def test_a_bad_chunk_drops_its_peer_and_goes_to_another() -> None:
    plan = _plan(4)
    a0, b1, a2 = plan.next_for("a"), plan.next_for("b"), plan.next_for("a")
    plan.chunk_bad("a", a0, "bad_chunk")  # type: ignore[arg-type]
    assert plan.dropped == {"a": "bad_chunk"} and plan.next_for("a") is None
    # Both of a's chunks (the bad one and the one still out) are b's now, lowest first.
    assert [plan.next_for("b"), plan.next_for("b"), plan.next_for("b")] == [0, 2, 3]
    assert b1 == 1 and a2 == 2 and not plan.complete


def test_a_gone_peer_gives_its_chunks_back_and_done_chunks_stay_done() -> None:
    plan = mf.ChunkPlan(mf.Manifest(4 * mf.MIN_CHUNK_BYTES, bytes(128)), done={0})
    assert plan.waiting == 3
    first = plan.next_for("a")
    plan.peer_gone("a", "truncated")
    plan.peer_gone("a", "later reason")
    assert first == 1 and plan.dropped == {"a": "truncated"} and plan.waiting == 3


def test_the_majority_manifest_wins_and_dissenters_are_named() -> None:
    honest, liar = mf.Manifest(mf.MIN_CHUNK_BYTES, bytes(32)), mf.Manifest(mf.MIN_CHUNK_BYTES, b"\x01" * 32)
    assert mf.majority_manifest([("x", liar), ("a", honest), ("b", honest)]) == (honest, ["x"])
    assert mf.majority_manifest([("x", liar), ("a", honest)]) == (liar, ["a"])
    assert mf.majority_manifest([]) == (None, [])


def test_the_dialer_reader_takes_a_session_in_any_chunking() -> None:
    data = _file_bytes()
    cid = parse_content_id(FILE["content_id"])
    steps = [s for s in FILE["session"] if s["from"] == "listener"]
    stream = b""
    for step in steps:
        stream += bytes.fromhex(step["frame"])
        if step["message"].startswith("chunk"):
            offset, length = mf.chunk_span(len(data), int(step["message"].split()[1]))
            stream += data[offset:offset + length]
    for piece in (1, 7, 4096, len(stream)):
        reader = mf.DialerReader(cid)
        events = [e for i in range(0, len(stream), piece) for e in reader.feed(stream[i:i + piece])]
        reader.eof()
        assert isinstance(events[0], mf.ManifestMessage)
        chunks = [e for e in events[1:] if isinstance(e, mf.Chunk)]
        assert [c.index for c in chunks] == [0, 1, 2, 3] and b"".join(c.data for c in chunks) == data
    cut = mf.DialerReader(cid)
    cut.feed(stream[:-1])
    expect_reason("truncated", cut.eof)


def test_the_dialer_reader_refusal_and_steps_out_of_order() -> None:
    cid = parse_content_id(FILE["content_id"])
    refused = bytes.fromhex(FILE["refusals"][0]["frame"])
    reader = mf.DialerReader(cid)
    assert reader.feed(refused) == [mf.Refused("not_member")]
    expect_reason("unexpected", lambda: reader.feed(refused))
    expect_reason("unexpected", lambda: mf.DialerReader(cid).feed(mf.encode_chunk_header(0)))
    manifest = bytes.fromhex(FILE["session"][1]["frame"])
    twice = mf.DialerReader(cid)
    expect_reason("unexpected", lambda: twice.feed(manifest + manifest))
    past = mf.DialerReader(cid)
    expect_reason("malformed", lambda: past.feed(manifest + mf.encode_chunk_header(4)))
    over = (mf.MAX_FRAME_BYTES + 1).to_bytes(FRAME_HEADER_BYTES, "big")
    expect_reason("oversized", lambda: mf.DialerReader(cid).feed(over))


def test_a_split_models_files_are_listed_by_their_content_ids() -> None:
    split = V["split"]
    ids = tuple(parse_content_id(f["content_id"]) for f in split["files"])
    for file, cid in zip(split["files"], ids, strict=True):
        data = bytes((i * 7 + 3) % 251 for i in range(file["size"]))
        assert cid.digest == hashlib.sha256(data).digest()[:16] and cid.size == len(data)
    assert ids[0] == parse_content_id(FILE["content_id"]), "the first file is the `file` vector's"
    reader = PayloadReader(max_bytes=mf.MAX_FRAME_BYTES)
    asked, answer = (mf.decode_message(p) for step in split["session"]
                     for p in reader.feed(bytes.fromhex(step["frame"])))
    assert asked == mf.ListParts(ids[0]) and mf.encode_list(ids[0]).hex() == split["session"][0]["frame"]
    assert mf.check_parts_for(ids[0], mf.expect(answer, mf.Parts)) == ids
    assert mf.encode_parts(ids).hex() == split["session"][1]["frame"]
    whole = mf.decode_message(bytes.fromhex(split["whole_file"]["frame"])[FRAME_HEADER_BYTES:])
    assert whole == mf.Parts((ids[0],))
    expect_reason("malformed", lambda: mf.encode_parts((ids[0], ids[0])))


def test_the_majority_parts_list_wins_and_dissenters_are_named() -> None:
    a, b, c = (parse_content_id(f["content_id"]) for f in V["split"]["files"])
    chosen, dissenters = mf.majority_parts([("p1", (a, b)), ("p2", (a, c)), ("p3", (a, c))])
    assert chosen == (a, c) and dissenters == ["p1"]
    assert mf.majority_parts([("p1", (a, b)), ("p2", (a, c))]) == ((a, b), ["p2"]), "a tie: the first received"
    assert mf.majority_parts([]) == (None, [])
