"""The HTTP tunnel against protocols/vectors/http-tunnel.json: frames, exchange order, reuse, truncation, fuzzing."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from helpers.wire import expect_reason, flip_bit, generator_check, ids, load_vectors, maps_with_keys, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import WireError
from meshp2p.wire import tunnel as t
from meshp2p.wire._cbor import dumps

V = load_vectors("http-tunnel.json")
EXCHANGE = V["exchanges"][0]["steps"]
CHAT = t.RequestHead(7, "POST", "/v1/chat/completions", (("content-type", "application/json"),), "gemma-3-270m")
SSE_HEAD = t.ResponseHead(7, 200, (("content-type", "text/event-stream"),))


def event(d: dict[str, Any]) -> t.TunnelEvent:
    """A vector's event, read independently of the generator."""
    headers = tuple((name, value) for name, value in d.get("headers", []))
    match d["type"]:
        case "request_head":
            return t.RequestHead(d["id"], d["method"], d["path"], headers, d["model"])
        case "response_head":
            return t.ResponseHead(d["id"], d["status"], headers)
        case "body":
            return t.BodyChunk(bytes.fromhex(d["data"]))
        case "end":
            return t.End(d["id"])
        case "error":
            return t.TunnelErrorFrame(d["id"], d["code"], d["message"], d["retry_after_s"])
    raise AssertionError(d["type"])


def encode(ev: t.TunnelEvent) -> bytes:
    if isinstance(ev, t.RequestHead):
        return t.encode_request_head(ev)
    if isinstance(ev, t.ResponseHead):
        return t.encode_response_head(ev)
    if isinstance(ev, t.BodyChunk):
        return b"".join(t.encode_body(ev.data))
    if isinstance(ev, t.End):
        return t.encode_end(ev.id)
    return t.encode_error(ev)


def server_send(server: t.TunnelServerConnection, ev: t.TunnelEvent) -> bytes:
    if isinstance(ev, t.ResponseHead):
        return server.send_response_head(ev)
    if isinstance(ev, t.BodyChunk):
        return b"".join(server.send_body(ev.data))
    if isinstance(ev, t.End):
        return server.send_end()
    assert isinstance(ev, t.TunnelErrorFrame)
    return server.send_error(ev.code, ev.message, ev.retry_after_s)


def idle(conn: t.TunnelClientConnection | t.TunnelServerConnection) -> bool:
    """Read through a call: mypy would otherwise keep a property narrowed across the calls that change it."""
    return conn.idle


def split_request(data: bytes) -> tuple[t.RequestHead, bytes]:
    events = t.FrameDecoder().feed(data)
    head = events[0]
    assert isinstance(head, t.RequestHead) and isinstance(events[-1], t.End)
    return head, b"".join(ev.data for ev in events if isinstance(ev, t.BodyChunk))


def full_response(request_id: int = 7) -> bytes:
    head = t.ResponseHead(request_id, 200, (("content-type", "text/event-stream"),))
    return t.encode_response_head(head) + b"".join(t.encode_body(b"data: hi\n\n")) + t.encode_end(request_id)


def sent_client(head: t.RequestHead = CHAT, body: bytes = b"{}") -> t.TunnelClientConnection:
    client = t.TunnelClientConnection()
    client.send_request(head, body)
    return client


# ---------------------------------------------------------------- vectors


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_http_tunnel.py") == 0


def test_constants() -> None:
    c = V["constants"]
    assert c["protocol_id"] == t.TUNNEL_PROTOCOL_ID == "/meshp2p/http/1.0.0"
    assert (
        (c["frame_header_bytes"], c["max_control_frame"]) == (t.FRAME_HEADER_BYTES, t.MAX_CONTROL_FRAME) == (5, 16384)
    )
    assert c["max_body_frame"] == t.MAX_BODY_FRAME == 262144
    assert c["max_request_body"] == t.MAX_REQUEST_BODY == 32 * 1024 * 1024


@pytest.mark.parametrize("case", V["frames"], ids=ids(V["frames"]))
def test_frame_vector(case: dict[str, Any]) -> None:
    ev = event(case["event"])
    assert encode(ev).hex() == case["hex"]
    assert t.FrameDecoder().feed(bytes.fromhex(case["hex"])) == [ev]


def test_body_split_vector() -> None:
    case = V["body_split"]
    body = bytes(i % 256 for i in range(case["body_length"]))
    frames = t.encode_body(body)
    assert [f[: t.FRAME_HEADER_BYTES].hex() for f in frames] == case["frame_headers"]
    assert hashlib.sha256(b"".join(frames)).hexdigest() == case["sha256"]
    chunks = t.FrameDecoder().feed(b"".join(frames))
    assert [len(c.data) for c in chunks if isinstance(c, t.BodyChunk)] == [t.MAX_BODY_FRAME, 10]
    assert b"".join(c.data for c in chunks if isinstance(c, t.BodyChunk)) == body
    assert t.encode_body(b"") == []


@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["whole", "byte_by_byte"])
def test_exchange_vector_three_requests_on_one_stream(byte_by_byte: bool) -> None:
    client, server = t.TunnelClientConnection(), t.TunnelServerConnection()

    def feed(conn: t.TunnelClientConnection | t.TunnelServerConnection, data: bytes) -> list[Any]:
        if not byte_by_byte:
            return list(conn.receive(data))
        return [ev for i in range(len(data)) for ev in conn.receive(data[i : i + 1])]

    for step in EXCHANGE:
        events = [event(e) for e in step["events"]]
        data = bytes.fromhex(step["hex"])
        if step["from"] == "client":
            assert idle(client) and idle(server)
            head, body = split_request(data)
            assert client.send_request(head, body) == data
            assert not idle(client)
            assert feed(server, data) == events
        else:
            assert b"".join(server_send(server, ev) for ev in events) == data
            assert idle(server)
            assert feed(client, data) == events
            assert idle(client)
    assert sum(step["from"] == "client" for step in EXCHANGE) == 3
    client.eof()
    server.eof()
    assert not idle(client) and not idle(server)


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    received = b"".join(
        bytes.fromhex(s) if isinstance(s, str) else (bytes.fromhex(s["hex"]) + bytes(s["zeros"])) * s["repeat"]
        for s in case["received"]
    )

    def run() -> None:
        if case["side"] == "decoder":
            t.FrameDecoder().feed(received)
            return
        conn: t.TunnelClientConnection | t.TunnelServerConnection
        if case["side"] == "client":
            conn = t.TunnelClientConnection()
            conn.send_request(*split_request(bytes.fromhex(case["sent"])))
        else:
            conn = t.TunnelServerConnection()
        conn.receive(received)
        if case["eof"]:
            conn.eof()

    expect_reason(case["reason"], run)


def test_negative_vectors_cover_the_brief() -> None:
    names = {case["name"] for case in V["invalid"]}
    assert {"unknown_type", "control_frame_over_limit", "request_body_over_limit", "second_response_head"} <= names
    assert {"truncated_after_body", "truncated_request"} <= names
    assert {case["reason"] for case in V["invalid"]} == {"malformed", "oversized", "bad_version", "truncated"}


# ---------------------------------------------------------------- encoders


def test_encoders_refuse_what_a_receiver_would_reject() -> None:
    expect_reason("malformed", lambda: t.encode_request_head(t.RequestHead(0, "POST", "/v1/x", (("X-A", "1"),))))
    expect_reason("malformed", lambda: t.encode_request_head(t.RequestHead(0, "DELETE", "/v1/x")))
    expect_reason("malformed", lambda: t.encode_request_head(t.RequestHead(-1, "GET", "/v1/x")))
    expect_reason("malformed", lambda: t.encode_request_head(t.RequestHead(0, "GET", "/v1/./x")))
    expect_reason("malformed", lambda: t.encode_request_head(t.RequestHead(0, "GET", "/v1/x", (("ab",),))))  # type: ignore[arg-type]
    big = tuple((f"x-{i}", "v" * t.MAX_HEADER_CHARS) for i in range(t.MAX_HEADERS))
    expect_reason("oversized", lambda: t.encode_request_head(t.RequestHead(0, "GET", "/v1/x", big)))
    expect_reason("malformed", lambda: t.encode_response_head(t.ResponseHead(0, 99)))
    expect_reason("malformed", lambda: t.encode_error(t.TunnelErrorFrame(0, "", "")))
    expect_reason("malformed", lambda: t.encode_error(t.TunnelErrorFrame(0, "x", "m" * 1025)))
    expect_reason("malformed", lambda: t.encode_end(True))
    expect_reason("oversized", lambda: t.encode_request(CHAT, bytes(t.MAX_REQUEST_BODY + 1)))
    # The query string is the backend's business; dots inside a segment are fine.
    t.encode_request_head(t.RequestHead(0, "GET", "/v1/models/org.model-1.gguf?x=../y"))


def test_control_frame_limit_is_inclusive() -> None:
    def head(extra: int) -> t.ResponseHead:
        return t.ResponseHead(0, 200, (("x-pad", "p" * 1000),) * 16 + (("x-pad", "p" * extra),))

    def payload_bytes(extra: int) -> int:
        return len(dumps({"v": 1, "id": 0, "status": 200, "headers": [list(h) for h in head(extra).headers]}))

    extra = next(n for n in range(1000, 0, -1) if payload_bytes(n) <= t.MAX_CONTROL_FRAME)
    assert payload_bytes(extra) == t.MAX_CONTROL_FRAME
    frame = t.encode_response_head(head(extra))
    assert t.FrameDecoder().feed(frame) == [head(extra)]
    expect_reason("oversized", lambda: t.encode_response_head(head(extra + 1)))
    too_big = frame[:1] + (t.MAX_CONTROL_FRAME + 1).to_bytes(4, "big") + frame[5:] + b"p"
    expect_reason("oversized", lambda: t.FrameDecoder().feed(too_big))


# ---------------------------------------------------------------- decoder


def test_decoder_any_chunking_and_buffered() -> None:
    stream = b"".join(bytes.fromhex(step["hex"]) for step in EXCHANGE)
    whole = t.FrameDecoder().feed(stream)
    decoder = t.FrameDecoder()
    assert [ev for byte in stream for ev in decoder.feed(bytes([byte]))] == whole
    assert decoder.buffered == 0
    decoder.feed(stream[:3])
    assert decoder.buffered == 3


def test_decoder_judges_the_header_before_buffering_and_stays_failed() -> None:
    decoder = t.FrameDecoder()
    expect_reason("malformed", lambda: decoder.feed(b"\x09"))  # the type byte alone is enough
    expect_reason("malformed", lambda: decoder.feed(full_response()))
    assert decoder.buffered == 0
    decoder = t.FrameDecoder()
    expect_reason("oversized", lambda: decoder.feed(b"\x02\x00\x04\x00\x01"))
    expect_reason("oversized", lambda: decoder.feed(b""))


# ---------------------------------------------------------------- client state machine


def test_client_rules() -> None:
    client = t.TunnelClientConnection()
    assert idle(client)
    client.eof()  # EOF while idle is a clean close ...
    assert not idle(client)  # ... after which the stream carries nothing more
    expect_reason("malformed", lambda: client.send_request(CHAT))

    client = sent_client()
    expect_reason("malformed", lambda: client.send_request(t.RequestHead(8, "GET", "/v1/models")))  # one at a time
    assert client.receive(full_response()[:7]) == []
    events = client.receive(full_response()[7:])
    assert [type(ev) for ev in events] == [t.ResponseHead, t.BodyChunk, t.End] and idle(client)
    expect_reason("malformed", lambda: client.send_request(CHAT))  # ids increase: 7 again
    client.send_request(t.RequestHead(8, "GET", "/v1/models"))
    assert client.receive(t.encode_error(t.TunnelErrorFrame(8, "model_not_here", "", None)))
    assert idle(client)
    client.send_request(t.RequestHead(100, "GET", "/v1/models"))  # gaps are fine


def test_client_stays_failed() -> None:
    client = sent_client()
    expect_reason("malformed", lambda: client.receive(t.encode_end(7)))
    assert not idle(client)
    expect_reason("malformed", lambda: client.receive(full_response()))
    expect_reason("malformed", lambda: client.send_request(t.RequestHead(8, "GET", "/v1/models")))
    expect_reason("malformed", client.eof)


def test_client_error_frames_end_the_exchange_at_any_point() -> None:
    error = t.encode_error(t.TunnelErrorFrame(7, "backend_failed", "died", None))
    for before in (b"", t.encode_response_head(SSE_HEAD), t.encode_response_head(SSE_HEAD) + t.encode_body(b"x")[0]):
        client = sent_client()
        assert isinstance(client.receive(before + error)[-1], t.TunnelErrorFrame)
        assert idle(client)
        client.eof()


def test_client_detects_every_truncation() -> None:
    response = full_response()
    for cut in range(len(response)):
        client = sent_client()
        client.receive(response[:cut])
        with pytest.raises(WireError) as info:
            client.eof()
        assert info.value.reason == "truncated"
    client = sent_client()
    client.receive(response)
    client.eof()


def test_client_rejects_data_after_eof() -> None:
    client = t.TunnelClientConnection()
    client.eof()
    expect_reason("malformed", lambda: client.receive(full_response()))


# ---------------------------------------------------------------- server state machine


def test_server_rules() -> None:
    server = t.TunnelServerConnection()
    expect_reason("malformed", lambda: server.send_response_head(SSE_HEAD))  # nothing to answer
    expect_reason("malformed", lambda: server.send_error("overloaded", ""))
    events = server.receive(t.encode_request(CHAT, b"{}"))
    assert events == [CHAT, t.BodyChunk(b"{}"), t.End(7)] and not idle(server)
    expect_reason("malformed", lambda: server.send_body(b"x"))  # no body before the head
    expect_reason("malformed", server.send_end)
    expect_reason("malformed", lambda: server.send_response_head(t.ResponseHead(6, 200)))  # wrong id
    server.send_response_head(SSE_HEAD)
    expect_reason("malformed", lambda: server.send_response_head(SSE_HEAD))
    assert server.send_body(b"") == []
    assert len(server.send_body(bytes(t.MAX_BODY_FRAME + 1))) == 2
    server.send_end()
    assert idle(server)
    expect_reason("malformed", server.send_end)
    # Local misuse does not fail the connection (nothing reached the wire); a repeated request id does.
    server.receive(t.encode_request(t.RequestHead(8, "GET", "/v1/models")))
    server.send_error("overloaded", "busy", 3)
    assert idle(server)
    expect_reason("malformed", lambda: server.receive(t.encode_request(t.RequestHead(8, "GET", "/v1/models"))))
    assert not idle(server)


def test_server_may_answer_before_the_request_ends() -> None:
    server = t.TunnelServerConnection()
    server.receive(t.encode_request_head(CHAT))
    error = server.send_error("not_member", "join the mesh first")
    assert not idle(server)  # the rest of the request is still coming
    server.receive(t.encode_body(b"{}")[0])
    assert server.receive(t.encode_end(7)) == [t.End(7)] and idle(server)
    client = sent_client()
    assert client.receive(error) == [t.TunnelErrorFrame(7, "not_member", "join the mesh first", None)]


def test_server_half_close_after_a_full_request_still_gets_its_response() -> None:
    server = t.TunnelServerConnection()
    server.receive(t.encode_request(CHAT, b"{}"))
    server.eof()
    server.send_response_head(SSE_HEAD)
    server.send_end()
    assert not idle(server)  # closed: no further requests


def test_server_detects_every_truncation() -> None:
    request = t.encode_request(CHAT, b'{"messages":[]}')
    for cut in range(1, len(request)):
        server = t.TunnelServerConnection()
        server.receive(request[:cut])
        expect_reason("truncated", server.eof)
    server = t.TunnelServerConnection()
    server.eof()


def test_server_request_body_limit() -> None:
    server = t.TunnelServerConnection()
    events = server.receive(t.encode_request(CHAT, bytes(t.MAX_REQUEST_BODY)))  # exactly the limit is fine
    assert sum(len(ev.data) for ev in events if isinstance(ev, t.BodyChunk)) == t.MAX_REQUEST_BODY
    server = t.TunnelServerConnection()
    server.receive(t.encode_request_head(CHAT) + b"".join(t.encode_body(bytes(t.MAX_REQUEST_BODY))))
    expect_reason("oversized", lambda: server.receive(t.encode_body(b"x")[0]))
    expect_reason("oversized", lambda: server.send_error("too_large", ""))  # failed for good


def test_three_sequential_requests_with_large_bodies() -> None:
    client, server = t.TunnelClientConnection(), t.TunnelServerConnection()
    for request_id, size in enumerate((0, 10, 3 * t.MAX_BODY_FRAME + 1)):
        body = bytes([request_id]) * size
        head = t.RequestHead(request_id, "POST", "/v1/embeddings", (), None)
        events = server.receive(client.send_request(head, body))
        assert events[0] == head and events[-1] == t.End(request_id)
        assert b"".join(ev.data for ev in events if isinstance(ev, t.BodyChunk)) == body
        out = server.send_response_head(t.ResponseHead(request_id, 200)) + b"".join(server.send_body(body[::-1]))
        out += server.send_end()
        got = client.receive(out)
        assert b"".join(ev.data for ev in got if isinstance(ev, t.BodyChunk)) == body[::-1]
        assert idle(client) and idle(server)


# ---------------------------------------------------------------- hostile input

VALID_REQUEST = t.encode_request(CHAT, b'{"messages":[{"role":"user","content":"hi"}]}')
VALID_RESPONSE = full_response()


def feed_and_eof(conn: t.TunnelClientConnection | t.TunnelServerConnection, chunks: list[bytes]) -> None:
    for chunk in chunks:
        conn.receive(chunk)
    conn.eof()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_bytes_only_raise_wire_error(chunks: list[bytes]) -> None:
    decoder = t.FrameDecoder()
    only_wire_errors(lambda: [decoder.feed(chunk) for chunk in chunks])
    only_wire_errors(lambda: feed_and_eof(sent_client(), chunks))
    only_wire_errors(lambda: feed_and_eof(t.TunnelServerConnection(), chunks))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0), st.booleans(), st.integers(min_value=1, max_value=64))
def test_truncated_and_flipped_exchanges_only_raise_wire_error(cut: int, bit: int, flip: bool, chunk: int) -> None:
    # A client that sent a request needs the whole response; a server may also see a clean close before any request.
    cases = (
        (sent_client(), VALID_RESPONSE, {len(VALID_RESPONSE)}),
        (t.TunnelServerConnection(), VALID_REQUEST, {0, len(VALID_REQUEST)}),
    )
    for conn, valid, complete in cases:
        data = valid[: cut % (len(valid) + 1)]
        if flip and data:
            data = flip_bit(data, bit)
        chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        accepted = only_wire_errors(lambda: feed_and_eof(conn, chunks))  # noqa: B023
        if not flip:
            assert accepted == (len(data) in complete)  # every truncation is detected


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_random_control_maps_only_raise_wire_error(data: st.DataObject) -> None:
    kind, keys = data.draw(
        st.sampled_from(
            [
                (t.FrameType.REQUEST_HEAD, ["v", "id", "method", "path", "headers", "model"]),
                (t.FrameType.RESPONSE_HEAD, ["v", "id", "status", "headers"]),
                (t.FrameType.END, ["v", "id"]),
                (t.FrameType.ERROR, ["v", "id", "code", "message", "retry_after_s"]),
            ]
        )
    )
    m = data.draw(maps_with_keys(keys, {"v": 1}))
    try:
        payload = dumps(m)
    except WireError:
        return
    frame = bytes([kind]) + len(payload).to_bytes(4, "big") + payload
    only_wire_errors(lambda: t.FrameDecoder().feed(frame))
    only_wire_errors(lambda: sent_client().receive(frame))
    only_wire_errors(lambda: t.TunnelServerConnection().receive(frame))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_any_chunking_gives_the_same_events(sizes: list[int]) -> None:
    stream = b"".join(bytes.fromhex(step["hex"]) for step in EXCHANGE)
    decoder, events, pos = t.FrameDecoder(), [], 0
    for size in sizes:
        events += decoder.feed(stream[pos : pos + size])
        pos += size
    events += decoder.feed(stream[pos:])
    assert events == t.FrameDecoder().feed(stream)
