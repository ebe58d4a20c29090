"""What every meshp2p stream protocol needs of a py-libp2p stream, written once: reads that end in b"", one-frame
reads, and framed message exchanges.

py-libp2p reports a hang-up (a clean close as much as a crash) as `StreamEOF`, or `StreamReset`, from `read()`;
it never returns b"" (notes/py-libp2p.md). `read_some` turns both into b"", so the protocols above read like
trio streams and never import libp2p's exceptions. `Stream` is the little these helpers use, so a test can stand
in `trio.testing.memory_stream_pair`-style objects for a libp2p stream.
"""

from __future__ import annotations

from typing import Protocol

from libp2p.network.stream.exceptions import StreamError

from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import PayloadReader, SingleFrameReader, frame_bytes

READ_BYTES = 65536


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
