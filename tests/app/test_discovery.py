"""`discover` on real overlays over loopback: providers from the DHT, records straight from the providers.

Each test runs a few DHT servers, mesh members (real `MeshService`s) and a fresh DHT client, as
`discover_once` builds it. Hostile providers are overlays that provide a topic and answer
`/meshp2p/listing/1.0.0` with whatever the test gives them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import cbor2
from helpers.network import Network, Node, connect_all, network, status, wait_for
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from multiaddr import Multiaddr

from meshp2p.app.discovery import discover_meshes
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.p2p.listing import LISTING_PROTOCOL, fetch_records
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire._cbor import dumps
from meshp2p.wire.identity import Identity
from meshp2p.wire.listing import MAX_FRAME_BYTES, encode_answer
from meshp2p.wire.mesh_id import named_mesh_id, new_mesh_secret, private_mesh_id
from meshp2p.wire.records import (
    KIND_MESH,
    KIND_NODE,
    MESHES_TOPIC,
    MeshListing,
    NodeRecord,
    encode_record,
    mesh_key,
    model_topic,
    node_key,
    provider_key,
    region_topic,
)

SERVERS = 4
MODEL = "tiny-model"


class CountingOverlay(Overlay):
    """A real overlay that remembers which DHT records it read (to tell the direct path from the DHT path)."""

    def __init__(self, identity: Identity, config: OverlayConfig) -> None:
        super().__init__(identity, config)
        self.reads: list[str] = []

    async def get_record(self, key: str) -> bytes | None:
        self.reads.append(key)
        return await super().get_record(key)


async def start_servers(net: Network) -> list[Node]:
    servers = [await net.start_overlay() for _ in range(SERVERS)]
    await connect_all(servers)
    return servers


def bootstrap_of(servers: list[Node]) -> tuple[str, ...]:
    return tuple(s.overlay.addrs()[0] for s in servers)


async def start_member(net: Network, servers: list[Node], settings: MeshSettings) -> Node:
    overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap_of(servers)))
    return await net.start_node(Node(overlay, MeshService(overlay, settings, lambda: status(loaded=(MODEL,)))))


async def start_client(net: Network, servers: list[Node]) -> CountingOverlay:
    overlay = CountingOverlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap_of(servers)[:1],
                                                                 dht_server=False))
    await net.start_node(Node(overlay))
    return overlay


def named(region: str = "AU") -> MeshSettings:
    name = f"discover-{os.urandom(4).hex()}"
    return MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name, region=region)


def provided_everywhere(servers: list[Node], topic: str, peer_id: str) -> Callable[[], bool]:
    key = provider_key(topic)
    return lambda: all(any(str(p.peer_id) == peer_id for p in s.overlay.dht.provider_store.get_providers(key))
                       for s in servers)


async def published(servers: list[Node], member: Node, *topics: str) -> None:
    """Wait until the member answers with its listing and every server holds its provider records."""
    assert member.service is not None
    server = member.service.listing_server
    await wait_for(lambda: server.answer()[1] is not None, "the member to hold its mesh's listing")
    await wait_for(lambda: member.overlay.dht.value_store.get(node_key(member.peer_id).encode()) is not None,
                   "the member's node record in the DHT")
    for topic in topics:
        await wait_for(provided_everywhere(servers, topic, member.peer_id), f"every server to know {topic}")


async def test_discover_finds_a_mesh_by_region_and_by_model_by_asking_its_member():
    settings = named()
    async with network() as net:
        servers = await start_servers(net)
        member = await start_member(net, servers, settings)
        await published(servers, member, region_topic("AU"), model_topic(MODEL), MESHES_TOPIC)
        for query in ({"region": "au"}, {"model": MODEL}, {"region": "AU", "model": MODEL}, {}):
            client = await start_client(net, servers)
            found = await discover_meshes(client, **query)
            assert [c.mesh_id for c in found] == [settings.mesh_id.hex()], query
            assert found[0].listing.name == settings.name and found[0].listing.served == (MODEL,)
            assert client.reads == [], "records were read from the DHT, not asked of the member"
        client = await start_client(net, servers)
        assert await discover_meshes(client, region="EU") == []
        assert await discover_meshes(client, model="no-such-model") == []


async def test_a_member_that_did_not_write_the_listing_answers_with_it_too():
    settings = named()
    async with network() as net:
        servers = await start_servers(net)
        creator = await start_member(net, servers, settings)
        await published(servers, creator, region_topic("AU"))
        joiner = await start_member(net, servers, settings)
        assert joiner.service is not None and not joiner.service.created
        await published(servers, joiner, region_topic("AU"))
        client = await start_client(net, servers)
        answer = await fetch_records(client, _info(joiner))
        assert answer is not None and answer.mesh_id == settings.mesh_id.hex()
        assert answer.mesh_listing is not None and answer.mesh_listing.name == settings.name


async def test_a_provider_that_cannot_be_reached_is_read_from_the_dht():
    settings = named()
    async with network() as net:
        servers = await start_servers(net)
        member = await start_member(net, servers, settings)
        await published(servers, member, region_topic("AU"))
        await wait_for(lambda: any(s.overlay.dht.value_store.get(mesh_key(settings.mesh_id).encode()) is not None
                                   for s in servers), "the listing in the DHT")
        member.kill()
        await wait_for(lambda: not member.running, "the member to stop")

        client = await start_client(net, servers)
        found = await discover_meshes(client, region="AU")
        assert [c.mesh_id for c in found] == [settings.mesh_id.hex()]
        assert set(client.reads) == {node_key(member.peer_id), mesh_key(settings.mesh_id)}


class HostileProvider:
    """Provides `region:AU` and answers every listing request with `answer`'s bytes."""

    def __init__(self, overlay: Overlay, answer: Callable[[Overlay], bytes]) -> None:
        self.overlay = overlay
        self.answer = answer

    async def handle(self, stream: Any) -> None:
        try:
            await stream.read(4096)
            await stream.write(self.answer(self.overlay))
        finally:
            await stream.close()


def forged_listing_answer(overlay: Overlay) -> bytes:
    """Its own valid node record for a mesh of its own, with a listing whose signature was tampered with."""
    mesh = named_mesh_id("forged")
    node = NodeRecord(mesh=mesh.hex(), region="AU", role="host", addrs=(), models=(), version="evil")
    listing = MeshListing(name="forged", region="AU", public=True, nodes=99, clients=0, max_clients=None, served=(),
                          wanted=(), capacity_mb=10**6, addrs=(), version="evil")
    _, node_value = encode_record(overlay.identity, KIND_NODE, str(overlay.peer_id), node, now=time.time(), ttl_s=300)
    _, listing_value = encode_record(overlay.identity, KIND_MESH, mesh.hex(), listing, now=time.time(), ttl_s=300)
    m = cbor2.loads(listing_value)
    tampered = dumps({**m, "sig": bytes([m["sig"][0] ^ 1]) + m["sig"][1:]})
    return encode_answer(node_value, tampered)


def oversized_answer(overlay: Overlay) -> bytes:
    return (MAX_FRAME_BYTES + 1).to_bytes(4, "big") + bytes(1024)


def someone_elses_node_record(overlay: Overlay) -> bytes:
    other = Identity.generate()
    node = NodeRecord(mesh=named_mesh_id("stolen").hex(), region="AU", role="host", addrs=(), models=(), version="x")
    return encode_answer(encode_record(other, KIND_NODE, other.peer_id, node, now=time.time(), ttl_s=300)[1], None)


async def test_forged_and_oversized_answers_are_refused_and_counted():
    settings = named()
    answers: list[tuple[Callable[[Overlay], bytes], str]] = [
        (forged_listing_answer, "listing:bad_signature"),
        (oversized_answer, "listing:oversized"),
        (someone_elses_node_record, "listing:key_mismatch"),
    ]
    async with network() as net:
        servers = await start_servers(net)
        member = await start_member(net, servers, settings)
        hostile: list[Node] = []
        for answer, _ in answers:
            node = await net.start_overlay(bootstrap_of(servers))
            provider = HostileProvider(node.overlay, answer)
            node.overlay.host.set_stream_handler(LISTING_PROTOCOL, provider.handle)
            await node.overlay.provide(provider_key(region_topic("AU")))
            hostile.append(node)
        await published(servers, member, region_topic("AU"))
        for node in hostile:
            await wait_for(provided_everywhere(servers, region_topic("AU"), node.peer_id), "the hostile providers")

        client = await start_client(net, servers)
        found = await discover_meshes(client, region="AU")
        assert [c.mesh_id for c in found] == [settings.mesh_id.hex()]
        for _, counted in answers:
            assert client.rejects.counts[counted] == 1, client.rejects.counts
        # Their records were looked for in the DHT instead (and not found: they never put any there).
        assert {node_key(n.peer_id) for n in hostile} <= set(client.reads)


async def test_a_private_unpublished_mesh_is_never_served():
    secret, other_secret = new_mesh_secret(), new_mesh_secret()
    private = MeshSettings(mesh_id=private_mesh_id(secret), secret=secret, region="AU")
    published_private = MeshSettings(mesh_id=private_mesh_id(other_secret), secret=other_secret, region="AU",
                                     publish=True)
    async with network() as net:
        servers = await start_servers(net)
        hidden = await start_member(net, servers, private)
        assert hidden.service is not None
        client = await start_client(net, servers)
        await client.connect(hidden.overlay.addrs()[0])
        assert await fetch_records(client, _info(hidden)) is None, "an unlisted member answered"
        assert hidden.service.listing_server.answer() == (None, None)
        assert await discover_meshes(client, region="AU") == []
        assert await discover_meshes(client) == []

        # The same exchange does serve a private mesh run with --publish (its listing is in the DHT anyway).
        shown = await start_member(net, servers, published_private)
        await published(servers, shown, region_topic("AU"))
        answer = await fetch_records(client, _info(shown))
        assert answer is not None and answer.mesh_listing is not None and not answer.mesh_listing.public


def _info(node: Node) -> PeerInfo:
    return info_from_p2p_addr(Multiaddr(node.overlay.addrs()[0]))
