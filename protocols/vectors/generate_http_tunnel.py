"""Write http-tunnel.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Kept apart from generate.py (same conventions: lowercase hex, every negative vector checked against the
implementation to fail with the reason it names). Frames that no encoder would produce are built by hand.

    /work/venv/bin/python protocols/vectors/generate_http_tunnel.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_http_tunnel.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from meshp2p.wire import tunnel as t
from meshp2p.wire._cbor import dumps

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import reason_of, write_or_check

FILE_NAME = "http-tunnel.json"

CHAT_BODY = b'{"model":"gemma-3-270m","messages":[{"role":"user","content":"Hi"}],"stream":true}'
COMPLETION_BODY = b'{"model":"gemma-3-270m","prompt":"Once upon","max_tokens":8}'
SSE_1 = b'data: {"choices":[{"delta":{"content":"Hello"}}]}\n\n'
SSE_2 = b"data: [DONE]\n\n"
JSON_HEADERS = (("accept", "text/event-stream"), ("content-type", "application/json"))
SSE_HEADERS = (("content-type", "text/event-stream"),)

CHAT = t.RequestHead(0, "POST", "/v1/chat/completions", JSON_HEADERS, "gemma-3-270m")
MODELS = t.RequestHead(1, "GET", "/v1/models", (), None)
COMPLETION = t.RequestHead(2, "POST", "/v1/completions", (("content-type", "application/json"),), "gemma-3-270m")
SPLIT_BODY_BYTES = t.MAX_BODY_FRAME + 10


def event_json(event: t.TunnelEvent) -> dict[str, Any]:
    if isinstance(event, t.RequestHead):
        fields = {"id": event.id, "method": event.method, "path": event.path, "model": event.model}
        return {"type": "request_head", **fields, "headers": [list(h) for h in event.headers]}
    if isinstance(event, t.ResponseHead):
        fields = {"id": event.id, "status": event.status}
        return {"type": "response_head", **fields, "headers": [list(h) for h in event.headers]}
    if isinstance(event, t.BodyChunk):
        return {"type": "body", "data": event.data.hex()}
    if isinstance(event, t.End):
        return {"type": "end", "id": event.id}
    fields = {"code": event.code, "message": event.message, "retry_after_s": event.retry_after_s}
    return {"type": "error", "id": event.id, **fields}


def encode(event: t.TunnelEvent) -> bytes:
    if isinstance(event, t.RequestHead):
        return t.encode_request_head(event)
    if isinstance(event, t.ResponseHead):
        return t.encode_response_head(event)
    if isinstance(event, t.BodyChunk):
        return b"".join(t.encode_body(event.data))
    if isinstance(event, t.End):
        return t.encode_end(event.id)
    return t.encode_error(event)


def server_send(server: t.TunnelServerConnection, event: t.ResponseEvent) -> bytes:
    if isinstance(event, t.ResponseHead):
        return server.send_response_head(event)
    if isinstance(event, t.BodyChunk):
        return b"".join(server.send_body(event.data))
    if isinstance(event, t.End):
        return server.send_end()
    return server.send_error(event.code, event.message, event.retry_after_s)


def raw_frame(kind: int, payload: bytes) -> bytes:
    """A frame around any payload, for the negative vectors no encoder would write."""
    return bytes([kind]) + len(payload).to_bytes(4, "big") + payload


def head_map(**changes: Any) -> dict[str, Any]:
    return {"v": 1, "id": 0, "method": "POST", "path": "/v1/chat/completions", "headers": [], "model": None, **changes}


def expand(segment: bytes | dict[str, Any]) -> bytes:
    """A `received` segment: bytes, or `{"hex", "zeros", "repeat"}` for input too long to write out."""
    if isinstance(segment, bytes):
        return segment
    repeated: bytes = (bytes.fromhex(segment["hex"]) + bytes(segment["zeros"])) * segment["repeat"]
    return repeated



def frame_vectors() -> list[dict[str, Any]]:
    events: list[tuple[str, t.TunnelEvent]] = [
        ("request_head_post", CHAT),
        ("request_head_get", MODELS),
        ("request_head_root_path", t.RequestHead(2, "POST", "/tokenize", JSON_HEADERS, "gemma-3-270m")),
        ("body", t.BodyChunk(CHAT_BODY)),
        ("end", t.End(0)),
        ("end_largest_id", t.End(2**63 - 1)),
        ("response_head", t.ResponseHead(0, 200, SSE_HEADERS)),
        ("error", t.TunnelErrorFrame(1, "overloaded", "4 requests queued", 5)),
        ("error_no_retry", t.TunnelErrorFrame(2, "backend_failed", "llama-server exited", None)),
    ]
    cases = []
    for name, event in events:
        data = encode(event)
        assert t.FrameDecoder().feed(data) == [event], name
        cases.append({"name": name, "event": event_json(event), "hex": data.hex()})
    return cases


def split_vector() -> dict[str, Any]:
    body = bytes(i % 256 for i in range(SPLIT_BODY_BYTES))
    frames = t.encode_body(body)
    assert [len(f) - t.FRAME_HEADER_BYTES for f in frames] == [t.MAX_BODY_FRAME, 10]
    return {
        "body_length": SPLIT_BODY_BYTES,
        "body_pattern": "byte i of the body is i mod 256",
        "frame_headers": [f[: t.FRAME_HEADER_BYTES].hex() for f in frames],
        "sha256": hashlib.sha256(b"".join(frames)).hexdigest(),
    }


def exchange_vector() -> dict[str, Any]:
    """Three requests on one stream: a streamed answer, an ERROR in place of the head, an ERROR mid-body."""
    client, server = t.TunnelClientConnection(), t.TunnelServerConnection()
    responses: list[list[t.ResponseEvent]] = [
        [t.ResponseHead(0, 200, SSE_HEADERS), t.BodyChunk(SSE_1), t.BodyChunk(SSE_2), t.End(0)],
        [t.TunnelErrorFrame(1, "overloaded", "4 requests queued", 5)],
        [
            t.ResponseHead(2, 200, (("content-type", "application/json"),)),
            t.BodyChunk(b'{"id":"cmpl-1",'),
            t.TunnelErrorFrame(2, "backend_failed", "llama-server exited", None),
        ],
    ]
    requests = ((CHAT, CHAT_BODY), (MODELS, b""), (COMPLETION, COMPLETION_BODY))
    steps = []
    for (head, body), response in zip(requests, responses, strict=True):
        sent = client.send_request(head, body)
        request_events = server.receive(sent)
        steps.append({"from": "client", "events": [event_json(e) for e in request_events], "hex": sent.hex()})
        answer = b"".join(server_send(server, e) for e in response)
        assert answer == b"".join(encode(e) for e in response) and server.idle
        assert client.receive(answer) == response and client.idle
        steps.append({"from": "server", "events": [event_json(e) for e in response], "hex": answer.hex()})
    return {"name": "three_requests_one_stream", "steps": steps}


def invalid_vectors() -> list[dict[str, Any]]:
    chat_head, chat_end = t.encode_request_head(CHAT), t.encode_end(0)
    request = t.encode_request(CHAT, CHAT_BODY)
    body = b"".join(t.encode_body(CHAT_BODY))
    response_head = t.encode_response_head(t.ResponseHead(0, 200, SSE_HEADERS))
    cases: list[dict[str, Any]] = []

    def run(side: str, received: bytes, eof: bool) -> None:
        if side == "decoder":
            t.FrameDecoder().feed(received)
            return
        conn: t.TunnelClientConnection | t.TunnelServerConnection
        if side == "client":
            conn = t.TunnelClientConnection()
            conn.send_request(CHAT, CHAT_BODY)
        else:
            conn = t.TunnelServerConnection()
        conn.receive(received)
        if eof:
            conn.eof()

    def bad(name: str, reason: str, side: str, received: list[bytes | dict[str, Any]], *, eof: bool = False) -> None:
        data = b"".join(expand(segment) for segment in received)
        got = reason_of(lambda: run(side, data, eof))
        if got != reason:
            raise AssertionError(f"vector {name}: expected {reason}, implementation says {got}")
        case: dict[str, Any] = {"name": name, "side": side}
        if side == "client":
            case["sent"] = request.hex()
        segments = [s.hex() if isinstance(s, bytes) else s for s in received]
        cases.append({**case, "received": segments, "eof": eof, "reason": reason})

    def head(**changes: Any) -> bytes:
        return raw_frame(t.FrameType.REQUEST_HEAD, dumps(head_map(**changes)))

    no_model = {k: v for k, v in head_map().items() if k != "model"}

    def control(kind: int, m: dict[str, Any]) -> bytes:
        return raw_frame(kind, dumps(m))

    # Framing and field checks, any side (the decoder alone).
    bad("unknown_type", "malformed", "decoder", [raw_frame(0x06, dumps({"v": 1, "id": 0}))])
    bad("type_zero", "malformed", "decoder", [bytes(5)])
    bad("control_frame_over_limit", "oversized", "decoder", [bytes([1]) + (t.MAX_CONTROL_FRAME + 1).to_bytes(4, "big")])
    bad("body_frame_over_limit", "oversized", "decoder", [bytes([2]) + (t.MAX_BODY_FRAME + 1).to_bytes(4, "big")])
    bad("empty_body_frame", "malformed", "decoder", [raw_frame(2, b"")])
    bad("empty_control_frame", "malformed", "decoder", [raw_frame(3, b"")])
    bad("control_not_a_map", "malformed", "decoder", [raw_frame(3, dumps([1, 0]))])
    bad("end_not_canonical", "malformed", "decoder", [raw_frame(3, bytes.fromhex("a2617601626964") + b"\x18\x00")])
    bad("end_trailing_bytes", "malformed", "decoder", [raw_frame(3, dumps({"v": 1, "id": 0}) + b"\x00")])
    bad("request_head_bad_version", "bad_version", "decoder", [head(v=2)])
    bad("request_head_extra_key", "malformed", "decoder", [head(stream=True)])
    bad("request_head_missing_model", "malformed", "decoder", [raw_frame(1, dumps(no_model))])
    bad("request_head_negative_id", "malformed", "decoder", [head(id=-1)])
    bad("request_head_method_put", "malformed", "decoder", [head(method="PUT")])
    bad("request_head_method_lowercase", "malformed", "decoder", [head(method="post")])
    bad("request_head_path_outside_v1", "malformed", "decoder", [head(path="/slots")])
    bad("request_head_path_root_not_listed", "malformed", "decoder", [head(path="/tokenizer")])
    bad("request_head_path_dot_segment", "malformed", "decoder", [head(path="/v1/../slots")])
    bad("request_head_path_space", "malformed", "decoder", [head(path="/v1/chat completions")])
    bad("request_head_path_too_long", "malformed", "decoder", [head(path="/v1/" + "a" * (t.MAX_PATH_CHARS - 3))])
    bad("request_head_header_uppercase", "malformed", "decoder", [head(headers=[["Content-Type", "text/plain"]])])
    bad("request_head_header_crlf", "malformed", "decoder", [head(headers=[["x-a", "1\r\nx-b: 2"]])])
    bad("request_head_header_not_pair", "malformed", "decoder", [head(headers=[["x-a", "1", "2"]])])
    bad("request_head_too_many_headers", "malformed", "decoder", [head(headers=[["x-a", "1"]] * (t.MAX_HEADERS + 1))])
    bad("request_head_empty_model", "malformed", "decoder", [head(model="")])
    response = {"v": 1, "id": 0, "status": 200, "headers": []}
    bad("response_head_status_600", "malformed", "decoder", [control(4, {**response, "status": 600})])
    bad("response_head_status_bool", "malformed", "decoder", [control(4, {**response, "status": True})])
    error = {"v": 1, "id": 0, "code": "overloaded", "message": "", "retry_after_s": None}
    bad("error_bad_version", "bad_version", "decoder", [control(5, {**error, "v": 2})])
    bad("error_code_too_long", "malformed", "decoder", [control(5, {**error, "code": "x" * 65})])
    bad("error_code_not_snake_case", "malformed", "decoder", [control(5, {**error, "code": "Not Member"})])
    bad("error_retry_negative", "malformed", "decoder", [control(5, {**error, "retry_after_s": -1})])
    bad("error_retry_float", "malformed", "decoder", [control(5, {**error, "retry_after_s": 1.5})])
    # Request order (server side).
    bad("body_before_head", "malformed", "server", [body])
    bad("end_before_head", "malformed", "server", [chat_end])
    bad("response_head_from_client", "malformed", "server", [response_head])
    bad("head_inside_request", "malformed", "server", [chat_head, t.encode_request_head(MODELS)])
    bad("end_wrong_id", "malformed", "server", [chat_head, t.encode_end(1)])
    bad("pipelined_request", "malformed", "server", [request, t.encode_request(MODELS)])
    over_limit = {"hex": "0200040000", "zeros": t.MAX_BODY_FRAME, "repeat": t.MAX_REQUEST_BODY // t.MAX_BODY_FRAME}
    bad("request_body_over_limit", "oversized", "server", [chat_head, over_limit, raw_frame(2, b"\x00")])
    bad("truncated_request", "truncated", "server", [chat_head, body], eof=True)
    bad("truncated_request_mid_frame", "truncated", "server", [chat_head, body[:9]], eof=True)
    # Response order and truncation (client side, after sending the chat request with id 0).
    bad("unsolicited_response_after_end", "malformed", "client", [response_head, t.encode_end(0), response_head])
    bad("body_before_response_head", "malformed", "client", [body])
    bad("end_before_response_head", "malformed", "client", [chat_end])
    bad("second_response_head", "malformed", "client", [response_head, response_head])
    bad("response_id_mismatch", "malformed", "client", [t.encode_response_head(t.ResponseHead(1, 200, ()))])
    bad("error_id_mismatch", "malformed", "client", [t.encode_error(t.TunnelErrorFrame(1, "overloaded", "", None))])
    bad("request_head_from_server", "malformed", "client", [t.encode_request_head(MODELS)])
    bad("truncated_before_response", "truncated", "client", [], eof=True)
    bad("truncated_after_body", "truncated", "client", [response_head, raw_frame(2, SSE_1)], eof=True)
    bad("truncated_mid_frame", "truncated", "client", [response_head, raw_frame(2, SSE_1)[:20]], eof=True)
    return cases


def build() -> dict[str, Any]:
    return {
        "format": "http-tunnel",
        "spec": "protocols/http-tunnel.md",
        "constants": {
            "protocol_id": t.TUNNEL_PROTOCOL_ID,
            "frame_header_bytes": t.FRAME_HEADER_BYTES,
            "max_control_frame": t.MAX_CONTROL_FRAME,
            "max_body_frame": t.MAX_BODY_FRAME,
            "max_request_body": t.MAX_REQUEST_BODY,
        },
        "frames": frame_vectors(),
        "body_split": split_vector(),
        "exchanges": [exchange_vector()],
        "invalid": invalid_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", lambda: {FILE_NAME: build()}, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
