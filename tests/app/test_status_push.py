"""A member that appears learns every status straight from each member (`/meshp2p/status/1.0.0`), and the mesh
broadcasts nothing for it; a pushed status that is forged, someone else's or oversized is refused and counted."""

from __future__ import annotations

import os
from typing import Any

import pytest
from helpers.network import Node, network, status, wait_for
from libp2p.peer.id import ID

from meshp2p.app.mesh_service import MeshSettings
from meshp2p.mesh import cadence, view
from meshp2p.p2p.status_push import STATUS_PUSH_PROTOCOL
from meshp2p.wire.framing import frame_bytes
from meshp2p.wire.gossip import MAX_GOSSIP_BYTES, encode_gossip
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.status import status_to_body


def settings_for(name: str, nodes: list[Node]) -> MeshSettings:
    join = tuple(addr for n in nodes for addr in n.overlay.addrs())
    return MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name, join_addrs=join)


async def test_a_late_joiner_learns_every_status_without_a_broadcast(monkeypatch: pytest.MonkeyPatch):
    # Every status a member publishes on schedule would land in the count below as if it were for the newcomer:
    # the repeats of a young node (1, 3 and 7 s after it starts) and the keepalive (every 20 s, due while this
    # test runs on a slow machine). Both are turned off on the cadence machine (mesh/cadence.py, which reads them
    # when each node starts), so nothing is scheduled: a status published here is one sent for the newcomer, and
    # the late joiner's view can fill only by the statuses pushed straight to it.
    monkeypatch.setattr(cadence, "STATUS_REPEAT_GAPS_S", ())
    monkeypatch.setattr(view, "STATUS_INTERVAL_S", 3600.0)
    name = f"push-{os.urandom(4).hex()}"
    async with network() as net:
        nodes: list[Node] = []
        for _ in range(3):
            nodes.append(await net.start_member(settings_for(name, nodes)))
        ids = {n.peer_id for n in nodes}
        await wait_for(lambda: all(set(n.service.view.peers) == ids for n in nodes if n.service),
                       "the first three in every view")
        # Gossipsub offers the messages of its last few heartbeats to a new subscriber (IHAVE, then IWANT): the
        # members' start-up statuses must be out of that window first, or the late joiner could learn them there.
        assert nodes[0].service is not None
        topic = nodes[0].service.status_topic
        await wait_for(lambda: not any(n.overlay.gossipsub.mcache.window(topic) for n in nodes),
                       "the start-up statuses to leave every member's gossip window")
        # From here on, count what the members publish on the status topic.
        published: list[str] = []
        for node in nodes:
            publish = node.overlay.publish

            async def counting(topic: str, data: bytes, publish: Any = publish, who: str = node.peer_id) -> None:
                if topic.endswith("/status/1"):
                    published.append(who)
                await publish(topic, data)

            node.overlay.publish = counting  # type: ignore[method-assign]

        late = await net.start_member(settings_for(name, nodes))
        assert late.service is not None
        await wait_for(lambda: set(late.service.view.peers) == ids | {late.peer_id},
                       "the late joiner to hold every member")
        assert published == [], "the members broadcast nothing for the newcomer"
        assert not any(k.startswith("status_push:") for k in late.overlay.rejects.as_dict())


async def test_forged_foreign_and_oversized_pushes_are_refused_and_counted():
    name = f"push-{os.urandom(4).hex()}"
    async with network() as net:
        target = await net.start_member(settings_for(name, []))
        hostile = await net.start_overlay()
        await hostile.overlay.connect(target.overlay.addrs()[0])
        assert target.service is not None
        mesh_id = named_mesh_id(name)
        topic = target.service.status_topic
        now = target.service.clock()

        async def push(payload: bytes) -> None:
            stream = await hostile.overlay.host.new_stream(ID.from_base58(target.peer_id), [STATUS_PUSH_PROTOCOL])
            try:
                await stream.write(payload)
            finally:
                await stream.close()

        someone_else = Identity.generate()
        foreign = encode_gossip(someone_else, mesh_id, topic, "status", status_to_body(status()), seq=1, now=now,
                                secret=None)
        await push(frame_bytes(foreign, max_bytes=MAX_GOSSIP_BYTES))  # signed, but not by the stream's peer
        await push(frame_bytes(b"\xa1\x61v\x01", max_bytes=MAX_GOSSIP_BYTES))  # no gossip message
        await push((MAX_GOSSIP_BYTES + 1).to_bytes(4, "big") + b"x" * 64)  # claims more than a message may be
        await push(b"\x00\x00")  # ends mid-header
        expected = {"status_push:key_mismatch": 1, "status_push:malformed": 1, "status_push:oversized": 1,
                    "status_push:truncated": 1}
        await wait_for(lambda: {k: v for k, v in target.overlay.rejects.as_dict().items()
                                if k.startswith("status_push:")} == expected, "the four pushes refused")
        assert set(target.service.view.peers) == {target.peer_id}
