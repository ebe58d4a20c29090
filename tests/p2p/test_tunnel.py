"""`/meshp2p/http/1.0.0` between real overlays: members get answers streamed back, non-members get `not_member`,
streams are reused, and a peer that dies mid-answer shows as a truncated (not a complete) response."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
from helpers.network import network, read_until_eof
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from meshp2p.p2p.tunnel import TUNNEL_PROTOCOL, TunnelAnswer, TunnelClient, TunnelError, TunnelServer
from meshp2p.wire.tunnel import (
    End,
    RequestHead,
    ResponseHead,
    TunnelErrorFrame,
    TunnelServerConnection,
    encode_body,
    encode_error,
    encode_request_head,
)

JSON = (("content-type", "application/json"),)


async def _echo_handler(peer: ID, head: RequestHead, body: bytes) -> TunnelAnswer:
    if head.path == "/v1/stream":
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"data: {i}\n\n".encode()

        return TunnelAnswer(200, JSON, None, chunks())
    if head.path == "/v1/dies":
        async def dying() -> AsyncIterator[bytes]:
            yield b"data: partial\n\n"
            raise TunnelError("backend_failed", "the backend died", retry_after_s=1)

        return TunnelAnswer(200, JSON, None, dying())
    return TunnelAnswer(200, JSON, b"echo:" + body)


async def _setup(net, members: set[str]):
    server_node = await net.start_overlay()
    client_node = await net.start_overlay(bootstrap=(server_node.overlay.addrs()[0],))
    TunnelServer(server_node.overlay, is_member=lambda p: str(p) in members, handler=_echo_handler).install()
    return server_node, client_node, TunnelClient(client_node.overlay)


async def test_a_member_gets_answers_and_the_stream_is_reused():
    async with network() as net:
        members: set[str] = set()
        server_node, client_node, client = await _setup(net, members)
        members.add(client_node.peer_id)
        peer = server_node.overlay.peer_id
        for i in range(3):
            reply = await client.request(peer, "POST", "/v1/completions", b"hello %d" % i, model="m")
            assert reply.status == 200
            assert await reply.read() == b"echo:hello %d" % i
            await reply.aclose()
        assert client._open[peer] == 1, "three sequential requests used one stream"
        reply = await client.request(peer, "POST", "/v1/stream", b"{}", model="m")
        assert [c async for c in reply.chunks()] == [f"data: {i}\n\n".encode() for i in range(5)]
        await reply.aclose()
        await client.aclose()


async def test_a_non_member_is_refused():
    async with network() as net:
        server_node, _, client = await _setup(net, members=set())
        with pytest.raises(TunnelError) as err:
            await client.request(server_node.overlay.peer_id, "POST", "/v1/completions", b"{}", model="m")
        assert err.value.code == "not_member"
        assert server_node.overlay.rejects.as_dict().get("tunnel:not_member") == 1
        await client.aclose()


async def test_an_outsider_is_refused_on_its_first_frame_and_the_stream_closed():
    """Spoken from the spec's frames with its own identity: the head and 4 MiB of body offered, one ERROR frame back
    (byte for byte), then EOF; the server never read the body."""
    async with network() as net:
        server_node, client_node, _ = await _setup(net, members=set())
        stream = await client_node.overlay.host.new_stream(server_node.overlay.peer_id, [TUNNEL_PROTOCOL])
        head = encode_request_head(RequestHead(0, "POST", "/v1/completions", JSON, "m"))
        await stream.write(head)
        received = await read_until_eof(stream)
        expected = encode_error(TunnelErrorFrame(0, "not_member", "join the mesh first (/meshp2p/join/1.0.0)", None))
        assert received == expected
        # The server closed its side: a body sent now is not read (the writes fail or go nowhere), and no more
        # bytes ever come back.
        with contextlib.suppress(StreamError):
            for frame in encode_body(b"x" * (4 * 1024 * 1024)):
                await stream.write(frame)
        assert server_node.overlay.rejects.as_dict().get("tunnel:not_member") == 1
        await stream.reset()


async def test_a_backend_failure_mid_answer_is_an_error_not_a_complete_answer():
    async with network() as net:
        members: set[str] = set()
        server_node, client_node, client = await _setup(net, members)
        members.add(client_node.peer_id)
        reply = await client.request(server_node.overlay.peer_id, "POST", "/v1/dies", b"{}", model="m")
        received = []
        with pytest.raises(TunnelError) as err:
            async for chunk in reply.chunks():
                received.append(chunk)
        assert received == [b"data: partial\n\n"]
        assert (err.value.code, err.value.started) == ("backend_failed", True)
        await reply.aclose()
        await client.aclose()


async def test_a_peer_that_vanishes_mid_answer_is_a_truncation():
    async with network() as net:
        members: set[str] = set()
        server_node, client_node, client = await _setup(net, members)
        members.add(client_node.peer_id)
        hang = trio.Event()

        async def slow(peer: ID, head: RequestHead, body: bytes) -> TunnelAnswer:
            async def chunks() -> AsyncIterator[bytes]:
                yield b"data: first\n\n"
                await hang.wait()
                yield b"never"

            return TunnelAnswer(200, JSON, None, chunks())

        TunnelServer(server_node.overlay, is_member=lambda p: True, handler=slow).install()
        reply = await client.request(server_node.overlay.peer_id, "POST", "/v1/slow", b"{}", model="m")
        chunks = reply.chunks()
        assert await chunks.__anext__() == b"data: first\n\n"
        server_node.kill()
        with pytest.raises(TunnelError) as err, trio.fail_after(10):
            await chunks.__anext__()
        assert err.value.code == "truncated" and err.value.started
        await reply.aclose()
        await client.aclose()


async def test_body_frames_that_arrive_with_the_response_head_are_not_lost():
    """One read can bring the head and the whole body (a busy reader, frames queued behind each other): the
    client hands every BODY frame to `chunks()`, not only those read after the head."""
    async with network() as net:
        server_node, _client_node, client = await _setup(net, set())

        async def one_write(stream) -> None:
            conn = TunnelServerConnection()
            events: list[object] = []
            while not any(isinstance(event, End) for event in events):
                events += conn.receive(await stream.read(65536))
            head = ResponseHead(1, 200, JSON)
            await stream.write(b"".join([conn.send_response_head(head), *conn.send_body(b"x" * 300_000),
                                         conn.send_end()]))
            await read_until_eof(stream)

        server_node.overlay.host.set_stream_handler(TUNNEL_PROTOCOL, one_write)
        reply = await client.request(server_node.overlay.peer_id, "POST", "/v1/one", b"{}", model="m")
        assert await reply.read() == b"x" * 300_000
        await reply.aclose()
        await client.aclose()
