"""p2p/gossip.GossipTopic's receive path: what the gossipsub validator decoded is handed on through a bounded
cache; a message whose entry was pushed out of the cache (a burst larger than the cache before delivery ran) is
checked again, not lost; forged messages and those the service's own rule refuses are counted, never delivered.
Real signed messages, a stand-in subscription, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshp2p.p2p import gossip
from meshp2p.p2p.gossip import Delivered, GossipTopic
from meshp2p.p2p.rejects import RejectCounter
from meshp2p.wire.gossip import GossipMessage, SequenceCounter, encode_gossip, topic_name
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.status import StatusBody, status_from_body, status_to_body

MESH = named_mesh_id("receive")
TOPIC = topic_name(MESH, "status", None)
CLOCK = 1_800_000_000.0


def status(**changes: Any) -> StatusBody:
    base = StatusBody(role="host", ram_mb=8192, vram_mb=0, gpu=None, loaded=(), available=(), load=0.0,
                      api_port=None, version="test", region=None, rtt_ms={})
    return replace(base, **changes)


@dataclass
class Message:
    """The two fields of a py-libp2p pubsub message that GossipTopic reads."""

    data: bytes
    from_id: bytes


class Sender:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.peer_id = ID.from_pubkey(create_new_key_pair(self.identity.seed).public_key)
        self.seq = SequenceCounter()

    def status(self, **changes: Any) -> Message:
        data = encode_gossip(self.identity, MESH, TOPIC, "status", status_to_body(status(**changes)),
                             seq=self.seq.next(now=CLOCK), now=CLOCK, secret=None)
        return Message(data, self.peer_id.to_bytes())


class StandInOverlay:
    """Subscribing hands back a list of messages; the validator is kept for the test to run, as gossipsub would."""

    def __init__(self, messages: list[Message]) -> None:
        self.identity = Identity.generate()
        self.rejects = RejectCounter()
        self.messages = list(messages)
        self.validator: Any = None

    async def subscribe(self, topic: str, validator: Any) -> StandInOverlay:
        self.validator = validator
        return self

    async def get(self) -> Message:
        if not self.messages:
            await trio.sleep_forever()
        return self.messages.pop(0)


def topic_over(overlay: StandInOverlay, admit: Any = None) -> GossipTopic[StatusBody]:
    return GossipTopic(overlay, mesh_id=MESH, secret=None, topic=TOPIC,  # type: ignore[arg-type]
                       parse=lambda m: status_from_body(m.body), reject=lambda r: overlay.rejects.add("gossip", r),
                       sequence=SequenceCounter(), clock=lambda: CLOCK, admit=admit)


async def delivered(topic: GossipTopic[StatusBody]) -> list[Delivered[StatusBody]]:
    out: list[Delivered[StatusBody]] = []

    async def collect() -> None:
        while True:
            out.append(await topic.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return out


async def test_a_message_pushed_out_of_the_decoded_cache_is_checked_again(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(gossip, "DECODED_CACHE_MAX", 4)
    senders = [Sender() for _ in range(6)]
    burst = [s.status(ram_mb=1000 + i) for i, s in enumerate(senders)]
    overlay = StandInOverlay(burst)
    topic = topic_over(overlay)
    await topic.subscribe()
    assert all(overlay.validator(ID(m.from_id), m) for m in burst)
    assert len(topic._decoded) == 4, "the two oldest entries were pushed out"
    got = await delivered(topic)
    assert [(d.message.sender, d.value.ram_mb) for d in got] == [
        (s.peer_id.to_base58(), 1000 + i) for i, s in enumerate(senders)]
    assert topic._decoded == {} and overlay.rejects.as_dict() == {}


async def test_a_forged_message_is_refused_and_counted_on_either_path():
    honest, impostor = Sender(), Sender()
    forged = Message(honest.status().data, impostor.peer_id.to_bytes())
    overlay = StandInOverlay([forged])
    topic = topic_over(overlay)
    await topic.subscribe()
    assert overlay.validator(impostor.peer_id, forged) is False
    assert await delivered(topic) == []
    assert overlay.rejects.as_dict() == {"gossip:key_mismatch": 2}


async def test_the_service_s_own_rule_refuses_before_relay():
    def admit(msg: GossipMessage, value: StatusBody) -> str | None:
        return "too_big" if value.ram_mb > 4096 else None

    small, big = Sender().status(ram_mb=1024), Sender().status(ram_mb=9999)
    overlay = StandInOverlay([small])
    topic = topic_over(overlay, admit)
    await topic.subscribe()
    assert [overlay.validator(ID(m.from_id), m) for m in (small, big)] == [True, False]
    assert [d.value.ram_mb for d in await delivered(topic)] == [1024]
    assert overlay.rejects.as_dict() == {"gossip:too_big": 1}
