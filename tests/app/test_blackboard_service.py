"""The blackboard on real libp2p nodes in this process: gossip, policy at the validator, sync, membership.

A hostile member publishes by hand what an honest node must refuse (forged, oversized, expired, replayed,
relayed and over-rate posts); the honest nodes count each refusal, store none of it, relay none of it, and
keep working. Sync brings a late node up to date and is refused to a peer outside the mesh.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
from helpers.network import Network, Node, network, wait_for

from meshp2p.app.blackboard_service import BlackboardService
from meshp2p.app.blackboard_sync import SYNC_PROTOCOL
from meshp2p.app.config import BlackboardConfig
from meshp2p.app.mesh_service import MeshSettings
from meshp2p.blackboard.limits import BlackboardLimits
from meshp2p.blackboard.store import BlackboardStore
from meshp2p.errors import PostRefused
from meshp2p.wire._cbor import dumps
from meshp2p.wire.blackboard import BLACKBOARD_DOMAIN, BLACKBOARD_TYPE, decode_post, encode_post, post_to_body
from meshp2p.wire.gossip import encode_gossip
from meshp2p.wire.identity import Identity, sign_object
from meshp2p.wire.mesh_id import named_mesh_id

MESH = named_mesh_id("blackboard-test")
SETTINGS = MeshSettings(mesh_id=MESH, secret=b"", name="blackboard-test")
VIEW_S = 10.0


async def start_board(net: Network, node: Node, tmp_path: Path, *, rate_per_min: int = 10) -> BlackboardService:
    assert node.service is not None
    board = BlackboardService(
        node.overlay, mesh_id=MESH, secret=b"", store=BlackboardStore(tmp_path / f"{node.peer_id}.sqlite"),
        config=BlackboardConfig(BlackboardLimits(rate_per_min=rate_per_min)), sequence=node.service.sequence,
        is_member=node.service.is_member,  # the rule the node runs, not a copy
        peers=lambda: list(node.service.view.peers) if node.service else [])
    await net.nursery.start(board.run)
    return board


async def start_members(net: Network, count: int) -> list[Node]:
    first = await net.start_member(SETTINGS)
    nodes = [first]
    for _ in range(count - 1):
        nodes.append(await net.start_member(MeshSettings(**{**SETTINGS.__dict__,
                                                            "join_addrs": tuple(first.overlay.addrs())})))
    ids = {n.peer_id for n in nodes}
    await wait_for(lambda: all(set(n.service.view.peers) >= ids for n in nodes if n.service), "full views", VIEW_S)
    return nodes


async def feed_ids(board: BlackboardService) -> set[str]:
    return {p.id_hex for p in await board.feed(limit=500)}


async def wait_async(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll an async condition (store reads go through a thread) until it holds."""
    with trio.move_on_after(VIEW_S):
        while True:
            if await check():
                return
            await trio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def rejected(board: BlackboardService) -> dict[str, int]:
    return dict(board.snapshot().rejected)


async def test_a_post_reaches_every_member_and_is_stored_once(tmp_path):
    async with network() as net:
        a, b, c = await start_members(net, 3)
        boards = [await start_board(net, n, tmp_path) for n in (a, b, c)]
        post, redacted = await boards[0].post("GPU free on node A, mail me at ops@example.com", tags=["GPU", "free"])
        assert redacted == ["email"] and "[redacted: email]" in post.text
        assert post.tags == ("free", "gpu")
        for board in boards[1:]:
            await wait_async(lambda board=board: _has(board, post.id_hex), "the post on every member")
        reply, _ = await boards[2].post("taking it", thread=post.id_hex[:8])
        assert reply.thread == post.id
        await wait_async(lambda: _has(boards[0], reply.id_hex), "the reply on the author's node")
        assert all(not rejected(b) for b in boards)


async def _texts_are(board: BlackboardService, texts: set[str]) -> bool:
    return {p.text for p in await board.feed(limit=50)} == texts


async def _has(board: BlackboardService, post_id: str) -> bool:
    return post_id in await feed_ids(board)


async def test_own_rate_is_enforced_before_posting(tmp_path):
    async with network() as net:
        (a,) = await start_members(net, 1)
        board = await start_board(net, a, tmp_path, rate_per_min=2)
        await board.post("one")
        await board.post("two")
        try:
            await board.post("three")
        except PostRefused as exc:
            assert exc.reason == "rate_limited"
        else:
            raise AssertionError("a third post within a minute was accepted at rate 2/min")
        assert len(await feed_ids(board)) == 2


async def test_hostile_posts_are_rejected_counted_and_not_relayed(tmp_path):
    async with network() as net:
        honest, witness, rogue = await start_members(net, 3)
        board = await start_board(net, honest, tmp_path, rate_per_min=3)
        other_board = await start_board(net, witness, tmp_path, rate_per_min=3)
        forger = rogue.overlay
        topic = board.topic
        now = time.time()
        stranger = Identity.generate()

        async def publish(raw_post: bytes) -> None:
            data = encode_gossip(forger.identity, MESH, topic, BLACKBOARD_TYPE, post_to_body(raw_post),
                                 seq=rogue.service.sequence.next(now=time.time()), now=time.time(), secret=None)
            await forger.publish(topic, data)

        good = encode_post(forger.identity, text="a fine post", now=now)
        tampered = bytearray(encode_post(forger.identity, text="pay me", now=now))
        tampered[tampered.index(b"pay me")] ^= 0x20  # "Pay me": the signature no longer covers the text
        oversized = dumps(sign_object(forger.identity, BLACKBOARD_DOMAIN, {
            "v": 1, "pk": forger.identity.public_key, "ts": int(now * 1000), "text": "x" * 5000, "name": None,
            "tags": [], "thread": None}))
        expired = encode_post(forger.identity, text="old news", now=now - 49 * 3600)
        relayed = encode_post(stranger, text="someone else's words", now=now)

        await publish(good)
        await publish(bytes(tampered))
        await publish(oversized)
        await publish(expired)
        await publish(relayed)
        await publish(good)  # the same post in a fresh envelope: a replay
        for i in range(4):  # with "a fine post", 5 posts in a minute at a rate of 3: the last 2 are over it
            await publish(encode_post(forger.identity, text=f"flood {i}", now=time.time()))

        expected = {"bad_signature": 1, "oversized": 1, "expired": 1, "key_mismatch": 1, "replay": 1, "over_rate": 2}
        await wait_for(lambda: rejected(board) == expected, f"the honest node to count {expected}", VIEW_S)
        # Admitted posts are stored as gossipsub delivers them, just after the validator counted the last refusal.
        stored = {"a fine post", "flood 0", "flood 1"}
        await wait_async(lambda: _texts_are(board, stored), f"the honest node to store exactly {stored}")
        # The witness, which got the same messages, refused and stored the same.
        await wait_for(lambda: rejected(other_board) == expected, "the witness to count the same", VIEW_S)
        await wait_async(lambda: _texts_are(other_board, stored), "the witness to store the same")

        # The honest node still works.
        post, _ = await board.post("still here")
        await wait_async(lambda: _has(other_board, post.id_hex), "a post after the attack")
        stats = await board.stats()
        assert stats["posts"] == 4 and stats["rejected_all_time"] == expected


async def test_posts_never_gossiped_reach_every_node_by_sync_and_outsiders_are_refused(tmp_path):
    async with network() as net:
        a, b = await start_members(net, 2)
        board_a = await start_board(net, a, tmp_path)
        # b was offline while these were posted elsewhere: they are in its store and were never gossiped here.
        author, now = Identity.generate(), time.time()
        offline = [encode_post(author, text=f"note {i}", now=now - 60 + i, tags=["early"]) for i in range(5)]
        store_b = BlackboardStore(tmp_path / "b.sqlite")
        for raw in offline:
            store_b.add(decode_post(raw, now=now, ttl_s=3600), raw)
        ids = {decode_post(raw, now=now, ttl_s=3600).id_hex for raw in offline}
        board_b = BlackboardService(
            b.overlay, mesh_id=MESH, secret=b"", store=store_b, config=BlackboardConfig(), sequence=b.service.sequence,
            is_member=lambda peer: peer.to_base58() in b.service.view.peers, peers=lambda: list(b.service.view.peers))
        await net.nursery.start(board_b.run)
        await wait_async(lambda: _has_all(board_a, ids), "b's posts on a, by sync")
        # The store commits before the sync task counts what it stored: wait for the count, do not race it.
        await wait_for(lambda: board_a.sync.received == 5, "a to count 5 posts received by sync", VIEW_S)

        late = await net.start_member(MeshSettings(**{**SETTINGS.__dict__, "join_addrs": tuple(a.overlay.addrs())}))
        board_late = await start_board(net, late, tmp_path)
        await wait_async(lambda: _has_all(board_late, ids), "the earlier posts on the late node, by sync")
        await wait_for(lambda: board_late.sync.received == 5, "the late node to count 5 posts by sync", VIEW_S)
        assert not rejected(board_a) and not rejected(board_late)

        outsider = await net.start_overlay(bootstrap=tuple(a.overlay.addrs()))
        with trio.fail_after(VIEW_S):
            stream = await outsider.overlay.host.new_stream(a.overlay.peer_id, [SYNC_PROTOCOL])
            try:
                await stream.write(b"\x00\x00\x00\x01\xa0")
                with trio.move_on_after(VIEW_S):
                    while await stream.read(4096):
                        pass
            except Exception:
                pass  # the member hangs up
            finally:
                await stream.close()
        await wait_for(lambda: a.overlay.rejects.counts["blackboard_sync:not_member"] == 1,
                       "the member to refuse and count the outsider", VIEW_S)


async def _has_all(board: BlackboardService, ids: set[str]) -> bool:
    return set(ids) <= await feed_ids(board)
