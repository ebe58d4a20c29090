"""`/meshp2p/rpc/1.0.0` over libp2p streams: llama.cpp RPC between a host's llama-server and a worker's RPC server.

The host's llama-server speaks llama.cpp RPC to `127.0.0.1:<port>` (`--rpc`); `RpcTunnelClient.serve_port` listens
there and carries each TCP connection on its own stream to the worker. `RpcTunnelServer`, on the worker, checks the
peer is a mesh member, connects to its own RPC server on 127.0.0.1 and splices the two. Neither end parses the RPC
bytes: after the hello and the reply (wire/rpc_tunnel.py) the bridge copies bytes as they come, in large reads,
and counts them, because the bytes a split moves at model load are what decides where splits pay off.

Every open is bounded by a timeout; a broken side closes (or resets) the other; llama.cpp notices a cut RPC
connection itself and fails, and the host then re-plans. py-libp2p's yamux can deadlock a connection whose two
directions are saturated at once (see protocols/rpc-tunnel.md, Timeouts); one split moves bulk data one way at a time.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamError
from libp2p.peer.id import ID

from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.p2p.join import Membership
from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import reset_quietly
from meshp2p.wire.errors import WireError
from meshp2p.wire.rpc_tunnel import (
    HANDSHAKE_TIMEOUT_S,
    HELLO_TIMEOUT_S,
    NOT_MEMBER,
    OPEN_TIMEOUT_S,
    RPC_PROTOCOL_ID,
    RPC_START_TIMEOUT_S,
    RPC_UNAVAILABLE,
    RpcDialer,
    RpcHello,
    RpcListener,
    accept,
    refuse,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

RPC_PROTOCOL = TProtocol(RPC_PROTOCOL_ID)
#: Large reads: model load pushes hundreds of MB through set_tensor; per-read overhead is what costs in Python.
READ_BYTES = 1024 * 1024
#: After one direction ended cleanly (EOF), the other may finish what it was sending for this long.
LINGER_S = 10.0
#: The handshake frames are small; reading them in small pieces leaves the RPC bytes after them in the stream.
_HANDSHAKE_READ_BYTES = 4096


class _Counters:
    """Bytes that crossed the bridge, in llama.cpp's terms: towards the RPC server and back from it, and round
    trips: how often bytes went towards the server after an answer came back (each costs the link's RTT; with
    several connections at once it is approximate, their directions interleave)."""

    def __init__(self) -> None:
        self.bytes_to_rpc = 0
        self.bytes_from_rpc = 0
        self.round_trips = 0
        self.connections = 0
        self.active = 0
        self.refused = 0
        self._answered = True

    def _to_rpc(self, n: int) -> None:
        self.bytes_to_rpc += n
        if self._answered:
            self.round_trips += 1
            self._answered = False

    def _from_rpc(self, n: int) -> None:
        self.bytes_from_rpc += n
        self._answered = True


class RpcTunnelServer(_Counters):
    """The worker's end: serves `/meshp2p/rpc/1.0.0` to mesh members by splicing to the local RPC server.

    `rpc_port` returns the port of this machine's RPC server on 127.0.0.1 and may start it on first use
    (`OnDemandRpcServer.port`), so a worker runs one only when a split needs it.
    """

    def __init__(
        self,
        overlay: Overlay,
        *,
        is_member: Callable[[ID], bool],
        rpc_port: Callable[[], Awaitable[int]],
    ) -> None:
        super().__init__()
        self.overlay = overlay
        self.is_member = is_member
        self.rpc_port = rpc_port

    def install(self) -> None:
        self.overlay.serve(RPC_PROTOCOL, self._handle)

    async def _handle(self, stream: Any) -> None:
        """Hello, member check, RPC server, reply, then the splice; a refusal is answered and closed, a stream
        that breaks or stalls before its hello is reset (by Overlay.serve)."""
        peer: ID = stream.muxed_conn.peer_id
        listener = RpcListener()
        try:
            with trio.fail_after(HELLO_TIMEOUT_S):
                while listener.receive(await _read_handshake(stream, listener.eof)) is None:
                    pass
        except WireError as exc:
            await self._refuse(stream, peer, exc.reason, exc.message)
            return
        if not self.is_member(peer):
            await self._refuse(stream, peer, NOT_MEMBER, "join the mesh first (/meshp2p/join/1.0.0)")
            return
        try:
            with trio.fail_after(RPC_START_TIMEOUT_S):
                port = await self.rpc_port()
                sock = await trio.open_tcp_stream(LOOPBACK_HOST, port)
        except Exception as exc:  # the RPC server failed to start or refused: the host must look elsewhere
            log.warning("no RPC server for %s: %r", peer, exc)
            await self._refuse(stream, peer, RPC_UNAVAILABLE, str(exc))
            return
        _nodelay(sock)
        try:
            await stream.write(accept())
            if listener.rest:
                await sock.send_all(listener.rest)
                self._to_rpc(len(listener.rest))
        except BaseException:  # the stream broke at the reply: Overlay.serve resets it, the socket is ours
            with trio.CancelScope(shield=True):
                await sock.aclose()
            raise
        log.debug("rpc tunnel open from %s (model %s)", peer, listener.hello and listener.hello.model)
        await _splice(self, stream, sock, stream_to_sock=self._to_rpc, sock_to_stream=self._from_rpc)

    async def _refuse(self, stream: Any, peer: ID, code: str, detail: str) -> None:
        """Answer `ok: false` (then Overlay.serve closes); the RPC server never hears of this stream."""
        self.refused += 1
        self.overlay.rejects.add("rpc", code)
        log.info("refused an rpc tunnel from %s: %s (%s)", peer, code, detail)
        with trio.fail_after(OPEN_TIMEOUT_S):
            await stream.write(refuse(code))


class RpcTunnelClient(_Counters):
    """The host's end: local TCP ports that lead to workers' RPC servers, for llama-server's `--rpc`."""

    def __init__(self, overlay: Overlay, membership: Membership | None = None) -> None:
        super().__init__()
        self.overlay = overlay
        #: Proves our membership again when a worker refuses us as `not_member` (it restarted: p2p/join.py).
        self.membership = membership

    async def serve_port(
        self,
        peer_id: ID,
        *,
        model: str | None = None,
        threads: int | None = None,
        task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on a fresh 127.0.0.1 port (reported to `task_status`) until cancelled.

        Each TCP connection accepted there (llama-server opens several, one after another) gets its own stream
        to `peer_id`: a member check and, on the worker, a fresh connection to its RPC server.
        """
        hello = RpcHello(model, threads)
        listeners = await trio.open_tcp_listeners(0, host=LOOPBACK_HOST)
        port: int = listeners[0].socket.getsockname()[1]

        async def handle(sock: trio.SocketStream) -> None:
            await self._bridge(sock, peer_id, hello)

        try:
            async with trio.open_nursery() as nursery:
                task_status.started(port)
                await trio.serve_listeners(handle, listeners, handler_nursery=nursery)
        finally:
            for listener in listeners:
                with trio.CancelScope(shield=True):
                    await listener.aclose()

    async def _bridge(self, sock: trio.SocketStream, peer_id: ID, hello: RpcHello) -> None:
        _nodelay(sock)
        stream, refusal = await self._open(peer_id, hello, sock)
        if stream is None and refusal == NOT_MEMBER and self.membership is not None \
                and await self.membership.ensure(peer_id):
            log.info("worker %s had forgotten our membership; joined it again", peer_id)
            stream, refusal = await self._open(peer_id, hello, sock)
        if stream is None:
            self.refused += 1
            with trio.CancelScope(shield=True):
                await sock.aclose()
            return
        await _splice(self, stream, sock, stream_to_sock=self._from_rpc, sock_to_stream=self._to_rpc)

    async def _open(self, peer_id: ID, hello: RpcHello, sock: trio.SocketStream) -> tuple[Any, str | None]:
        """A stream past its handshake, with the bytes after the reply passed to `sock`; or None and the
        worker's refusal code (None when it did not refuse but broke)."""
        try:
            with trio.fail_after(OPEN_TIMEOUT_S):
                stream = await self.overlay.host.new_stream(peer_id, [RPC_PROTOCOL])
        except Exception as exc:  # unreachable peer, protocol not supported, timeout
            log.warning("could not open an rpc tunnel to %s: %r", peer_id, exc)
            return None, None
        dialer = RpcDialer(hello)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await stream.write(dialer.hello_frame())
                rest: bytes | None = None
                while rest is None:
                    rest = dialer.receive(await _read_handshake(stream, dialer.eof))
            if rest:
                await sock.send_all(rest)
                self._from_rpc(len(rest))
        except WireError as exc:
            self.overlay.rejects.add("rpc", exc.reason)
            log.warning("worker %s refused the rpc tunnel: %s", peer_id, exc.message)
            await reset_quietly(stream)
            reply = dialer.reply
            return None, (reply.error if reply is not None and not reply.ok else None)
        except Exception as exc:  # StreamError, timeout, local socket gone
            log.warning("rpc tunnel to %s failed in its handshake: %r", peer_id, exc)
            await reset_quietly(stream)
            return None, None
        return stream, None


async def _read_handshake(stream: Any, eof: Callable[[], None]) -> bytes:
    """The next handshake bytes; a hang-up is passed to the machine's `eof` (a truncation there)."""
    try:
        data: bytes = await stream.read(_HANDSHAKE_READ_BYTES)
    except StreamEOF:  # py-libp2p reports a hang-up (even a crash) as StreamEOF, not b""
        data = b""
    if not data:
        eof()
        raise WireError("truncated", "the stream ended during the handshake")
    return data


async def _splice(
    counters: _Counters,
    stream: Any,
    sock: trio.SocketStream,
    *,
    stream_to_sock: Callable[[int], None],
    sock_to_stream: Callable[[int], None],
) -> None:
    """Copy bytes both ways until both directions ended, or one broke; then close (or reset) both sides.

    An EOF is passed on as a half-close (FIN on the stream, `send_eof` on the socket) and the other direction
    gets LINGER_S to finish; an error in either direction ends both at once.
    """
    counters.connections += 1
    counters.active += 1
    clean = 0

    async def from_stream() -> None:
        while True:
            try:
                data = await stream.read(READ_BYTES)
            except StreamEOF:
                data = b""
            if not data:
                await sock.send_eof()
                return
            await sock.send_all(data)
            stream_to_sock(len(data))

    async def from_sock() -> None:
        while True:
            data = await sock.receive_some(READ_BYTES)
            if not data:
                await stream.close_write()
                return
            await stream.write(data)
            sock_to_stream(len(data))

    try:
        async with trio.open_nursery() as nursery:

            async def pump(direction: Callable[[], Awaitable[None]]) -> None:
                nonlocal clean
                try:
                    await direction()
                except (StreamError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    log.debug("rpc tunnel broke: %r", exc)
                    nursery.cancel_scope.cancel()
                    return
                clean += 1
                nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, trio.current_time() + LINGER_S)

            nursery.start_soon(pump, from_stream)
            nursery.start_soon(pump, from_sock)
    finally:
        counters.active -= 1
        if clean == 2:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(Exception):
                    await stream.close()
                await sock.aclose()
        else:
            await _abort(stream, sock)


def _nodelay(sock: trio.SocketStream) -> None:
    """RPC is request/response with small commands between bulk transfers: Nagle would add 40 ms stalls.

    trio already sets TCP_NODELAY on the streams it makes; set it explicitly, since latency depends on it.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)


async def _abort(stream: Any, sock: trio.SocketStream) -> None:
    await reset_quietly(stream)
    with trio.CancelScope(shield=True):
        await sock.aclose()

