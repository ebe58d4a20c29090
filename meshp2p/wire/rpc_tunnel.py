"""The RPC tunnel (protocols/rpc-tunnel.md): llama.cpp's RPC byte stream between a host and a worker over libp2p.

One framed hello and one framed reply open the stream; after an `ok: true` the stream carries llama.cpp's own RPC
bytes, unframed, in both directions. Sans-IO like h11: `RpcDialer` and `RpcListener` take stream bytes in any
chunking and hand back the hello, the reply, and whatever bytes followed the frame (the start of the RPC stream,
which the caller must forward, not drop). The trio code in `meshp2p/p2p/rpc_tunnel.py` moves the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from meshp2p.wire._cbor import check_keys, check_text, check_version, dumps, get_bool, get_text, loads_map
from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import FRAME_HEADER_BYTES, frame_bytes

RPC_PROTOCOL_ID = "/meshp2p/rpc/1.0.0"
MAX_FRAME_BYTES = 4096
MAX_MODEL_CHARS = 256
MAX_THREADS = 1024
MAX_ERROR_CHARS = 64
#: Opening the libp2p stream (connection, multistream negotiation) gives up after this long.
OPEN_TIMEOUT_S = 10.0
#: The listener waits this long for the hello after the stream opened.
HELLO_TIMEOUT_S = 10.0
#: The listener may start its RPC server on demand; it answers `rpc_unavailable` if that takes longer than this,
#: which is shorter than HANDSHAKE_TIMEOUT_S so the dialer hears why instead of timing out.
RPC_START_TIMEOUT_S = 20.0
#: The dialer waits this long for the reply after sending the hello.
HANDSHAKE_TIMEOUT_S = 30.0

#: Refusal codes the listener sends besides the wire reasons (`malformed`, `oversized`, `bad_version`).
NOT_MEMBER = "not_member"
RPC_UNAVAILABLE = "rpc_unavailable"
_CODE_CHARS = frozenset("_0123456789abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True, slots=True)
class RpcHello:
    """What the host asks for. Both fields are informational: the worker's RPC server is shared, not per split."""

    #: The content id or model id the split is for (logs, accounting), or None.
    model: str | None = None
    #: CPU threads the host would like the worker's RPC server to use, or None for the worker's choice.
    threads: int | None = None


@dataclass(frozen=True, slots=True)
class RpcReply:
    """`ok` opens the RPC byte stream; a refusal carries a snake_case `error` code and the stream is closed."""

    ok: bool
    error: str | None = None


# ---------------------------------------------------------------- payloads


def _hello_from_map(m: dict[str, Any]) -> RpcHello:
    check_version(m)
    check_keys(m, ("v", "model", "threads"))
    model = m["model"]
    if model is not None:
        model = check_text(model, "model", min_chars=1, max_chars=MAX_MODEL_CHARS)
    threads = m["threads"]
    if threads is not None and (type(threads) is not int or not 1 <= threads <= MAX_THREADS):
        raise WireError("malformed", f"'threads' is not an integer in 1..{MAX_THREADS} or null")
    return RpcHello(model, threads)


def _error_code(value: object) -> str:
    code = check_text(value, "error", min_chars=1, max_chars=MAX_ERROR_CHARS)
    if not set(code) <= _CODE_CHARS:
        raise WireError("malformed", f"error code {code!r} is not lowercase snake_case")
    return code


def _reply_from_map(m: dict[str, Any]) -> RpcReply:
    check_version(m)
    if get_bool(m, "ok"):
        check_keys(m, ("v", "ok"))
        return RpcReply(True)
    check_keys(m, ("v", "ok", "error"))
    return RpcReply(False, _error_code(get_text(m, "error", max_chars=MAX_ERROR_CHARS)))


def decode_hello(payload: bytes) -> RpcHello:
    """A hello frame's payload (without the length prefix)."""
    return _hello_from_map(loads_map(payload, max_bytes=MAX_FRAME_BYTES))


def decode_reply(payload: bytes) -> RpcReply:
    """A reply frame's payload (without the length prefix)."""
    return _reply_from_map(loads_map(payload, max_bytes=MAX_FRAME_BYTES))


def encode_hello(hello: RpcHello) -> bytes:
    """The framed hello; checked with the receiver's rules so we never send what a worker must reject."""
    payload = dumps({"v": 1, "model": hello.model, "threads": hello.threads})
    decode_hello(payload)
    return frame_bytes(payload, max_bytes=MAX_FRAME_BYTES)


def encode_reply(reply: RpcReply) -> bytes:
    """The framed reply: `{"v": 1, "ok": true}` or `{"v": 1, "ok": false, "error": code}`."""
    if reply.ok:
        if reply.error is not None:
            raise WireError("malformed", "an ok reply carries no error")
        m: dict[str, Any] = {"v": 1, "ok": True}
    else:
        m = {"v": 1, "ok": False, "error": reply.error}
    payload = dumps(m)
    decode_reply(payload)
    return frame_bytes(payload, max_bytes=MAX_FRAME_BYTES)


def accept() -> bytes:
    return encode_reply(RpcReply(True))


def refuse(code: str) -> bytes:
    """The listener's answer before it closes the stream; `code` is NOT_MEMBER, RPC_UNAVAILABLE or a wire reason."""
    return encode_reply(RpcReply(False, code))


# ---------------------------------------------------------------- the two ends


class _OneFrame:
    """Collects exactly one length-prefixed frame; the bytes after it are not framed and are handed back as is."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._failed: WireError | None = None
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes] | None:
        """(payload, rest) once the frame is complete, else None. Fails from the header alone if it is too long."""
        if self._failed is not None:
            raise WireError(self._failed.reason, "the handshake already failed")
        if self.done:
            raise WireError("malformed", "the handshake is over: these bytes belong to the RPC stream")
        self._buffer += data
        if len(self._buffer) < FRAME_HEADER_BYTES:
            return None
        length = int.from_bytes(self._buffer[:FRAME_HEADER_BYTES], "big")
        if length > MAX_FRAME_BYTES:
            # Judged from the header alone, so a peer cannot make us buffer a large frame.
            self._fail(WireError("oversized", f"frame of {length} bytes > {MAX_FRAME_BYTES}"))
        end = FRAME_HEADER_BYTES + length
        if len(self._buffer) < end:
            return None
        payload, rest = bytes(self._buffer[FRAME_HEADER_BYTES:end]), bytes(self._buffer[end:])
        self._buffer.clear()
        self.done = True
        return payload, rest

    def eof(self) -> None:
        if not self.done and self._failed is None:
            self._fail(WireError("truncated", f"the stream ended after {len(self._buffer)} bytes of the handshake"))

    def _fail(self, exc: WireError) -> NoReturn:
        self.failed(exc)
        raise exc

    def failed(self, exc: WireError) -> None:
        """The frame arrived but broke a rule: the handshake stays failed."""
        self._failed = exc
        self._buffer.clear()


class RpcDialer:
    """The host's end: send `hello_frame()`, feed what arrives to `receive` until it returns bytes.

    `receive` returns None until the whole reply arrived, then the bytes that followed it (the start of the RPC
    stream from the worker, usually empty), which the caller forwards. A refusal raises WireError `rejected`
    (its detail is the worker's code); any other WireError means the stream must be reset.
    """

    def __init__(self, hello: RpcHello) -> None:
        self.hello = hello
        self._frame = _OneFrame()
        self._sent = False
        self.reply: RpcReply | None = None

    @property
    def is_open(self) -> bool:
        return self.reply is not None and self.reply.ok

    def hello_frame(self) -> bytes:
        if self._sent:
            raise WireError("malformed", "hello_frame() was already called")
        self._sent = True
        return encode_hello(self.hello)

    def receive(self, data: bytes) -> bytes | None:
        if not self._sent:
            raise WireError("malformed", "the worker spoke before the hello")
        got = self._frame.feed(data)
        if got is None:
            return None
        payload, rest = got
        try:
            reply = decode_reply(payload)
        except WireError as exc:
            self._frame.failed(exc)
            raise
        self.reply = reply
        if not reply.ok:
            raise WireError("rejected", reply.error)
        return rest

    def eof(self) -> None:
        """The stream ended: a truncation unless the reply was complete."""
        self._frame.eof()


class RpcListener:
    """The worker's end: feed stream bytes to `receive` until it returns the hello, then answer.

    Check membership (and start the RPC server) first, then send `accept()` and forward `rest`, the RPC bytes that
    followed the hello, before pumping the stream; or send `refuse(code)` and close. On a WireError from `receive`,
    send `refuse(err.reason)` and close.
    """

    def __init__(self) -> None:
        self._frame = _OneFrame()
        self.hello: RpcHello | None = None
        #: Bytes that followed the hello: the start of the RPC stream (a dialer that did not wait for the reply).
        self.rest = b""

    def receive(self, data: bytes) -> RpcHello | None:
        got = self._frame.feed(data)
        if got is None:
            return None
        payload, self.rest = got
        try:
            hello = decode_hello(payload)
        except WireError as exc:
            self._frame.failed(exc)
            raise
        self.hello = hello
        return hello

    def eof(self) -> None:
        """The stream ended: a truncation unless the hello was complete."""
        self._frame.eof()
