"""What every meshp2p stream protocol needs of a py-libp2p stream, written once: reads that end in b"", one-frame
reads, and framed message exchanges.

py-libp2p reports a hang-up (a clean close as much as a crash) as `StreamEOF`, or `StreamReset`, from `read()`;
it never returns b"" (notes/py-libp2p.md). `read_some` turns both into b"", so the protocols above read like
trio streams and never import libp2p's exceptions. `Stream` is the little these helpers use, so a test can stand
in `trio.testing.memory_stream_pair`-style objects for a libp2p stream.

`serve_stream` is the one error ladder of every stream protocol a node answers (`Overlay.serve` runs each handler
through it): a handler only says what its protocol does, and writes the replies a refusal owes (an ERROR frame,
`ok: false`) before it returns; how the stream ends, what is counted and what is logged is decided here, once.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamError

from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import PayloadReader, SingleFrameReader, frame_bytes

log = logging.getLogger(__name__)

READ_BYTES = 65536
#: How long closing or resetting a stream may take (one frame, on a connection that may be congested or gone).
END_TIMEOUT_S = 5.0
#: What the network throws at a handler as a matter of course (a peer that left, stalled or hung up): logged at
#: debug. Anything else is a bug of ours, logged at warning with its traceback.
_WEATHER = (BaseLibp2pError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError)

#: An answering side of a stream protocol: what `Overlay.serve` runs for each stream a peer opens.
Handler = Callable[[Any], Awaitable[None]]


class Stream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


async def read_some(stream: Stream, max_bytes: int = READ_BYTES) -> bytes:
    """Up to `max_bytes`; b"" once the peer hung up (closed, reset or gone)."""
    try:
        return await stream.read(max_bytes)
    except StreamError:
        return b""


async def read_one_frame(stream: Stream, reader: SingleFrameReader) -> bytes:
    """The stream's one frame, as soon as it is whole; a hang-up before that is `truncated`, and a header over
    the reader's maximum `oversized`."""
    while True:
        data = await read_some(stream)
        if not data:
            return reader.eof()
        payload = reader.feed(data)
        if payload is not None:
            return payload


class FramedStream:
    """Whole length-prefixed messages in and out of one stream (blackboard sync's rounds); None at a clean end."""

    def __init__(self, stream: Stream, *, max_bytes: int) -> None:
        self.stream = stream
        self.max_bytes = max_bytes
        self._reader = PayloadReader(max_bytes=max_bytes)
        self._pending: list[bytes] = []

    async def send(self, payload: bytes) -> None:
        await self.stream.write(frame_bytes(payload, max_bytes=self.max_bytes))

    async def receive(self) -> bytes | None:
        while not self._pending:
            data = await read_some(self.stream)
            if not data:
                if self._reader.buffered:
                    raise WireError("truncated", "the peer left mid-message")
                return None
            self._pending = self._reader.feed(data)
        return self._pending.pop(0)

    async def expect(self) -> bytes:
        payload = await self.receive()
        if payload is None:
            raise WireError("truncated", "the peer closed the stream mid-session")
        return payload


async def serve_stream(stream: Any, handler: Handler, *, protocol: str, timeout_s: float = math.inf,
                       reject: Callable[[str], None] | None = None) -> None:
    """Run `handler(stream)` within `timeout_s`; close the stream when it returns, reset it when it fails.

    Nothing escapes: py-libp2p runs handlers in its own tasks, where an exception is only a logged crash. A
    `WireError` is the peer breaking the protocol: counted as `reject(reason)` (when given) and logged at info;
    the network's weather (a peer that left, a timeout) is logged at debug; anything else, at warning. Each with
    the protocol's name, once. Cancellation (the node stopping) resets the stream and goes on.
    """
    ended = False
    try:
        with trio.fail_after(timeout_s):
            await handler(stream)
        ended = True
    except WireError as exc:
        if reject is not None:
            reject(exc.reason)
        log.info("%s from %s broke the protocol: %s", protocol, _peer_of(stream), exc.message)
    except Exception as exc:  # the ladder's one catch-all: see the docstring
        if _is_weather(exc):
            log.debug("%s from %s ended: %r", protocol, _peer_of(stream), exc)
        else:
            log.warning("%s from %s failed", protocol, _peer_of(stream), exc_info=True)
    finally:
        await (close_quietly(stream) if ended else reset_quietly(stream))


async def close_quietly(stream: Any) -> None:
    """Close a stream (both directions, as far as we are concerned); never raises, never waits long."""
    with trio.CancelScope(shield=True), trio.move_on_after(END_TIMEOUT_S), contextlib.suppress(Exception):
        await stream.close()


async def reset_quietly(stream: Any) -> None:
    """Abort a stream (or close it, if it cannot be reset); never raises, never waits long."""
    with trio.CancelScope(shield=True), trio.move_on_after(END_TIMEOUT_S):
        try:
            await stream.reset()
        except Exception:  # a stream that cannot be reset any more: closing is the next best thing
            with contextlib.suppress(Exception):
                await stream.close()


def _is_weather(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_weather(inner) for inner in exc.exceptions)
    return isinstance(exc, _WEATHER)


def _peer_of(stream: Any) -> object:
    return getattr(getattr(stream, "muxed_conn", None), "peer_id", "a peer")
