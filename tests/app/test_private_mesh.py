"""A private mesh on real nodes: members find each other; a peer without the secret can neither join, hear of
the members' gossip (not even that it exists), nor get anything it publishes past their validator."""

from __future__ import annotations

import os
import time
from typing import Any

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from helpers.network import Network, Node, network, status, wait_for
from libp2p.pubsub.pb import rpc_pb2

from meshp2p.app.mesh_service import MeshSettings
from meshp2p.p2p.join import JOIN_PROTOCOL, Membership
from meshp2p.wire._cbor import dumps
from meshp2p.wire.gossip import (
    ENCRYPTION_SCHEME,
    SEALED_SIZES,
    encode_gossip,
    gossip_key,
    pad_plaintext,
    topic_name,
)
from meshp2p.wire.join import FrameReader, frame
from meshp2p.wire.mesh_id import new_mesh_secret, private_mesh_id
from meshp2p.wire.status import status_to_body

#: Generous for a loaded 2-core machine. No wait here counts on the keepalive (every 20 s): a joiner's view fills
#: by the statuses pushed to it, and a fresh status is announced to a member already in our gossip mesh.
VIEW_S = 10.0


def mesh_settings(secret: bytes, join_addrs: tuple[str, ...] = ()) -> MeshSettings:
    return MeshSettings(mesh_id=private_mesh_id(secret), secret=secret, join_addrs=join_addrs)


async def start_private_mesh(net: Network, secret: bytes) -> tuple[Node, Node]:
    first = await net.start_member(mesh_settings(secret), lambda: status(ram_mb=1000))
    second = await net.start_member(mesh_settings(secret, tuple(first.overlay.addrs())), lambda: status(ram_mb=2000))
    both = {first.peer_id, second.peer_id}
    await wait_for(lambda: all(set(n.service.view.peers) == both for n in (first, second)),
                   "both members in both views", VIEW_S)
    return first, second


def rejects(node: Node) -> dict[str, int]:
    return node.overlay.rejects.as_dict()


def counted(key: str, *nodes: Node) -> list[int]:
    return [node.overlay.rejects.counts[key] for node in nodes]


async def test_members_see_each_other_and_are_joined_both_ways():
    secret = new_mesh_secret()
    async with network() as net:
        first, second = await start_private_mesh(net, secret)
        assert second.service.created is False and first.service.created is True
        assert first.overlay.peer_id in second.service.membership.members
        assert second.overlay.peer_id in first.service.membership.members
        assert first.service.view.peers[second.peer_id].status.ram_mb == 2000
        assert second.service.view.peers[first.peer_id].status.ram_mb == 1000
        assert not rejects(first) and not rejects(second)


async def test_a_peer_without_the_secret_cannot_join():
    secret = new_mesh_secret()
    async with network() as net:
        first, second = await start_private_mesh(net, secret)
        outsider = await net.start_overlay(bootstrap=tuple(first.overlay.addrs()))
        members = first.service.membership

        # Right mesh id, wrong secret: the member proves itself first, the outsider finds the proof is not for
        # its key and hangs up without sending one of its own.
        guesser = Membership(outsider.overlay, first.service.settings.mesh_id, new_mesh_secret())
        assert await guesser.join(first.overlay.peer_id) is False
        assert rejects(outsider) == {"join:bad_proof": 1}

        # Another mesh altogether: refused at hello.
        other_secret = new_mesh_secret()
        stranger = Membership(outsider.overlay, private_mesh_id(other_secret), other_secret)
        assert await stranger.join(first.overlay.peer_id) is False
        assert rejects(outsider)["join:rejected"] == 1
        await wait_for(lambda: rejects(first).get("join:bad_mesh_id") == 1, "the member to count bad_mesh_id")

        # A proof made up without the secret: refused with bad_proof, and told so.
        assert await send_made_up_proof(outsider, first) == {"v": 1, "ok": False, "error": "bad_proof"}
        await wait_for(lambda: rejects(first).get("join:bad_proof") == 1, "the member to count bad_proof")

        assert outsider.overlay.peer_id not in members.members
        assert not members.is_member(outsider.overlay.peer_id)
        assert outsider.peer_id not in first.service.view.peers
        assert first.running and second.running


async def test_a_member_counts_a_dialer_that_hangs_up_mid_handshake():
    secret = new_mesh_secret()
    async with network() as net:
        first, _ = await start_private_mesh(net, secret)
        outsider = await net.start_overlay(bootstrap=tuple(first.overlay.addrs()))
        guesser = Membership(outsider.overlay, first.service.settings.mesh_id, new_mesh_secret())
        assert await guesser.join(first.overlay.peer_id) is False
        # A later handshake on the same connection is a barrier: once it is counted, the hang-up was handled.
        await send_made_up_proof(outsider, first)
        await wait_for(lambda: rejects(first).get("join:bad_proof") == 1, "the member to count bad_proof")
        assert first.running
        assert rejects(first)["join:truncated"] == 1


async def send_made_up_proof(outsider: Node, member: Node) -> dict[str, Any]:
    """Speak /meshp2p/join/1.0.0 by hand: a correct hello, then 32 random bytes as the proof."""
    reader = FrameReader()

    async def next_message() -> dict[str, Any]:
        while True:
            data = await stream.read(4096)
            assert data, "the member hung up without a result"
            messages = reader.feed(data)
            if messages:
                return messages[0]

    with trio.fail_after(VIEW_S):
        stream = await outsider.overlay.host.new_stream(member.overlay.peer_id, [JOIN_PROTOCOL])
        try:
            await stream.write(frame({"v": 1, "mesh": member.service.settings.mesh_id, "nonce": os.urandom(32)}))
            challenge = await next_message()
            assert set(challenge) == {"v", "nonce", "proof"}
            await stream.write(frame({"v": 1, "proof": os.urandom(32)}))
            return await next_message()
        finally:
            await stream.close()


async def exchange_fresh_status(first: Node, second: Node) -> None:
    """Both members announce their status now, and each hears the other's over gossip.

    Announced only once each has grafted the other on the status topic, so the message goes straight to it: heard
    at once, not by luck (a publish before the graft could reach nobody, and an old node repeats no change; the
    next chance would be the keepalive, 20 s away, past VIEW_S)."""
    assert first.service is not None
    topic = first.service.status_topic
    await wait_for(lambda: all(o.overlay.peer_id in n.overlay.gossipsub.mesh.get(topic, set())
                               for n, o in ((first, second), (second, first))),
                   "each member in the other's gossip mesh for status", VIEW_S)
    mark = time.time()
    for node in (first, second):
        node.service.announce_now()
    await wait_for(lambda: all(n.service.view.peers[o.peer_id].last_seen > mark
                               for n, o in ((first, second), (second, first))),
                   "fresh status between the members", VIEW_S)


class Recorder:
    """Everything the outsider's own gossipsub is handed by the members: subscriptions, messages, control."""

    def __init__(self, node: Node) -> None:
        self.subscriptions: list[str] = []
        self.messages: list[Any] = []
        self.control: list[Any] = []
        pubsub, router = node.overlay.pubsub, node.overlay.gossipsub
        handle_subscription, push_msg, handle_rpc = pubsub.handle_subscription, pubsub.push_msg, router.handle_rpc

        def on_subscription(origin: Any, sub: Any) -> None:
            self.subscriptions.append(sub.topicid)
            handle_subscription(origin, sub)

        async def on_message(forwarder: Any, msg: Any) -> None:
            self.messages.append(msg)
            await push_msg(forwarder, msg)

        async def on_rpc(rpc: Any, sender: Any) -> None:
            if rpc.HasField("control"):
                self.control.append(rpc.control)
            await handle_rpc(rpc, sender)

        pubsub.handle_subscription = on_subscription  # type: ignore[method-assign]
        pubsub.push_msg = on_message  # type: ignore[method-assign]
        router.handle_rpc = on_rpc  # type: ignore[method-assign]

    def about(self, topics: set[str]) -> list[str]:
        """What the outsider was told about `topics`, one line per item (empty means nothing)."""
        seen = [f"subscription {t}" for t in self.subscriptions if t in topics]
        seen += [f"message on {list(m.topicIDs)}" for m in self.messages if set(m.topicIDs) & topics]
        for control in self.control:
            seen += [f"ihave {c.topicID}" for c in control.ihave if c.topicID in topics]
            seen += [f"graft {c.topicID}" for c in control.graft if c.topicID in topics]
            seen += [f"prune {c.topicID} px={len(c.peers)}" for c in control.prune if c.peers]
        return seen


async def test_an_outsider_is_told_nothing_of_a_private_mesh_and_its_forgeries_are_rejected():
    """Connected over Noise + yamux to both members and even handed the topic names, a peer without the secret
    receives no subscription, message, IHAVE or GRAFT for the mesh's topics; its GRAFT is pruned without peer
    exchange and it never enters a member's gossipsub mesh; what it publishes is counted and dropped."""
    secret = new_mesh_secret()
    mesh_id = private_mesh_id(secret)
    topics = {topic_name(mesh_id, name, secret) for name in ("status", "demand", "blackboard")}
    topic = topic_name(mesh_id, "status", secret)
    async with network() as net:
        first, second = await start_private_mesh(net, secret)
        outsider = await net.start_overlay()
        recorder = Recorder(outsider)
        for member in (first, second):
            assert await outsider.overlay.connect(member.overlay.addrs()[0]) is not None
        for t in topics:
            await outsider.overlay.pubsub.subscribe(t)
        for member in (first, second):
            await outsider.overlay.pubsub.wait_for_peer(member.overlay.peer_id)
            await outsider.overlay.gossipsub.emit_graft(topic, member.overlay.peer_id)
        await wait_for(lambda: sum(len(c.prune) for c in recorder.control) >= 2, "both members to prune the graft")

        # While the members exchange fresh statuses (and gossipsub heartbeats, every second, emit IHAVEs), the
        # outsider, subscribed and connected to both, is handed nothing about the mesh's topics.
        for _ in range(3):
            await exchange_fresh_status(first, second)
        assert recorder.about(topics) == []
        for member in (first, second):
            router = member.overlay.gossipsub
            assert outsider.overlay.peer_id not in router.mesh.get(topic, set())
            assert outsider.overlay.peer_id not in member.overlay.pubsub.peer_topics.get(topic, set())
            other = second if member is first else first
            assert other.overlay.peer_id in router.mesh.get(topic, set())  # members do gossip with each other
        # The members' gossip names no member outside the ciphertext.
        member_message = first.overlay.gossipsub.mcache.window(topic)
        assert member_message
        for mid in member_message:
            msg = first.overlay.gossipsub.mcache.get(mid)
            assert msg is not None and msg.from_id == b"" and msg.signature == b"" and msg.key == b""
            assert len(msg.data) in SEALED_SIZES

        identity = outsider.overlay.identity
        plain = encode_gossip(identity, mesh_id, topic_name(mesh_id, "status"), "status", status_to_body(status()),
                              seq=1, now=time.time(), secret=None)
        nonce = os.urandom(12)
        sealed_with_a_guess = dumps({
            "v": 1, "enc": ENCRYPTION_SCHEME, "n": nonce,
            "ct": ChaCha20Poly1305(gossip_key(mesh_id, new_mesh_secret())).encrypt(
                nonce, pad_plaintext(plain), topic.encode()),
        })
        forgeries = [
            (b"\xffnot cbor at all", "malformed"),
            (plain, "decrypt_failed"),
            (sealed_with_a_guess, "decrypt_failed"),
        ]
        for data, reason in forgeries:
            key = f"gossip:{reason}"
            want = [n + 1 for n in counted(key, first, second)]
            forged = rpc_pb2.Message(data=data, topicIDs=[topic], seqno=os.urandom(8))
            for member in (first, second):  # straight to each: no member relays the outsider's messages
                outsider.overlay.gossipsub.send_rpc(member.overlay.peer_id, rpc_pb2.RPC(publish=[forged]))
            await wait_for(lambda key=key, want=want: counted(key, first, second) == want,
                           f"both members to count {key}")

        # The members are still running and still hear each other after the attack.
        await exchange_fresh_status(first, second)
        assert recorder.about(topics) == []
        assert first.running and second.running
        assert set(first.service.view.peers) == {first.peer_id, second.peer_id}
        assert all(not key.startswith("join:") for n in (first, second) for key in rejects(n))
