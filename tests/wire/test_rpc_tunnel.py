"""The RPC tunnel handshake against protocols/vectors/rpc-tunnel.json: frames, RPC bytes after them, limits, fuzzing."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.wire import expect_reason, flip_bit, generator_check, ids, load_vectors, maps_with_keys, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import WireError
from meshp2p.wire import rpc_tunnel as r
from meshp2p.wire._cbor import dumps

V = load_vectors("rpc-tunnel.json")
SENT = r.RpcHello(V["sent_hello"]["model"], V["sent_hello"]["threads"])


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(r.FRAME_HEADER_BYTES, "big") + payload


def sent_dialer() -> r.RpcDialer:
    dialer = r.RpcDialer(SENT)
    dialer.hello_frame()
    return dialer


def feed(machine: r.RpcListener | r.RpcDialer, data: bytes, *, chunk: int) -> tuple[Any, bytes]:
    """Feed `data` in pieces of `chunk` bytes until the machine completes; returns (result, the RPC bytes after it)."""
    for i in range(0, len(data), chunk):
        got = machine.receive(data[i : i + chunk])
        if got is not None:
            after = data[i + chunk :]
            if isinstance(machine, r.RpcListener):
                return got, machine.rest + after
            assert isinstance(got, bytes)
            return machine.reply, got + after
    return None, b""


def run_invalid(case: dict[str, Any], *, chunk: int | None = None) -> None:
    machine: r.RpcListener | r.RpcDialer = r.RpcListener() if case["side"] == "listener" else sent_dialer()
    data = bytes.fromhex(case["received"])
    step = chunk or max(1, len(data))
    for i in range(0, len(data), step):
        machine.receive(data[i : i + step])
    if case["eof"]:
        machine.eof()


# ---------------------------------------------------------------- vectors


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_rpc_tunnel.py") == 0


def test_constants() -> None:
    c = V["constants"]
    assert c["protocol_id"] == r.RPC_PROTOCOL_ID == "/meshp2p/rpc/1.0.0"
    assert (c["frame_header_bytes"], c["max_frame_bytes"]) == (r.FRAME_HEADER_BYTES, r.MAX_FRAME_BYTES) == (4, 4096)
    assert (c["max_model_chars"], c["max_threads"], c["max_error_chars"]) == (256, 1024, 64)
    assert r.HANDSHAKE_TIMEOUT_S > r.RPC_START_TIMEOUT_S, "the dialer must outwait the worker's own deadline"


@pytest.mark.parametrize("case", V["hellos"], ids=ids(V["hellos"]))
@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_hello_vector(case: dict[str, Any], chunk: int) -> None:
    hello = r.RpcHello(case["model"], case["threads"])
    assert r.encode_hello(hello).hex() == case["hex"]
    assert feed(r.RpcListener(), bytes.fromhex(case["hex"]), chunk=chunk) == (hello, b"")


@pytest.mark.parametrize("case", V["replies"], ids=ids(V["replies"]))
def test_reply_vector(case: dict[str, Any]) -> None:
    reply = r.RpcReply(case["ok"], case["error"])
    data = bytes.fromhex(case["hex"])
    assert r.encode_reply(reply) == data
    assert r.decode_reply(data[r.FRAME_HEADER_BYTES :]) == reply
    assert (r.accept() if reply.ok else r.refuse(case["error"])) == data
    dialer = sent_dialer()
    if reply.ok:
        assert dialer.receive(data) == b"" and dialer.is_open
    else:
        expect_reason("rejected", lambda: dialer.receive(data))
        assert dialer.reply == reply and not dialer.is_open


@pytest.mark.parametrize("case", V["exchanges"], ids=ids(V["exchanges"]))
@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_bytes_after_a_frame_are_the_rpc_stream(case: dict[str, Any], chunk: int) -> None:
    machine: r.RpcListener | r.RpcDialer = r.RpcListener() if case["side"] == "listener" else sent_dialer()
    result, rpc_bytes = feed(machine, bytes.fromhex(case["received"]), chunk=chunk)
    assert result == (SENT if case["side"] == "listener" else r.RpcReply(True))
    assert rpc_bytes.hex() == case["rpc_bytes"]
    machine.eof()  # a hang-up after the handshake is not a handshake failure


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
@pytest.mark.parametrize("chunk", [None, 1])
def test_invalid_vector(case: dict[str, Any], chunk: int | None) -> None:
    expect_reason(case["reason"], lambda: run_invalid(case, chunk=chunk))


# ---------------------------------------------------------------- limits and machine rules


def test_field_limits() -> None:
    assert r.decode_hello(dumps({"v": 1, "model": "x" * 256, "threads": 1024})) == r.RpcHello("x" * 256, 1024)
    assert r.decode_hello(dumps({"v": 1, "model": "x", "threads": 1})) == r.RpcHello("x", 1)
    for bad in (r.RpcHello("x" * 257), r.RpcHello(""), r.RpcHello(threads=0), r.RpcHello(threads=1025)):
        expect_reason("malformed", lambda bad=bad: r.encode_hello(bad))
    assert r.decode_reply(dumps({"v": 1, "ok": False, "error": "x" * 64})).error == "x" * 64
    expect_reason("malformed", lambda: r.refuse("x" * 65))
    expect_reason("malformed", lambda: r.refuse("Not Member"))
    expect_reason("malformed", lambda: r.encode_reply(r.RpcReply(True, "not_member")))
    expect_reason("malformed", lambda: r.encode_reply(r.RpcReply(False)))


def test_frame_limit_is_judged_from_the_header() -> None:
    # A 4096-byte payload is read (and rejected for its keys); 4097 is refused before any payload arrives.
    # A text of 256+ chars has a 3-byte CBOR head instead of the empty text's 1 byte.
    padding = "p" * (r.MAX_FRAME_BYTES - len(dumps({"v": 1, "model": None, "threads": None, "pad": ""})) - 2)
    payload = dumps({"v": 1, "model": None, "threads": None, "pad": padding})
    assert len(payload) == r.MAX_FRAME_BYTES
    expect_reason("malformed", lambda: r.RpcListener().receive(frame(payload)))
    expect_reason("oversized", lambda: r.RpcListener().receive((r.MAX_FRAME_BYTES + 1).to_bytes(4, "big")))
    expect_reason("oversized", lambda: sent_dialer().receive(b"\xff\xff\xff\xff"))


def test_a_failed_machine_stays_failed() -> None:
    listener = r.RpcListener()
    expect_reason("bad_version", lambda: listener.receive(frame(dumps({"v": 2, "model": None, "threads": None}))))
    expect_reason("bad_version", lambda: listener.receive(r.encode_hello(SENT)))
    listener.eof()  # already failed: no second reason
    dialer = sent_dialer()
    expect_reason("oversized", lambda: dialer.receive(b"\x00\x01\x00\x00"))
    expect_reason("oversized", lambda: dialer.receive(r.accept()))


def test_handshake_order() -> None:
    dialer = r.RpcDialer(SENT)
    expect_reason("malformed", lambda: dialer.receive(r.accept()))  # before its own hello
    dialer = r.RpcDialer(SENT)
    assert dialer.hello_frame() == r.encode_hello(SENT)
    expect_reason("malformed", dialer.hello_frame)
    assert dialer.receive(r.accept()) == b""
    # After the reply the stream is RPC bytes: the caller must not feed the machine any more.
    expect_reason("malformed", lambda: dialer.receive(b"\x0e"))
    listener = r.RpcListener()
    assert listener.receive(r.encode_hello(SENT)) == SENT
    expect_reason("malformed", lambda: listener.receive(r.encode_hello(SENT)))


def test_pieces_of_a_frame_wait_for_the_rest() -> None:
    listener = r.RpcListener()
    data = r.encode_hello(SENT)
    assert listener.receive(data[:2]) is None and listener.receive(data[2:-1]) is None
    expect_reason("truncated", listener.eof)


# ---------------------------------------------------------------- fuzzing: only WireError escapes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(min_value=1, max_value=9), st.booleans())
def test_fuzz_random_bytes(data: bytes, chunk: int, eof: bool) -> None:
    for make in (r.RpcListener, sent_dialer):
        machine = make()

        def run(machine: r.RpcListener | r.RpcDialer = machine) -> None:
            for i in range(0, len(data), chunk):
                if machine.receive(data[i : i + chunk]) is not None:
                    return
            if eof:
                machine.eof()

        only_wire_errors(run)


@settings(max_examples=300, deadline=None)
@given(maps_with_keys(["v", "model", "threads"], {"v": 1}))
def test_fuzz_hello_fields(m: dict[str, Any]) -> None:
    try:
        payload = dumps(m)
    except WireError:
        return
    if only_wire_errors(lambda: r.RpcListener().receive(frame(payload))):
        assert m["model"] is None or type(m["model"]) is str
        assert m["threads"] is None or (type(m["threads"]) is int and 1 <= m["threads"] <= r.MAX_THREADS)


@settings(max_examples=300, deadline=None)
@given(st.one_of(maps_with_keys(["v", "ok"], {"v": 1}), maps_with_keys(["v", "ok", "error"], {"v": 1})))
def test_fuzz_reply_fields(m: dict[str, Any]) -> None:
    try:
        payload = dumps(m)
    except WireError:
        return
    if only_wire_errors(lambda: sent_dialer().receive(frame(payload))):
        assert m["ok"] is True and set(m) == {"v", "ok"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([c["hex"] for c in V["hellos"]] + [c["hex"] for c in V["replies"]]), st.integers(0, 10**6))
def test_fuzz_bit_flips(hex_frame: str, bit: int) -> None:
    data = flip_bit(bytes.fromhex(hex_frame), bit)
    only_wire_errors(lambda: r.RpcListener().receive(data))
    only_wire_errors(lambda: sent_dialer().receive(data))
