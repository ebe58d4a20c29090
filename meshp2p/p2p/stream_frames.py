"""Reading the one length-prefixed frame of a single-message stream protocol (status push, listing)."""

from __future__ import annotations

from typing import Any

from libp2p.network.stream.exceptions import StreamError

from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import SingleFrameReader

_READ_BYTES = 65536


async def read_one_frame(stream: Any, reader: SingleFrameReader) -> bytes:
    """The stream's one frame, as soon as it is whole; a hang-up before that is `truncated`, and a header over
    the reader's maximum `oversized`."""
    while True:
        try:
            data = await stream.read(_READ_BYTES)
        except StreamError as exc:  # py-libp2p reports a hang-up as StreamEOF (or StreamReset), not b""
            raise WireError("truncated", f"the peer left mid-frame ({type(exc).__name__})") from exc
        if not data:
            return reader.eof()
        payload = reader.feed(data)
        if payload is not None:
            return payload
