"""Length-prefixed frames on a byte stream: a 4-byte big-endian length, then the payload.

Used by every meshp2p stream protocol whose messages are whole CBOR maps (join handshake, blackboard sync).
Sans-IO: `frame` makes bytes, `FrameReader` takes bytes in any chunking and gives whole payloads back. The
maximum is per protocol, and a frame over it is refused from its header alone, so a peer cannot make the
reader buffer more than the protocol allows.
"""

from __future__ import annotations

from meshp2p.wire.errors import WireError

FRAME_HEADER_BYTES = 4


def frame_bytes(payload: bytes, *, max_bytes: int) -> bytes:
    """The payload with its length in front; `oversized` if it is longer than the protocol allows."""
    if len(payload) > max_bytes:
        raise WireError("oversized", f"frame of {len(payload)} bytes > {max_bytes}")
    return len(payload).to_bytes(FRAME_HEADER_BYTES, "big") + payload


class PayloadReader:
    """Feed stream bytes in any chunking; get whole payloads out. Once it fails it stays failed."""

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._failed: WireError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame: non-zero at end of stream means the peer hung up mid-message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        if self._failed is not None:
            raise WireError(self._failed.reason, "the stream already failed")
        self._buffer += data
        payloads: list[bytes] = []
        try:
            while len(self._buffer) >= FRAME_HEADER_BYTES:
                length = int.from_bytes(self._buffer[:FRAME_HEADER_BYTES], "big")
                if length > self.max_bytes:
                    # Judged from the header alone, so a peer cannot make us buffer a huge frame.
                    raise WireError("oversized", f"frame of {length} bytes > {self.max_bytes}")
                end = FRAME_HEADER_BYTES + length
                if len(self._buffer) < end:
                    break
                payloads.append(bytes(self._buffer[FRAME_HEADER_BYTES:end]))
                del self._buffer[:end]
        except WireError as exc:
            self.fail(exc)
            raise
        return payloads

    def fail(self, exc: WireError) -> None:
        """Refuse everything from now on (a payload turned out undecodable, say)."""
        self._failed = exc
        self._buffer.clear()


class SingleFrameReader:
    """For protocols whose stream carries exactly one frame: feed bytes in any chunking; `payload` is the frame
    once it is whole. A header over `max_bytes` fails at once, and bytes after the frame are `malformed`."""

    def __init__(self, *, max_bytes: int) -> None:
        self._payloads = PayloadReader(max_bytes=max_bytes)
        self.payload: bytes | None = None

    def feed(self, data: bytes) -> bytes | None:
        if self.payload is not None:
            raise WireError("malformed", "bytes after the one frame")
        payloads = self._payloads.feed(data)
        if len(payloads) > 1 or (payloads and self._payloads.buffered):
            raise WireError("malformed", "bytes after the one frame")
        if payloads:
            self.payload = payloads[0]
        return self.payload

    def eof(self) -> bytes:
        """The stream ended: the frame, or `truncated` when it never became whole."""
        if self.payload is None:
            raise WireError("truncated", f"the stream ended {self._payloads.buffered} bytes into a frame")
        return self.payload
