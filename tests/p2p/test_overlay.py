"""Overlay lifecycle and the mesh listing's single writer, on real overlays over loopback."""

from __future__ import annotations

import os
from typing import Any

from helpers.network import Node, connect_all, network, status, wait_for
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.records import mesh_key


async def test_a_stopped_overlay_closes_all_its_connections():
    """py-libp2p closes a cancelled swarm's connections unshielded, so at most the first one really closed; the
    others stayed up with nobody serving them, and streams peers opened on them stalled for 10 s."""
    async with network() as net:
        stops = await net.start_overlay()
        stay = [await net.start_overlay() for _ in range(3)]
        await connect_all([stops, *stay])
        assert all(stops.overlay.peer_id in n.overlay.connected_peers() for n in stay)

        stops.kill()
        await wait_for(lambda: not stops.running, "the stopped overlay's tasks to end")
        await wait_for(lambda: all(stops.overlay.peer_id not in n.overlay.connected_peers() for n in stay),
                       "every peer to see its connection closed", timeout_s=3.0)


def _ordered_identities() -> tuple[Identity, Identity]:
    """Two identities, the first with the lower PeerID (so the first is the view's leader once both know each other)."""
    a, b = Identity.generate(), Identity.generate()
    ids = {str(ID.from_pubkey(create_new_key_pair(i.seed).public_key)): i for i in (a, b)}
    low, high = sorted(ids)
    return ids[low], ids[high]


async def test_a_joiner_does_not_overwrite_the_listing_before_it_sees_the_members():
    """A joiner's view holds only itself at first, so it used to elect itself and write a one-node listing."""
    name = f"listing-{os.urandom(4).hex()}"
    settings = MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name)
    key = mesh_key(settings.mesh_id)
    creator_id, joiner_id = _ordered_identities()
    async with network() as net:
        creator = await net.start_member_with(creator_id, settings)
        await wait_for(lambda: creator.service is not None and creator.service.records._published_listing is not None,
                       "the creator to publish the listing")
        assert creator.service is not None and creator.service.created

        overlay = Overlay(joiner_id, OverlayConfig(bootstrap=tuple(creator.overlay.addrs())))
        service = MeshService(overlay, settings, status)
        puts: list[str] = []
        checks: list[int] = []
        put_record, maybe_publish = overlay.put_record, service.records._maybe_publish_listing

        async def recording_put(k: str, value: bytes) -> bool:
            puts.append(k)
            return await put_record(k, value)

        async def counting_publish(now: float) -> None:
            await maybe_publish(now)
            checks.append(len(service.view.peers))

        # Gossip reaches a joiner only after its first listing check here, as it does in a busy mesh.
        apply_status = service.gossip._apply_status

        def status_after_first_check(sender: str, body: Any) -> None:
            if checks:
                apply_status(sender, body)

        overlay.put_record = recording_put  # type: ignore[method-assign]
        service.gossip._apply_status = status_after_first_check  # type: ignore[method-assign]
        service.records._maybe_publish_listing = counting_publish  # type: ignore[method-assign]
        joiner = await net.start_node(Node(overlay, service))
        assert not service.created
        await wait_for(lambda: len(checks) >= 1, "the joiner's first listing check")
        await wait_for(lambda: set(service.view.peers) == {creator.peer_id, joiner.peer_id},
                       "the joiner to see the creator")
        await wait_for(lambda: len(checks) >= 2 and checks[-1] == 2, "a listing check with both in the view")
        assert key not in puts, "the joiner wrote the mesh listing"


async def test_dht_clients_stay_out_of_a_servers_routing_table_and_servers_stay_in():
    """A finished `discover` (a DHT client) used to enter every server's table it queried (py-libp2p adds whoever
    opens a KAD stream), so later lookups handed it out and dialed it: two clients of one bootstrap met that way."""
    async with network() as net:
        server, other_server = await net.start_overlay(), await net.start_overlay()
        await connect_all([server, other_server])
        client = await net.start_node(Node(Overlay(Identity.generate(), OverlayConfig(
            bootstrap=(server.overlay.addrs()[0],), dht_server=False))))
        table = server.overlay.dht.routing_table
        store = server.overlay.host.get_peerstore()

        def identified() -> bool:
            try:
                return bool(store.get_protocols(client.overlay.peer_id))
            except Exception:  # py-libp2p raises until identify has stored something
                return False

        for _ in range(3):  # before identify has spoken and after
            await client.overlay.get_record(mesh_key(named_mesh_id("nobody-wrote-this")))
            assert not table.peer_in_table(client.overlay.peer_id), "a client that queried us entered the table"
        await wait_for(identified, "identify to learn the client's protocols")
        await client.overlay.get_record(mesh_key(named_mesh_id("nobody-wrote-this")))
        assert not table.peer_in_table(client.overlay.peer_id)
        assert server.overlay.purge_dht_clients() == []
        assert table.peer_in_table(other_server.overlay.peer_id)
