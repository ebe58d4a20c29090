"""A peer without the secret, connected over Noise + yamux to a member of a private mesh, speaking every stream
protocol from its spec in `protocols/` with its own identity: each refuses it on (or before) its first frame and
closes, and the test asserts what came back byte for byte. The members' own gossip is covered by
test_members_gossip.py, the join handshake by test_private_mesh.py."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import trio
from helpers.network import Network, Node, network, read_until_eof, status
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from meshp2p.app.blackboard_sync import SYNC_PROTOCOL, BoardSync
from meshp2p.blackboard.store import BlackboardStore
from meshp2p.p2p.listing import LISTING_PROTOCOL
from meshp2p.p2p.moe_usage import UsageServer, ask_usage
from meshp2p.p2p.rpc_tunnel import RPC_PROTOCOL, RpcTunnelServer
from meshp2p.p2p.rtt import PING_BYTES, PING_PROTOCOL
from meshp2p.p2p.status_push import STATUS_PUSH_PROTOCOL
from meshp2p.p2p.tunnel import TUNNEL_PROTOCOL, TunnelAnswer, TunnelServer
from meshp2p.wire import moe_usage as mu
from meshp2p.wire.blackboard import encode_digest, make_digest
from meshp2p.wire.framing import frame_bytes
from meshp2p.wire.gossip import MAX_GOSSIP_BYTES, encode_gossip, topic_name
from meshp2p.wire.mesh_id import new_mesh_secret
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.rpc_tunnel import RpcHello, encode_hello, refuse
from meshp2p.wire.status import status_to_body
from meshp2p.wire.tunnel import RequestHead, TunnelErrorFrame, encode_body, encode_error, encode_request_head

from .test_private_mesh import start_private_mesh


async def _outsider(net: Network, member: Node) -> Node:
    outsider = await net.start_overlay()
    await outsider.overlay.connect(member.overlay.addrs()[0])
    return outsider


def _rejects(node: Node, protocol: str) -> dict[str, int]:
    return {k: v for k, v in node.overlay.rejects.as_dict().items() if k.startswith(f"{protocol}:")}


async def test_ping_echoes_members_and_closes_on_an_outsider_unread() -> None:
    async with network() as net:
        first, second = await start_private_mesh(net, new_mesh_secret())
        payload = os.urandom(PING_BYTES)
        member_stream = await second.overlay.host.new_stream(first.overlay.peer_id, [PING_PROTOCOL])
        await member_stream.write(payload)
        echoed = b""
        with trio.fail_after(10):
            while len(echoed) < PING_BYTES:
                echoed += await member_stream.read(PING_BYTES - len(echoed))
        assert echoed == payload, "a member is answered"
        await member_stream.close()

        outsider = await _outsider(net, first)
        stream = await outsider.overlay.host.new_stream(first.overlay.peer_id, [PING_PROTOCOL])
        with contextlib.suppress(StreamError):
            await stream.write(payload)
        assert await read_until_eof(stream) == b""
        assert _rejects(first, "ping") == {"ping:not_member": 1}


async def test_a_status_pushed_by_an_outsider_gets_nothing_back_and_changes_no_view() -> None:
    async with network() as net:
        first, second = await start_private_mesh(net, new_mesh_secret())
        outsider = await _outsider(net, first)
        mesh_id = first.service.settings.mesh_id
        # The best an outsider can write: its own status, signed by itself, on the only topic name it can know
        # (the public form: the sealed one is an HMAC of the secret), in the clear (it has no key to seal with).
        message = encode_gossip(outsider.overlay.identity, mesh_id, topic_name(mesh_id, "status", None), "status",
                                status_to_body(status()), seq=1, now=first.service.clock(), secret=None)
        stream = await outsider.overlay.host.new_stream(first.overlay.peer_id, [STATUS_PUSH_PROTOCOL])
        await stream.write(frame_bytes(message, max_bytes=MAX_GOSSIP_BYTES))
        await stream.close()
        assert await read_until_eof(stream) == b""
        assert _rejects(first, "status_push") == {"status_push:decrypt_failed": 1}
        assert set(first.service.view.peers) == {first.peer_id, second.peer_id}


async def test_an_unlisted_private_member_has_no_listing_to_ask() -> None:
    async with network() as net:
        first, _ = await start_private_mesh(net, new_mesh_secret())
        assert not first.service.settings.listed
        outsider = await _outsider(net, first)
        with pytest.raises(Exception) as refused:  # libp2p's negotiation error: the member never installed it
            with trio.fail_after(10):
                await outsider.overlay.host.new_stream(first.overlay.peer_id, [LISTING_PROTOCOL])
        assert not isinstance(refused.value, trio.TooSlowError), "refused at negotiation, not left hanging"


async def test_the_http_tunnel_answers_an_outsider_one_error_frame_and_closes() -> None:
    handled: list[ID] = []

    async def handler(peer: ID, head: RequestHead, body: bytes) -> TunnelAnswer:
        handled.append(peer)
        return TunnelAnswer(200, (), b"{}")

    async with network() as net:
        first, _ = await start_private_mesh(net, new_mesh_secret())
        TunnelServer(first.overlay, is_member=first.service.is_member, handler=handler).install()
        outsider = await _outsider(net, first)
        stream = await outsider.overlay.host.new_stream(first.overlay.peer_id, [TUNNEL_PROTOCOL])
        await stream.write(encode_request_head(RequestHead(0, "POST", "/v1/chat/completions",
                                                           (("content-type", "application/json"),), "m")))
        expected = encode_error(TunnelErrorFrame(0, "not_member", "join the mesh first (/meshp2p/join/1.0.0)", None))
        assert await read_until_eof(stream) == expected
        # Its side is closed: a body sent now goes nowhere (the writes fail or are dropped), and is never handled.
        with contextlib.suppress(StreamError):
            for chunk in encode_body(b"x" * (1024 * 1024)):
                await stream.write(chunk)
        assert _rejects(first, "tunnel") == {"tunnel:not_member": 1} and handled == []
        await stream.reset()


async def test_the_rpc_tunnel_refuses_an_outsider_without_touching_the_rpc_server() -> None:
    asked: list[int] = []

    async def rpc_port() -> int:
        asked.append(1)
        raise OSError("not for outsiders")

    async with network() as net:
        first, _ = await start_private_mesh(net, new_mesh_secret())
        server = RpcTunnelServer(first.overlay, is_member=first.service.is_member, rpc_port=rpc_port)
        server.install()
        outsider = await _outsider(net, first)
        stream = await outsider.overlay.host.new_stream(first.overlay.peer_id, [RPC_PROTOCOL])
        await stream.write(encode_hello(RpcHello("tiny-dense", 1)))
        assert await read_until_eof(stream) == refuse("not_member")
        assert _rejects(first, "rpc") == {"rpc:not_member": 1} and asked == []
        assert server.bytes_to_rpc == server.bytes_from_rpc == 0


async def test_blackboard_sync_closes_on_an_outsider_unread(tmp_path: Path) -> None:
    accepted: list[list[bytes]] = []

    async def accept(posts: list[bytes]) -> tuple[int, set[bytes]]:
        accepted.append(posts)
        return 0, set()

    async with network() as net:
        first, _ = await start_private_mesh(net, new_mesh_secret())
        store = BlackboardStore(tmp_path / "board.sqlite")
        try:
            BoardSync(first.overlay, store, horizon=lambda: 0, accept=accept,
                      is_member=first.service.is_member).install()
            outsider = await _outsider(net, first)
            stream = await outsider.overlay.host.new_stream(first.overlay.peer_id, [SYNC_PROTOCOL])
            digest = encode_digest(make_digest(0, []))
            await stream.write(len(digest).to_bytes(4, "big") + digest)
            assert await read_until_eof(stream) == b""
            assert _rejects(first, "blackboard_sync") == {"blackboard_sync:not_member": 1} and accepted == []
        finally:
            store.close()


async def test_moe_usage_is_given_to_a_member_and_refused_to_an_outsider_unlooked_up() -> None:
    cid = ContentId(bytes(range(16)), 4096)
    counts = ((3, 1, 0, 2), (0, 2, 2, 1))
    looked_up: list[ContentId] = []

    async def lookup(asked: ContentId) -> tuple[str, mu.Counts] | None:
        looked_up.append(asked)
        return mu.SOURCE_IMATRIX, counts

    async with network() as net:
        first, second = await start_private_mesh(net, new_mesh_secret())
        UsageServer(first.overlay, is_member=first.service.is_member, lookup=lookup).install()
        got = await ask_usage(second.overlay, first.peer_id, cid, n_layers=2, n_expert=4, digest=None)
        assert got is not None and got.counts == counts, "a member is given the counts"
        outsider = await _outsider(net, first)
        stream = await outsider.overlay.host.new_stream(first.overlay.peer_id, [TProtocol(mu.MOE_USAGE_PROTOCOL_ID)])
        await stream.write(mu.encode_request(cid))
        assert await read_until_eof(stream) == mu.encode_refused("not_member")
        assert _rejects(first, "moe_usage") == {"moe_usage:not_member": 1} and looked_up == [cid]
