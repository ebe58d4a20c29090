"""Browsing the DHT for meshes: what `meshp2p discover` and `up --auto` run.

A few lookups, no directory server: find the providers of `region:R`, `model:M` or `meshes`, read each
provider's signed node record to learn its mesh, then read that mesh's signed listing. Everything read is
verified (signature, expiry) before it is shown.
"""

from __future__ import annotations

import time

import trio

from meshp2p.mesh.discovery import Candidate
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.errors import WireError
from meshp2p.wire.identity import Identity
from meshp2p.wire.records import (
    MESHES_TOPIC,
    MeshListing,
    NodeRecord,
    decode_record,
    mesh_key,
    model_topic,
    node_key,
    provider_key,
    region_topic,
)

#: Concurrent record reads per discovery.
LOOKUP_CONCURRENCY = 16


async def discover_meshes(overlay: Overlay, *, region: str | None = None, model: str | None = None) -> list[Candidate]:
    """Listings of meshes with nodes matching `region` and `model` (both optional), verified, deduplicated."""
    topics = [region_topic(region)] if region else []
    topics += [model_topic(model)] if model else []
    topics = topics or [MESHES_TOPIC]
    provider_sets = []
    for topic in topics:
        provider_sets.append({str(p.peer_id) for p in await overlay.find_providers(provider_key(topic))})
    providers = set.intersection(*provider_sets) if provider_sets else set()
    mesh_ids: set[str] = set()
    found: dict[str, MeshListing] = {}
    limiter = trio.CapacityLimiter(LOOKUP_CONCURRENCY)

    async def read_node(peer_id: str) -> None:
        async with limiter:
            record = await _read(overlay, node_key(peer_id))
        if record is not None and isinstance(record, NodeRecord):
            mesh_ids.add(record.mesh)

    async def read_mesh(mesh_hex: str) -> None:
        async with limiter:
            record = await _read(overlay, mesh_key(bytes.fromhex(mesh_hex)))
        if record is not None and isinstance(record, MeshListing):
            found[mesh_hex] = record

    async with trio.open_nursery() as nursery:
        for peer_id in providers:
            nursery.start_soon(read_node, peer_id)
    async with trio.open_nursery() as nursery:
        for mesh_hex in mesh_ids:
            nursery.start_soon(read_mesh, mesh_hex)
    return [Candidate(mesh_id, listing) for mesh_id, listing in sorted(found.items())
            if (region is None or (listing.region or "").strip().upper() == region.strip().upper())
            and (model is None or model in listing.served or model in listing.wanted)]


async def _read(overlay: Overlay, key: str) -> MeshListing | NodeRecord | None:
    value = await overlay.get_record(key)
    if value is None:
        return None
    try:
        return decode_record(key, value, now=time.time()).body
    except WireError as exc:
        overlay.rejects.add("dht", exc.reason)
        return None


async def discover_once(bootstrap: tuple[str, ...], *, region: str | None = None,
                        model: str | None = None) -> list[Candidate]:
    """Join the DHT with a throwaway identity (a DHT client), discover, leave."""
    overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap, dht_server=False))
    async with trio.open_nursery() as nursery:
        await nursery.start(overlay.run)
        try:
            return await discover_meshes(overlay, region=region, model=model)
        finally:
            nursery.cancel_scope.cancel()
