"""A lean HTTP/1.1 client for the hot path to llama-server: h11 over trio streams, with keep-alive pooling.

Every API request is relayed through here, so its cost is the latency meshp2p adds. A general-purpose client
(httpx over anyio) spends about a millisecond per request in layers we do not need for a loopback hop; h11's
sans-IO state machine plus a pool of idle connections is all this needs.
"""

from __future__ import annotations

import select
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h11
import trio

from meshp2p.errors import MeshP2PError

RECEIVE_BYTES = 65536
#: Idle connections kept per backend; more concurrent requests open more, and the surplus is closed.
MAX_IDLE_PER_BACKEND = 32
CONNECT_TIMEOUT_S = 5.0


class UpstreamError(MeshP2PError):
    """The backend could not be reached, or broke the connection (backends/local.py says which, for which model)."""


@dataclass
class _Connection:
    stream: trio.SocketStream
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    reused: bool = False

    async def send(self, *events: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        """One socket write for all `events`: each write that wakes the backend costs a scheduler wake-up there
        (on a VM, an inter-processor interrupt: ~0.1 ms measured here), so a request goes out in one piece."""
        data = b"".join(self.protocol.send(event) or b"" for event in events)
        if data:
            await self.stream.send_all(data)

    def closed_while_idle(self) -> bool:
        """Whether the backend closed (or wrote to) this idle connection: readable while idle means EOF or bytes
        no request asked for. llama-server closes idle connections after its keep-alive timeout (5 s)."""
        try:
            readable, _, _ = select.select([self.stream.socket.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    async def next_event(self) -> object:
        while True:
            event = self.protocol.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.protocol.receive_data(await self.stream.receive_some(RECEIVE_BYTES))


class UpstreamResponse:
    """A response whose body is read (or streamed) once; closing it returns the connection to the pool."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int], conn: _Connection, response: h11.Response) -> None:
        self.status = response.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
        self._pool, self._key = pool, key
        self._conn: _Connection | None = conn
        self._done = False

    async def iter_body(self) -> AsyncIterator[bytes]:
        assert self._conn is not None, "the response was closed"
        try:
            while not self._done:
                event = await self._conn.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._done = True
                else:
                    raise UpstreamError(f"unexpected {type(event).__name__} from the backend")
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError) as exc:
            raise UpstreamError(f"the backend broke the connection: {exc}") from exc

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_body()])

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and conn.protocol.our_state is h11.DONE and conn.protocol.their_state is h11.DONE:
            conn.protocol.start_next_cycle()
            self._pool._release(self._key, conn)
        else:
            await _close(conn)


class UpstreamPool:
    """Keep-alive connections to loopback backends, keyed by (host, port)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)

    async def request(
        self, method: str, host: str, port: int, path: str, body: bytes, *, content_type: str = "application/json"
    ) -> UpstreamResponse:
        """Send a request and return once the response head arrived; raise UpstreamError if that fails.

        A pooled connection the backend closed while idle is left out before use when that shows (its socket is
        readable); one that fails on first use anyway is replaced once.
        """
        key = (host, port)
        headers = [("Host", f"{host}:{port}"), ("Content-Type", content_type), ("Content-Length", str(len(body)))]
        while True:
            conn = await self._acquire(key)
            try:
                await conn.send(h11.Request(method=method, target=path, headers=headers), h11.Data(data=body),
                                h11.EndOfMessage())
                event = await conn.next_event()
                if not isinstance(event, h11.Response):
                    raise h11.RemoteProtocolError(f"expected a response, got {type(event).__name__}")
                return UpstreamResponse(self, key, conn, event)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError) as exc:
                await _close(conn)
                if conn.reused:
                    continue
                raise UpstreamError(f"the backend at {host}:{port} failed: {exc}") from exc
            except BaseException:
                await _close(conn)
                raise

    async def discard(self, host: str, port: int) -> None:
        """Close the idle connections to a backend that went away."""
        for conn in self._idle.pop((host, port), []):
            await _close(conn)

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                await _close(conn)
        self._idle.clear()

    async def _acquire(self, key: tuple[str, int]) -> _Connection:
        idle = self._idle[key]
        while idle:
            conn = idle.pop()
            if conn.closed_while_idle():
                await _close(conn)
                continue
            conn.reused = True
            return conn
        return _Connection(await self._open(key))

    async def _open(self, key: tuple[str, int]) -> trio.SocketStream:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                return await trio.open_tcp_stream(*key)
        except (OSError, trio.TooSlowError) as exc:
            raise UpstreamError(f"cannot connect to the backend at {key[0]}:{key[1]}: {exc}") from exc

    def _release(self, key: tuple[str, int], conn: _Connection) -> None:
        idle = self._idle[key]
        if len(idle) < MAX_IDLE_PER_BACKEND:
            idle.append(conn)
        else:
            conn.stream.socket.close()


async def _close(conn: _Connection) -> None:
    with trio.CancelScope(shield=True):
        await conn.stream.aclose()
