"""Two nodes that create the same named mesh at the same moment (neither found the other's listing) end up in
one mesh view, through the split heal: the leader of each part looks the listing up every HEAL_SPLIT_S (shortened
here) and joins the members it lists that it is not connected to.

Where both parts are DHT servers they also meet through the DHT itself (each is handed the other by its
lookups, connects, and status gossip merges the views), so the heal would not be tested. Here both are DHT
clients, as nodes behind NAT are: a server never hands a client to anyone (the overlay keeps clients out of its
routing table), and the bootstrap does not subscribe to the mesh's gossip, so the heal's join is the only way
the two can meet."""

from __future__ import annotations

import os

import pytest
import trio
from helpers.network import Node, network, wait_for

from meshp2p.app.mesh_service import MeshSettings
from meshp2p.mesh import records
from meshp2p.p2p import dht
from meshp2p.wire.mesh_id import named_mesh_id

#: Short enough for a test, long enough that both nodes have created the mesh before the first look.
HEAL_S = 1.0


async def test_two_nodes_that_created_one_named_mesh_at_once_merge(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(records, "HEAL_SPLIT_S", HEAL_S)
    # A leader's own fresh listing would answer its lookup from the local store for 30 s.
    monkeypatch.setattr(dht, "LOCAL_RECORD_FRESH_S", 0.0)
    name = f"split-{os.urandom(4).hex()}"
    settings = MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name)
    async with network() as net:
        bootstrap = await net.start_overlay()
        boot = tuple(bootstrap.overlay.addrs())
        nodes: list[Node] = []

        async def start() -> None:
            nodes.append(await net.start_member(settings, bootstrap=boot, dht_server=False))

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(start)
        a, b = nodes
        assert a.service is not None and b.service is not None
        assert a.service.created and b.service.created, "both must have started the mesh for this test to mean much"
        assert not a.overlay.is_connected(b.overlay.peer_id), "they met before any heal could have run"
        everyone = {a.peer_id, b.peer_id}
        await wait_for(lambda: set(a.service.view.peers) == set(b.service.view.peers) == everyone,
                       "the two halves to merge into one view", timeout_s=30.0)
