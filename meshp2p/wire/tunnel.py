"""The HTTP tunnel (protocols/http-tunnel.md): OpenAI-style requests to a peer over one reusable libp2p stream.

Sans-IO like h11: `FrameDecoder` turns stream bytes into events, the `encode_*` functions turn events into frames,
and `TunnelClientConnection` / `TunnelServerConnection` check that each exchange runs in order. The trio code that
owns the stream only moves bytes, and resets the stream when a `WireError` comes out. A response always ends with
an explicit END or ERROR frame because py-libp2p shows a crashed peer as a clean EOF: `eof()` in the middle of an
exchange is a truncation, not the end of the response.

Over 400 lines on purpose: the frame codec and both sides' machines are one protocol whose states and frames are
read together against the spec; splitting them would scatter the rules the vectors check.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from meshp2p.wire._cbor import check_keys, check_text, check_version, dumps, get_int, get_opt_int, get_text, loads_map
from meshp2p.wire.errors import WireError

TUNNEL_PROTOCOL_ID = "/meshp2p/http/1.0.0"
#: The ERROR code a server answers to a peer that has not proved membership (protocols/http-tunnel.md).
NOT_MEMBER = "not_member"
FRAME_HEADER_BYTES = 5
#: Payload limits, judged from the frame header so a peer cannot make us buffer more than one large frame.
MAX_CONTROL_FRAME = 16 * 1024
MAX_BODY_FRAME = 256 * 1024
#: Sum of the BODY frames of one request; responses are streamed and have no limit.
MAX_REQUEST_BODY = 32 * 1024 * 1024
MAX_PATH_CHARS = 256
#: llama-server's own paths without a /v1/ form that a REQUEST_HEAD may name beside /v1/... (protocols/http-tunnel.md).
ROOT_PATHS = ("/tokenize", "/detokenize", "/apply-template")
MAX_HEADERS = 32
MAX_HEADER_CHARS = 1024
MAX_MODEL_CHARS = 256
MAX_ERROR_CODE_CHARS = 64
MAX_ERROR_MESSAGE_CHARS = 1024
METHODS = frozenset({"GET", "POST"})
#: Opening a stream (connection, multistream negotiation) gives up after this long.
OPEN_TIMEOUT_S = 10.0
#: Either side closes a stream idle this long; a client reuses only streams idle for less than REUSE_IDLE_S, so it
#: never sends a request on a stream the server is closing at that moment.
IDLE_STREAM_S = 60.0
REUSE_IDLE_S = 50.0

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
_CODE_CHARS = frozenset("_0123456789abcdefghijklmnopqrstuvwxyz")
_LINE_BREAKS = ("\r", "\n", "\0")

Headers: TypeAlias = tuple[tuple[str, str], ...]


class FrameType(enum.IntEnum):
    REQUEST_HEAD = 0x01
    BODY = 0x02
    END = 0x03
    RESPONSE_HEAD = 0x04
    ERROR = 0x05


@dataclass(frozen=True, slots=True)
class RequestHead:
    id: int
    method: str
    path: str
    headers: Headers = ()
    model: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseHead:
    id: int
    status: int
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class End:
    id: int


@dataclass(frozen=True, slots=True)
class TunnelErrorFrame:
    """Ends a response abnormally, in place of the head or after part of the body; the stream stays usable."""

    id: int
    code: str
    message: str
    retry_after_s: int | None = None


TunnelEvent: TypeAlias = RequestHead | ResponseHead | BodyChunk | End | TunnelErrorFrame
RequestEvent: TypeAlias = RequestHead | BodyChunk | End
ResponseEvent: TypeAlias = ResponseHead | BodyChunk | End | TunnelErrorFrame


# ---------------------------------------------------------------- control payloads


def _headers(value: object) -> Headers:
    if type(value) is not list or len(value) > MAX_HEADERS:
        raise WireError("malformed", f"'headers' is not an array of at most {MAX_HEADERS} pairs")
    pairs = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise WireError("malformed", "a header is not a [name, value] pair")
        name = check_text(pair[0], "header name", max_chars=MAX_HEADER_CHARS, min_chars=1)
        text = check_text(pair[1], "header value", max_chars=MAX_HEADER_CHARS)
        if not set(name) <= _TOKEN_CHARS:
            raise WireError("malformed", f"header name {name!r} is not a lowercase HTTP token")
        if any(c in text for c in _LINE_BREAKS):
            raise WireError("malformed", f"header {name!r} has CR, LF or NUL in its value")
        pairs.append((name, text))
    return tuple(pairs)


def _path(m: dict[str, Any]) -> str:
    path = get_text(m, "path", max_chars=MAX_PATH_CHARS)
    if not path.startswith("/v1/") and path.split("?", 1)[0] not in ROOT_PATHS:
        raise WireError("malformed", f"'path' does not start with /v1/ and is not one of {', '.join(ROOT_PATHS)}")
    # The server hands the path to an HTTP backend: no spaces or controls, and no way out of /v1/.
    if not all("!" <= c <= "~" for c in path) or "#" in path or "\\" in path:
        raise WireError("malformed", "'path' has characters outside visible ASCII, '#' or '\\'")
    if {".", ".."} & set(path.split("?", 1)[0].split("/")):
        raise WireError("malformed", "'path' has a dot segment")
    return path


def _request_head(m: dict[str, Any]) -> RequestHead:
    check_version(m)
    check_keys(m, ("v", "id", "method", "path", "headers", "model"))
    request_id = get_int(m, "id")
    method = get_text(m, "method", max_chars=8)
    if method not in METHODS:
        raise WireError("malformed", f"'method' is not one of {sorted(METHODS)}")
    path = _path(m)
    model = m["model"]
    if model is not None:
        model = check_text(model, "model", max_chars=MAX_MODEL_CHARS, min_chars=1)
    return RequestHead(request_id, method, path, _headers(m["headers"]), model)


def _response_head(m: dict[str, Any]) -> ResponseHead:
    check_version(m)
    check_keys(m, ("v", "id", "status", "headers"))
    return ResponseHead(get_int(m, "id"), get_int(m, "status", lo=100, hi=599), _headers(m["headers"]))


def _end(m: dict[str, Any]) -> End:
    check_version(m)
    check_keys(m, ("v", "id"))
    return End(get_int(m, "id"))


def _error(m: dict[str, Any]) -> TunnelErrorFrame:
    check_version(m)
    check_keys(m, ("v", "id", "code", "message", "retry_after_s"))
    request_id = get_int(m, "id")
    code = get_text(m, "code", min_chars=1, max_chars=MAX_ERROR_CODE_CHARS)
    if not set(code) <= _CODE_CHARS:
        raise WireError("malformed", f"error code {code!r} is not lowercase snake_case")
    message = get_text(m, "message", max_chars=MAX_ERROR_MESSAGE_CHARS)
    return TunnelErrorFrame(request_id, code, message, get_opt_int(m, "retry_after_s"))


_FRAME_TYPES = frozenset(FrameType)
_READERS: dict[int, Callable[[dict[str, Any]], TunnelEvent]] = {
    FrameType.REQUEST_HEAD: _request_head,
    FrameType.END: _end,
    FrameType.RESPONSE_HEAD: _response_head,
    FrameType.ERROR: _error,
}


# ---------------------------------------------------------------- encoders


def _frame(kind: FrameType, payload: bytes | memoryview) -> bytes:
    return bytes([kind]) + len(payload).to_bytes(4, "big") + payload


def _control(kind: FrameType, m: dict[str, Any]) -> bytes:
    """Run the receiver's checks on the encoded bytes, so we never send what a peer must reject."""
    payload = dumps(m)
    _READERS[kind](loads_map(payload, max_bytes=MAX_CONTROL_FRAME))
    return _frame(kind, payload)


def encode_request_head(head: RequestHead) -> bytes:
    m = {"v": 1, "id": head.id, "method": head.method, "path": head.path, "headers": head.headers, "model": head.model}
    return _control(FrameType.REQUEST_HEAD, m)


def encode_body(data: bytes) -> list[bytes]:
    """BODY frames of at most MAX_BODY_FRAME bytes each; no frames for empty data (a BODY frame is never empty)."""
    view = memoryview(data)  # slices of a view: each frame copies its bytes once, not twice
    return [_frame(FrameType.BODY, view[i : i + MAX_BODY_FRAME]) for i in range(0, len(view), MAX_BODY_FRAME)]


def encode_end(request_id: int) -> bytes:
    return _control(FrameType.END, {"v": 1, "id": request_id})


def encode_response_head(head: ResponseHead) -> bytes:
    return _control(FrameType.RESPONSE_HEAD, {"v": 1, "id": head.id, "status": head.status, "headers": head.headers})


def encode_error(error: TunnelErrorFrame) -> bytes:
    m = {"v": 1, "id": error.id, "code": error.code, "message": error.message, "retry_after_s": error.retry_after_s}
    return _control(FrameType.ERROR, m)


def encode_request(head: RequestHead, body: bytes = b"") -> bytes:
    """A whole request: head, body frames, END."""
    if len(body) > MAX_REQUEST_BODY:
        raise WireError("oversized", f"request body of {len(body)} bytes > {MAX_REQUEST_BODY}")
    return encode_request_head(head) + b"".join(encode_body(body)) + encode_end(head.id)


# ---------------------------------------------------------------- decoder


class FrameDecoder:
    """Feed stream bytes in any chunking; get events out. Once it fails it stays failed.

    A frame's payload is kept as slices of the fed bytes and joined once, when the frame is whole: a BODY frame's
    bytes are copied once on their way through, however they were cut."""

    def __init__(self) -> None:
        #: The arriving frame's header so far, then whole (FRAME_HEADER_BYTES) while its payload arrives.
        self._head = bytearray()
        self._length = 0
        self._payload: list[memoryview] = []
        self._payload_bytes = 0
        self._failed: WireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame: non-zero at end of stream means the peer hung up mid-frame."""
        return len(self._head) + self._payload_bytes

    def feed(self, data: bytes) -> list[TunnelEvent]:
        if self._failed is not None:
            raise WireError(self._failed.reason, "the stream already failed")
        view = memoryview(data if type(data) is bytes else bytes(data))  # slices of it outlive this call
        at, end = 0, len(view)
        events: list[TunnelEvent] = []
        try:
            while True:
                if len(self._head) < FRAME_HEADER_BYTES:
                    if at == end:
                        break
                    if not self._head and view[at] not in _FRAME_TYPES:
                        raise WireError("malformed", f"unknown frame type 0x{view[at]:02x}")
                    took = min(FRAME_HEADER_BYTES - len(self._head), end - at)
                    self._head += view[at:at + took]
                    at += took
                    if len(self._head) < FRAME_HEADER_BYTES:
                        break
                    self._length = self._check_head()
                took = min(self._length - self._payload_bytes, end - at)
                if took:
                    self._payload.append(view[at:at + took])
                    self._payload_bytes += took
                    at += took
                if self._payload_bytes < self._length:
                    break
                kind, payload = self._head[0], b"".join(self._payload)
                self._head, self._payload, self._payload_bytes = bytearray(), [], 0
                if kind == FrameType.BODY:
                    events.append(BodyChunk(payload))
                else:
                    events.append(_READERS[kind](loads_map(payload, max_bytes=MAX_CONTROL_FRAME)))
        except WireError as exc:
            self._failed = exc
            self._head, self._payload, self._payload_bytes = bytearray(), [], 0
            raise
        return events

    def _check_head(self) -> int:
        """The whole header's payload length, within its frame type's limit."""
        kind = self._head[0]
        length = int.from_bytes(self._head[1:FRAME_HEADER_BYTES], "big")
        limit = MAX_BODY_FRAME if kind == FrameType.BODY else MAX_CONTROL_FRAME
        if length > limit:
            raise WireError("oversized", f"frame type 0x{kind:02x} of {length} bytes > {limit}")
        if length == 0 and kind == FrameType.BODY:
            raise WireError("malformed", "empty BODY frame")
        return length


# ---------------------------------------------------------------- exchange state machines


class _Stream:
    """What both sides share: the decoder, request ids, and the failed and closed flags."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.failed: WireError | None = None
        self.closed = False
        self.last_id = -1
        self.id = -1

    @property
    def usable(self) -> bool:
        return self.failed is None and not self.closed

    def check_alive(self) -> None:
        if self.failed is not None:
            raise WireError(self.failed.reason, "the stream already failed")

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """A protocol error from the peer fails the connection for good: the stream must be reset."""
        self.check_alive()
        try:
            yield
        except WireError as exc:
            self.failed = exc
            raise

    def feed(self, data: bytes) -> list[TunnelEvent]:
        if self.closed and data:
            raise WireError("malformed", "data after EOF")
        return self.decoder.feed(data)

    def eof(self, mid_exchange: bool) -> None:
        self.closed = True
        if self.decoder.buffered:
            raise WireError("truncated", f"EOF inside a frame ({self.decoder.buffered} bytes buffered)")
        if mid_exchange:
            raise WireError("truncated", f"EOF in the middle of exchange id {self.id}")


class _Client(enum.Enum):
    IDLE = "idle"
    AWAIT_HEAD = "await_head"
    BODY = "body"


class TunnelClientConnection:
    """Side A, which opened the stream: `send_request`, then `receive` until End or TunnelErrorFrame, repeat."""

    def __init__(self) -> None:
        self._stream = _Stream()
        self._state = _Client.IDLE

    @property
    def idle(self) -> bool:
        """True when the stream can carry the next request (no request in flight, no failure, no EOF)."""
        return self._state is _Client.IDLE and self._stream.usable

    def send_request(self, head: RequestHead, body: bytes = b"") -> bytes:
        stream = self._stream
        stream.check_alive()
        if not self.idle:
            raise WireError("malformed", "a request is in flight or the stream is closed")
        if head.id <= stream.last_id:
            raise WireError("malformed", f"request id {head.id} does not increase (last {stream.last_id})")
        data = encode_request(head, body)
        stream.last_id = stream.id = head.id
        self._state = _Client.AWAIT_HEAD
        return data

    def receive(self, data: bytes) -> list[ResponseEvent]:
        with self._stream.guard():
            return [self._on_event(event) for event in self._stream.feed(data)]

    def eof(self) -> None:
        """The peer closed its side; raises if that cut a response short."""
        with self._stream.guard():
            self._stream.eof(self._state is not _Client.IDLE)

    def _on_event(self, event: TunnelEvent) -> ResponseEvent:
        if isinstance(event, RequestHead):
            raise WireError("malformed", "REQUEST_HEAD from the server")
        if self._state is _Client.IDLE:
            raise WireError("malformed", f"{type(event).__name__} with no request in flight")
        if isinstance(event, BodyChunk):
            if self._state is not _Client.BODY:
                raise WireError("malformed", "BODY before RESPONSE_HEAD")
            return event
        if event.id != self._stream.id:
            raise WireError("malformed", f"{type(event).__name__} for id {event.id}, expected {self._stream.id}")
        if isinstance(event, ResponseHead):
            if self._state is not _Client.AWAIT_HEAD:
                raise WireError("malformed", "a second RESPONSE_HEAD")
            self._state = _Client.BODY
        elif isinstance(event, End) and self._state is not _Client.BODY:
            raise WireError("malformed", "END before RESPONSE_HEAD")
        else:
            self._state = _Client.IDLE
        return event


class _Request(enum.Enum):
    IDLE = "idle"
    BODY = "body"
    DONE = "done"


class _Response(enum.Enum):
    WAIT = "wait"
    BODY = "body"
    DONE = "done"


class TunnelServerConnection:
    """Side B, which accepted the stream: `receive` requests, answer with the `send_*` methods.

    The response may start before the request's END (say, an early ERROR); the exchange is over, and the next
    RequestHead accepted, once the request's END has arrived and the response's END or ERROR has been sent.
    """

    def __init__(self) -> None:
        self._stream = _Stream()
        self._request = _Request.IDLE
        self._response = _Response.WAIT
        self._body_bytes = 0

    @property
    def idle(self) -> bool:
        """True between exchanges while the stream is open: the next thing to arrive is a RequestHead."""
        return self._request is _Request.IDLE and self._stream.usable

    def receive(self, data: bytes) -> list[RequestEvent]:
        with self._stream.guard():
            return [self._on_event(event) for event in self._stream.feed(data)]

    def eof(self) -> None:
        """The peer closed its side; raises if that cut a request short. A complete request still gets its response."""
        with self._stream.guard():
            self._stream.eof(self._request is _Request.BODY)

    def send_response_head(self, head: ResponseHead) -> bytes:
        self._check_send(_Response.WAIT)
        if head.id != self._stream.id:
            raise WireError("malformed", f"response head for id {head.id}, the request is {self._stream.id}")
        frame = encode_response_head(head)
        self._response = _Response.BODY
        return frame

    def send_body(self, data: bytes) -> list[bytes]:
        self._check_send(_Response.BODY)
        return encode_body(data)

    def send_end(self) -> bytes:
        self._check_send(_Response.BODY)
        return self._finish(encode_end(self._stream.id))

    def send_error(self, code: str, message: str, retry_after_s: int | None = None) -> bytes:
        self._check_send(_Response.WAIT, _Response.BODY)
        return self._finish(encode_error(TunnelErrorFrame(self._stream.id, code, message, retry_after_s)))

    def _check_send(self, *allowed: _Response) -> None:
        self._stream.check_alive()
        if self._request is _Request.IDLE or self._response not in allowed:
            state = f"request {self._request.value}, response {self._response.value}"
            raise WireError("malformed", f"cannot send that now ({state})")

    def _finish(self, frame: bytes) -> bytes:
        self._response = _Response.DONE
        self._maybe_complete()
        return frame

    def _maybe_complete(self) -> None:
        if self._request is _Request.DONE and self._response is _Response.DONE:
            self._request, self._response = _Request.IDLE, _Response.WAIT

    def _on_event(self, event: TunnelEvent) -> RequestEvent:
        if isinstance(event, ResponseHead | TunnelErrorFrame):
            raise WireError("malformed", f"{type(event).__name__} from the client")
        if self._request is _Request.DONE:
            raise WireError("malformed", "a frame before the response ended: one request at a time")
        if isinstance(event, RequestHead):
            if self._request is not _Request.IDLE:
                raise WireError("malformed", "REQUEST_HEAD inside a request")
            if event.id <= self._stream.last_id:
                raise WireError("malformed", f"request id {event.id} does not increase (last {self._stream.last_id})")
            self._stream.last_id = self._stream.id = event.id
            self._request, self._body_bytes = _Request.BODY, 0
            return event
        if self._request is _Request.IDLE:
            raise WireError("malformed", f"{type(event).__name__} before REQUEST_HEAD")
        if isinstance(event, BodyChunk):
            self._body_bytes += len(event.data)
            if self._body_bytes > MAX_REQUEST_BODY:
                raise WireError("oversized", f"request body over {MAX_REQUEST_BODY} bytes")
            return event
        if event.id != self._stream.id:
            raise WireError("malformed", f"END for id {event.id}, expected {self._stream.id}")
        self._request = _Request.DONE
        self._maybe_complete()
        return event
