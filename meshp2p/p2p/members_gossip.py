"""Gossipsub that keeps a private mesh's topics among its members (protocols/gossip.md, "Members only").

py-libp2p's gossipsub hands a topic to every connected peer that subscribes to it: it announces our subscriptions to
everyone in its hello, grafts whoever sends GRAFT, answers any IWANT from its message cache and signs every message
with the node's key, naming the author in the clear. On a private mesh that tells a connected outsider who is in
the mesh and lets it collect every sealed message. The two subclasses here change only that:

- `MeshPubsub` publishes anonymous, unsigned messages (empty `from`, random `seqno`: the message id stays unique
  and says nothing; authenticity is the signed inner map), leaves private topics out of its hello and its
  subscription announcements to non-members, and holds a non-member's subscription to a private topic until the
  peer proves membership (`admit`), so a non-member is never in the topic's peer set: never grafted, sent a
  message, an IHAVE or a replay;
- `MeshGossipSub` refuses a non-member's GRAFT with a PRUNE without peer exchange, and ignores its IHAVE, IWANT and
  OBSERVE for private topics.

Which topics are private and who is a member come from `TopicGate`, filled by `Membership` (p2p/join.py).
Named meshes' topics are open: anyone who knows the name may join them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.utils import safe_bytes_from_hex

log = logging.getLogger(__name__)

#: Random `seqno` per message: py-libp2p's message id is `from ‖ seqno`, and `from` is empty.
SEQNO_BYTES = 8


class TopicGate:
    """Which topics are members-only, and whether a peer is a member now."""

    def __init__(self) -> None:
        self.private: frozenset[str] = frozenset()
        self._is_member: Callable[[ID], bool] = lambda _peer: False

    def guard(self, topics: frozenset[str], is_member: Callable[[ID], bool]) -> None:
        self.private = topics
        self._is_member = is_member

    def allows(self, peer_id: ID, topic: str) -> bool:
        return topic not in self.private or self._is_member(peer_id)


class MeshPubsub(Pubsub):
    """Pubsub with anonymous messages and members-only private topics (the module docstring says why)."""

    def __init__(self, host: Any, router: GossipSub, gate: TopicGate) -> None:
        super().__init__(host, router, strict_signing=False)
        self.gate = gate
        #: Subscriptions to private topics from peers not (yet) members: topic -> subscribed, per peer.
        self._held: dict[ID, dict[str, bool]] = {}

    async def publish(self, topic_id: str | list[str], data: bytes) -> None:
        topics = [topic_id] if isinstance(topic_id, str) else list(topic_id)
        await self.push_msg(self.my_id, rpc_pb2.Message(data=data, topicIDs=topics, seqno=os.urandom(SEQNO_BYTES)))

    def get_hello_packet(self) -> rpc_pb2.RPC:
        hello = super().get_hello_packet()
        kept = [sub for sub in hello.subscriptions if sub.topicid not in self.gate.private]
        del hello.subscriptions[:]
        hello.subscriptions.extend(kept)
        return hello

    async def message_all_peers(self, raw_msg: bytes, announce: rpc_pb2.RPC.SubOpts | None = None) -> None:
        if announce is None or announce.topicid not in self.gate.private:
            await super().message_all_peers(raw_msg, announce)
            return
        rpc = rpc_pb2.RPC()
        rpc.ParseFromString(raw_msg)
        for peer_id in tuple(self.peers):
            if self.gate.allows(peer_id, announce.topicid):
                self._router().send_rpc(peer_id, rpc)

    def handle_subscription(self, origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        topic = sub_message.topicid
        if topic in self.gate.private and not self.gate.allows(origin_id, topic):
            self._held.setdefault(origin_id, {})[topic] = sub_message.subscribe
            return
        super().handle_subscription(origin_id, sub_message)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        self._held.pop(peer_id, None)
        super()._handle_dead_peer(peer_id)

    def admit(self, peer_id: ID) -> None:
        """`peer_id` proved membership: take its held subscriptions, and tell it ours once its stream is up."""
        for topic, subscribed in self._held.pop(peer_id, {}).items():
            super().handle_subscription(peer_id, rpc_pb2.RPC.SubOpts(subscribe=subscribed, topicid=topic))
        ours = [topic for topic in self.topic_ids if topic in self.gate.private]
        if ours and self.manager.is_running:
            self.manager.run_task(self._announce_to, peer_id, ours)

    async def _announce_to(self, peer_id: ID, topics: list[str]) -> None:
        try:
            await self.wait_for_peer(peer_id, timeout=10.0)
        except Exception:
            log.debug("no pubsub stream to member %s: private subscriptions not announced", peer_id)
            return
        rpc = rpc_pb2.RPC(subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in topics])
        self._router().send_rpc(peer_id, rpc)

    def _router(self) -> GossipSub:
        assert isinstance(self.router, GossipSub)
        return self.router


class MeshGossipSub(GossipSub):
    """GossipSub whose control messages on private topics are honoured from members only."""

    gate: TopicGate

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        if not self.gate.allows(sender_peer_id, graft_msg.topicID):
            await self.emit_prune(graft_msg.topicID, sender_peer_id, False, False)
            return
        await super().handle_graft(graft_msg, sender_peer_id)

    async def handle_ihave(self, ihave_msg: rpc_pb2.ControlIHave, sender_peer_id: ID) -> None:
        if self.gate.allows(sender_peer_id, ihave_msg.topicID):
            await super().handle_ihave(ihave_msg, sender_peer_id)

    async def handle_iwant(self, iwant_msg: rpc_pb2.ControlIWant, sender_peer_id: ID) -> None:
        if not self.gate.private or all(self.gate.allows(sender_peer_id, t) for t in self.gate.private):
            await super().handle_iwant(iwant_msg, sender_peer_id)
            return
        # A non-member gets what it asks for only on open topics: ask the cache per id, as py-libp2p does.
        allowed = rpc_pb2.ControlIWant()
        for wire_id in iwant_msg.messageIDs:
            msg = self.mcache.get(safe_bytes_from_hex(wire_id) or b"")
            if msg is not None and all(self.gate.allows(sender_peer_id, t) for t in msg.topicIDs):
                allowed.messageIDs.append(wire_id)
        if allowed.messageIDs:
            await super().handle_iwant(allowed, sender_peer_id)

    async def handle_observe(self, observe_msg: rpc_pb2.ControlObserve, sender_peer_id: ID) -> None:
        if self.gate.allows(sender_peer_id, observe_msg.topicID):
            await super().handle_observe(observe_msg, sender_peer_id)

