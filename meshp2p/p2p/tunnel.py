"""`/meshp2p/http/1.0.0` over libp2p streams: the I/O around wire/tunnel.py's connection machines.

Side A (`TunnelClient`) sends an OpenAI request to a peer and gets the answer back chunk by chunk; side B
(`TunnelServer`) answers with whatever its handler returns. Streams are pooled per peer and carry requests one
after another (a new stream costs ~2.5 ms); every open is bounded by a timeout; a stream that broke is reset,
never reused. Only members of the mesh are served: others get an ERROR frame `not_member`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import reset_quietly
from meshp2p.wire.errors import WireError
from meshp2p.wire.tunnel import (
    IDLE_STREAM_S,
    NOT_MEMBER,
    OPEN_TIMEOUT_S,
    REUSE_IDLE_S,
    TUNNEL_PROTOCOL_ID,
    BodyChunk,
    End,
    RequestHead,
    ResponseHead,
    TunnelClientConnection,
    TunnelErrorFrame,
    TunnelServerConnection,
)

log = logging.getLogger(__name__)

TUNNEL_PROTOCOL = TProtocol(TUNNEL_PROTOCOL_ID)
READ_BYTES = 1024 * 1024
#: Below py-libp2p's cap of 256 outbound streams per connection, with room for DHT and gossip streams.
MAX_STREAMS_PER_PEER = 192
Headers = tuple[tuple[str, str], ...]


class TunnelError(Exception):
    """The exchange failed: the peer refused (`code`, `retry_after_s`), broke the stream, or never answered.

    `started` says whether part of the response body had already been delivered (a mid-stream failure).
    """

    def __init__(self, code: str, message: str, *, retry_after_s: int | None = None, started: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.started = started


@dataclass
class _PooledStream:
    stream: Any
    conn: TunnelClientConnection
    last_used: float
    #: Events one read brought beyond the one `request` waited for (BODY frames that came with the head).
    pending: list[Any] = field(default_factory=list)


class TunnelReply:
    """A response from a peer: head first, then `chunks()` once; closing returns the stream to the pool."""

    def __init__(self, client: TunnelClient, peer: ID, pooled: _PooledStream, head: ResponseHead) -> None:
        self.status = head.status
        self.headers = head.headers
        self._client, self._peer, self._pooled = client, peer, pooled
        self._done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        started = False
        while not self._done:
            for event in await self._client._read(self._pooled, started=True):
                if isinstance(event, BodyChunk):
                    started = True
                    yield event.data
                elif isinstance(event, End):
                    self._done = True
                elif isinstance(event, TunnelErrorFrame):
                    self._done = True
                    raise TunnelError(event.code, event.message, retry_after_s=event.retry_after_s, started=started)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        self._client._release(self._peer, self._pooled, reusable=self._done)


class TunnelClient:
    def __init__(self, overlay: Overlay) -> None:
        self.overlay = overlay
        self._idle: dict[ID, list[_PooledStream]] = defaultdict(list)
        self._open: dict[ID, int] = defaultdict(int)
        self._next_id = 0

    async def request(self, peer: ID, method: str, path: str, body: bytes, *, model: str | None,
                      headers: Headers = ()) -> TunnelReply:
        """Send a request and wait for the response head; raise TunnelError if the peer refuses or breaks."""
        pooled = await self._acquire(peer)
        self._next_id += 1
        head = RequestHead(self._next_id, method, path, headers, model)
        try:
            await pooled.stream.write(pooled.conn.send_request(head, body))
            while True:
                events = await self._read(pooled, started=False)
                for i, event in enumerate(events):
                    if isinstance(event, ResponseHead):
                        pooled.pending = events[i + 1:]  # for `chunks()`: one read may bring the head and more
                        return TunnelReply(self, peer, pooled, event)
                    if isinstance(event, TunnelErrorFrame):
                        self._release(peer, pooled, reusable=pooled.conn.idle)
                        raise TunnelError(event.code, event.message, retry_after_s=event.retry_after_s)
        except TunnelError:
            raise
        except Exception as exc:
            self._release(peer, pooled, reusable=False)
            raise TunnelError("broken", f"the tunnel to {peer} failed: {exc}") from exc

    async def aclose(self) -> None:
        for peer, pooled in [(p, s) for p, streams in self._idle.items() for s in streams]:
            await reset_quietly(pooled.stream)
            self._open[peer] -= 1
        self._idle.clear()

    async def _acquire(self, peer: ID) -> _PooledStream:
        idle = self._idle[peer]
        now = trio.current_time()
        while idle:
            pooled = idle.pop()
            if now - pooled.last_used < REUSE_IDLE_S and pooled.conn.idle:
                return pooled
            await reset_quietly(pooled.stream)
            self._open[peer] -= 1
        if self._open[peer] >= MAX_STREAMS_PER_PEER:
            raise TunnelError("overloaded", f"{MAX_STREAMS_PER_PEER} tunnels to {peer} are busy", retry_after_s=1)
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.overlay.host.new_stream(peer, [TUNNEL_PROTOCOL])
        except Exception as exc:
            raise TunnelError("unreachable", f"could not open a tunnel to {peer}: {exc}") from exc
        self._open[peer] += 1
        return _PooledStream(stream, TunnelClientConnection(), now)

    async def _read(self, pooled: _PooledStream, *, started: bool) -> list[Any]:
        """The next events; EOF or a protocol error becomes TunnelError (the stream is then reset)."""
        if pooled.pending:
            events, pooled.pending = pooled.pending, []
            return events
        try:
            data = await pooled.stream.read(READ_BYTES)
            if not data:
                pooled.conn.eof()
                raise WireError("malformed", "the peer closed the tunnel")
            return list(pooled.conn.receive(data))
        except WireError as exc:
            raise TunnelError("truncated" if started else "broken", exc.message, started=started) from exc
        except trio.Cancelled:
            raise
        except Exception as exc:  # StreamEOF, StreamReset, ...: the peer died or the connection dropped
            raise TunnelError("truncated" if started else "broken", f"{type(exc).__name__}: {exc}",
                              started=started) from exc

    def _release(self, peer: ID, pooled: _PooledStream, *, reusable: bool) -> None:
        if reusable and pooled.conn.idle:
            pooled.last_used = trio.current_time()
            self._idle[peer].append(pooled)
            return
        self._open[peer] -= 1
        trio.lowlevel.spawn_system_task(reset_quietly, pooled.stream)


@dataclass
class TunnelAnswer:
    """What a TunnelServer handler returns: a whole body, or chunks to stream (which may raise TunnelError)."""

    status: int
    headers: Headers
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None


TunnelHandler = Callable[[ID, RequestHead, bytes], Awaitable[TunnelAnswer]]


class TunnelServer:
    def __init__(self, overlay: Overlay, *, is_member: Callable[[ID], bool], handler: TunnelHandler) -> None:
        self.overlay = overlay
        self.is_member = is_member
        self.handler = handler

    def install(self) -> None:
        self.overlay.serve(TUNNEL_PROTOCOL, self._handle, rejects_as="tunnel")

    async def _handle(self, stream: Any) -> None:
        """Requests one after another until the asker hangs up or the stream idles, either ending in a reset (by
        Overlay.serve: py-libp2p reports a hang-up as StreamEOF); an outsider's one request is refused and closed."""
        peer: ID = stream.muxed_conn.peer_id
        conn = TunnelServerConnection()
        head: RequestHead | None = None
        body = bytearray()
        while True:
            with trio.fail_after(IDLE_STREAM_S if conn.idle else OPEN_TIMEOUT_S * 6):
                data = await stream.read(READ_BYTES)
            if not data:  # (py-libp2p raises StreamEOF instead: a failure, so a reset)
                return
            for event in conn.receive(data):
                if isinstance(event, RequestHead):
                    if not self.is_member(peer):
                        # protocols/http-tunnel.md: answered on the first frame, the rest never read; then closed.
                        self.overlay.rejects.add("tunnel", NOT_MEMBER)
                        await stream.write(conn.send_error(NOT_MEMBER, "join the mesh first (/meshp2p/join/1.0.0)"))
                        return
                    head, body = event, bytearray()
                elif isinstance(event, BodyChunk):
                    body += event.data
                elif isinstance(event, End) and head is not None:
                    await self._answer(stream, conn, peer, head, bytes(body))
                    head = None

    async def _answer(self, stream: Any, conn: TunnelServerConnection, peer: ID, head: RequestHead,
                      body: bytes) -> None:
        try:
            answer = await self.handler(peer, head, body)
        except TunnelError as exc:
            await stream.write(conn.send_error(exc.code, exc.message, exc.retry_after_s))
            return
        await stream.write(conn.send_response_head(ResponseHead(head.id, answer.status, answer.headers)))
        if answer.chunks is None:
            await stream.write(b"".join([*conn.send_body(answer.body or b""), conn.send_end()]))
            return
        try:
            async for chunk in answer.chunks:
                # One write per BODY frame: no copy of the whole chunk, and each write is one yamux frame
                # (_libp2p_patches.YAMUX_MAX_FRAME_BYTES), not a joined chunk cut at arbitrary 64 KiB boundaries.
                for frame in conn.send_body(chunk):
                    await stream.write(frame)
        except TunnelError as exc:
            await stream.write(conn.send_error(exc.code, exc.message, exc.retry_after_s))
            return
        await stream.write(conn.send_end())

