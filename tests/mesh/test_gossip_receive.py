"""MeshService's receive path: what the gossipsub validator decoded is handed to `_receive` through a bounded
cache; a message whose entry was pushed out of the cache (a burst larger than the cache before `_receive` ran)
is decoded again, not lost. Real signed messages, a stand-in subscription, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshp2p.app import mesh_service
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.p2p.overlay import RejectCounter
from meshp2p.wire.gossip import SequenceCounter, StatusBody, encode_gossip, status_from_body, status_to_body
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id

MESH = named_mesh_id("receive")


def status(**changes: Any) -> StatusBody:
    base = StatusBody(role="host", ram_mb=8192, vram_mb=0, gpu=None, loaded=(), available=(), load=0.0,
                      api_port=None, version="test", region=None, rtt_ms={})
    return replace(base, **changes)


@dataclass
class Message:
    """The two fields of a py-libp2p pubsub message that MeshService reads."""

    data: bytes
    from_id: bytes


class Sender:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.peer_id = ID.from_pubkey(create_new_key_pair(self.identity.seed).public_key)
        self.seq = SequenceCounter()

    def status(self, topic: str, now: float, **changes: Any) -> Message:
        data = encode_gossip(self.identity, MESH, topic, "status", status_to_body(status(**changes)),
                             seq=self.seq.next(now=now), now=now, secret=None)
        return Message(data, self.peer_id.to_bytes())


class ListSubscription:
    def __init__(self, messages: list[Message]) -> None:
        self._messages = list(messages)

    async def get(self) -> Message:
        if not self._messages:
            await trio.sleep_forever()
        return self._messages.pop(0)


class BareOverlay:
    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.peer_id = ID.from_pubkey(create_new_key_pair(self.identity.seed).public_key)
        self.rejects = RejectCounter()


async def test_a_message_pushed_out_of_the_decoded_cache_is_decoded_again(monkeypatch: Any):
    monkeypatch.setattr(mesh_service, "_DECODED_CACHE_MAX", 4)
    clock = 1_800_000_000.0
    svc = MeshService(BareOverlay(), MeshSettings(mesh_id=MESH, secret=b"", name="receive"),  # type: ignore[arg-type]
                      status, clock=lambda: clock)
    validate = svc._validator(svc.status_topic, status_from_body)
    senders = [Sender() for _ in range(6)]
    burst = [s.status(svc.status_topic, clock, ram_mb=1000 + i) for i, s in enumerate(senders)]
    assert all(validate(ID(m.from_id), m) for m in burst)
    assert len(svc._decoded) == 4, "the two oldest entries were pushed out"

    applied: list[tuple[str, int]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc._receive, ListSubscription(burst), svc.status_topic, status_from_body,
                           lambda sender, body: applied.append((sender, body.ram_mb)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert applied == [(s.peer_id.to_base58(), 1000 + i) for i, s in enumerate(senders)]
    assert svc._decoded == {} and svc.overlay.rejects.as_dict() == {}


async def test_a_forged_message_is_refused_and_counted_on_either_path():
    clock = 1_800_000_000.0
    svc = MeshService(BareOverlay(), MeshSettings(mesh_id=MESH, secret=b"", name="receive"),  # type: ignore[arg-type]
                      status, clock=lambda: clock)
    honest, impostor = Sender(), Sender()
    forged = Message(honest.status(svc.status_topic, clock).data, impostor.peer_id.to_bytes())
    assert svc._validator(svc.status_topic, status_from_body)(impostor.peer_id, forged) is False
    applied: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc._receive, ListSubscription([forged]), svc.status_topic, status_from_body,
                           lambda sender, body: applied.append(sender))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert applied == []
    assert svc.overlay.rejects.as_dict() == {"gossip:key_mismatch": 2}
