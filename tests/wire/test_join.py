"""The join handshake against protocols/vectors/join.json, framing in any chunking, and fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.wire import expect_reason, identity, ids, load_vectors, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import FrameReader, JoinDialer, JoinListener, frame, named_mesh_id, rejection
from meshp2p.wire.join import MAX_FRAME_BYTES, PUBLIC_MESH_SECRET, join_key, join_proof

V = load_vectors("join.json")
A = identity(V, "A")
B = identity(V, "B")
PRIVATE = V["handshakes"][0]


def machines(case: dict[str, Any], *, dialer_secret: bytes | None = None) -> tuple[JoinDialer, JoinListener]:
    mesh_id, secret = bytes.fromhex(case["mesh_id"]), bytes.fromhex(case["secret"])
    dialer = JoinDialer(
        mesh_id,
        secret if dialer_secret is None else dialer_secret,
        local_peer_id=bytes.fromhex(case["dialer_peer_id"]),
        remote_peer_id=bytes.fromhex(case["listener_peer_id"]),
        nonce=bytes.fromhex(case["dialer_nonce"]),
    )
    listener = JoinListener(
        {mesh_id: secret},
        local_peer_id=bytes.fromhex(case["listener_peer_id"]),
        remote_peer_id=bytes.fromhex(case["dialer_peer_id"]),
        nonce=bytes.fromhex(case["listener_nonce"]),
    )
    return dialer, listener


def one(reader: FrameReader, data: bytes) -> dict[str, Any]:
    (message,) = reader.feed(data)
    return message


@pytest.mark.parametrize("case", V["handshakes"], ids=ids(V["handshakes"]))
def test_handshake_reproduces_vector(case: dict[str, Any]) -> None:
    assert case["dialer_peer_id"] == A.peer_id_bytes.hex() and case["listener_peer_id"] == B.peer_id_bytes.hex()
    assert join_key(bytes.fromhex(case["mesh_id"]), bytes.fromhex(case["secret"])).hex() == case["join_key"]
    frames = case["frames"]
    dialer, listener = machines(case)
    to_listener, to_dialer = FrameReader(), FrameReader()

    hello = frame(dialer.hello())
    assert hello.hex() == frames["hello"]
    challenge = frame(listener.receive(one(to_listener, hello)))
    assert challenge.hex() == frames["challenge"]
    proof_msg = dialer.receive(one(to_dialer, challenge))
    assert proof_msg is not None
    proof = frame(proof_msg)
    assert proof.hex() == frames["proof"]
    ok = frame(listener.receive(one(to_listener, proof)))
    assert ok.hex() == frames["ok"]
    assert dialer.receive(one(to_dialer, ok)) is None
    assert dialer.joined and listener.joined and listener.mesh_id == dialer.mesh_id


def test_named_mesh_uses_the_empty_secret() -> None:
    named = V["handshakes"][1]
    assert named["secret"] == PUBLIC_MESH_SECRET.hex() == ""
    assert bytes.fromhex(named["mesh_id"]) == named_mesh_id("poker-night")


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    dialer, listener = machines(PRIVATE)
    machine: JoinDialer | JoinListener = listener
    if case["side"] == "dialer":
        dialer.hello()
        machine = dialer
    reader = FrameReader()

    def run() -> None:
        for message in reader.feed(b"".join(bytes.fromhex(f) for f in case["received"])):
            machine.receive(message)

    expect_reason(case["reason"], run)
    assert not machine.joined


def test_wrong_secret_fails_on_both_sides() -> None:
    dialer, listener = machines(PRIVATE, dialer_secret=bytes(32))
    challenge = listener.receive(dialer.hello())
    expect_reason("bad_proof", lambda: dialer.receive(challenge))
    # A dialer that skips that check still cannot produce the proof the listener expects.
    dialer, listener = machines(PRIVATE)
    challenge = listener.receive(dialer.hello())
    wrong_key = join_key(bytes.fromhex(PRIVATE["mesh_id"]), bytes(32))
    transcript = (bytes.fromhex(PRIVATE["dialer_nonce"]), challenge["nonce"], A.peer_id_bytes, B.peer_id_bytes)
    forged = join_proof(wrong_key, b"dialer", *transcript)
    expect_reason("bad_proof", lambda: listener.receive({"v": 1, "proof": forged}))
    assert not listener.joined


def test_rejection_is_a_valid_message_and_machines_stay_failed() -> None:
    reader = FrameReader()
    assert one(reader, frame(rejection("bad_mesh_id" * 20)))["error"] == ("bad_mesh_id" * 20)[:128]
    dialer, listener = machines(PRIVATE)
    expect_reason("malformed", lambda: listener.receive({"v": 1, "proof": bytes(32)}))
    expect_reason("malformed", lambda: listener.receive({"v": 1, "mesh": bytes(16), "nonce": bytes(32)}))
    expect_reason("malformed", lambda: dialer.receive({"v": 1, "ok": True}))
    expect_reason("malformed", dialer.hello)  # a failed dialer cannot start over
    dialer, _ = machines(PRIVATE)
    dialer.hello()
    expect_reason("malformed", dialer.hello)


def test_frame_reader_handles_any_chunking() -> None:
    stream = b"".join(bytes.fromhex(f) for f in PRIVATE["frames"].values())
    whole = FrameReader().feed(stream)
    assert len(whole) == 4
    reader = FrameReader()
    trickled = [message for byte in stream for message in reader.feed(bytes([byte]))]
    assert trickled == whole and reader.buffered == 0
    reader.feed(stream[:10])
    assert reader.buffered == 10


def test_frame_reader_refuses_oversized_frames_from_the_header() -> None:
    reader = FrameReader()
    expect_reason("oversized", lambda: reader.feed((MAX_FRAME_BYTES + 1).to_bytes(4, "big")))
    expect_reason("oversized", lambda: reader.feed(bytes.fromhex(PRIVATE["frames"]["hello"])))  # stays failed
    expect_reason("oversized", lambda: frame({"v": 1, "pad": bytes(MAX_FRAME_BYTES)}))
    FrameReader().feed(frame({"v": 1, "pad": bytes(MAX_FRAME_BYTES - 20)}))


# ---------------------------------------------------------------- hostile input

#: Join messages are flat maps; right-sized byte strings make the proof checks reachable.
FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-2, max_value=2**64 - 1)
    | st.text(max_size=10)
    | st.binary(min_size=16, max_size=16)
    | st.binary(min_size=32, max_size=32)
    | st.binary(max_size=40)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_chunks_only_raise_wire_error(chunks: list[bytes]) -> None:
    reader = FrameReader()

    def feed_all() -> None:
        for chunk in chunks:
            reader.feed(chunk)

    only_wire_errors(feed_all)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.integers(min_value=0, max_value=1000))
def test_random_framed_payloads_only_raise_wire_error(payload: bytes, length_delta: int) -> None:
    reader = FrameReader()
    only_wire_errors(lambda: reader.feed((len(payload) + length_delta % 3).to_bytes(4, "big") + payload))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "mesh", "nonce", "proof", "ok", "error", "x"]), FIELD_VALUES, max_size=5))
def test_random_messages_only_raise_wire_error(message: dict[str, Any]) -> None:
    message = {"v": 1, **message} if "v" not in message else message
    dialer, listener = machines(PRIVATE)
    dialer.hello()
    assert not only_wire_errors(lambda: dialer.receive(message))
    only_wire_errors(lambda: listener.receive(message))
    assert not listener.joined
