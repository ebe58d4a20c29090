"""Browsing the DHT for meshes: what `meshp2p discover` and `up --auto` run.

No directory server: find the providers of `region:R`, `model:M` or `meshes` (a DHT walk that stops at the
first holders, p2p/providers.py), then ask each provider directly for its signed node record and its
mesh's signed listing (`/meshp2p/listing/1.0.0`, protocols/listing.md): one round trip instead of two DHT walks
(the node record to learn the provider's mesh, then that mesh's listing). A provider that cannot answer (down,
unreachable, an older version, no listing at hand, a bad answer) is read the old way from the DHT; one that has
not answered within DIRECT_HEAD_START_S is read from the DHT meanwhile, and the first valid answer wins.
Everything shown is a signed, unexpired record, verified before use; of several listings of one mesh the newest
is shown.
"""

from __future__ import annotations

import time

import trio

from meshp2p.mesh.discovery import Candidate
from meshp2p.p2p import PeerInfo
from meshp2p.p2p.listing import fetch_records
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
    select_record,
)

#: Providers asked (or read) at once per discovery.
LOOKUP_CONCURRENCY = 16
#: How long a provider's direct answer is awaited before its records are also read from the DHT. A direct
#: answer takes a dial and one round trip (milliseconds on a LAN, well under a second across the internet); a
#: provider behind NAT or gone may take the whole FETCH_TIMEOUT_S to fail, which the DHT read then hides.
DIRECT_HEAD_START_S = 1.0


async def discover_meshes(overlay: Overlay, *, region: str | None = None, model: str | None = None) -> list[Candidate]:
    """Listings of meshes with nodes matching `region` and `model` (both optional), verified, deduplicated."""
    topics = [region_topic(region)] if region else []
    topics += [model_topic(model)] if model else []
    topics = topics or [MESHES_TOPIC]
    provider_sets: list[dict[str, PeerInfo]] = [{} for _ in topics]

    async def find(index: int, topic: str) -> None:
        provider_sets[index] = {str(p.peer_id): p for p in await overlay.find_providers(provider_key(topic))}

    async with trio.open_nursery() as nursery:  # region and model: two walks at once
        for index, topic in enumerate(topics):
            nursery.start_soon(find, index, topic)
    common = set.intersection(*(set(found) for found in provider_sets))
    listings: dict[str, list[bytes]] = {}
    limiter = trio.CapacityLimiter(LOOKUP_CONCURRENCY)

    async def read_provider(info: PeerInfo) -> None:
        async with limiter:
            found = await _listing_of(overlay, info)
        if found is not None:
            listings.setdefault(found[0], []).append(found[1])

    async with trio.open_nursery() as nursery:
        for peer_id in sorted(common):
            nursery.start_soon(read_provider, provider_sets[0][peer_id])
    newest: dict[str, MeshListing] = {}
    now = time.time()
    for mesh_hex, values in listings.items():
        key = mesh_key(bytes.fromhex(mesh_hex))
        try:
            body = decode_record(key, values[select_record(key, values, now=now)], now=now).body
        except WireError:  # every copy expired while we were asking
            continue
        if isinstance(body, MeshListing):
            newest[mesh_hex] = body
    return [Candidate(mesh_id, listing) for mesh_id, listing in sorted(newest.items())
            if (region is None or (listing.region or "").strip().upper() == region.strip().upper())
            and (model is None or model in listing.served or model in listing.wanted)]


async def _listing_of(overlay: Overlay, provider: PeerInfo) -> tuple[str, bytes] | None:
    """(mesh id, verified listing value) for one provider: asked directly, read from the DHT when the provider
    cannot answer, or both at once after DIRECT_HEAD_START_S; None when neither way finds one."""
    result: tuple[str, bytes] | None = None
    fallback_started = False
    head_start = trio.CancelScope()

    async with trio.open_nursery() as nursery:

        def finish(found: tuple[str, bytes] | None) -> None:
            nonlocal result
            if found is not None and result is None:
                result = found
                nursery.cancel_scope.cancel()

        def fall_back(mesh_hex: str | None) -> None:
            nonlocal fallback_started
            if not fallback_started:
                fallback_started = True
                nursery.start_soon(via_dht, mesh_hex)

        async def direct() -> None:
            answer = await fetch_records(overlay, provider)
            head_start.cancel()
            if answer is not None and answer.mesh_id is not None and answer.listing_value is not None:
                finish((answer.mesh_id, answer.listing_value))
            else:
                fall_back(answer.mesh_id if answer is not None else None)

        async def via_dht(mesh_hex: str | None) -> None:
            if mesh_hex is None:
                node = await _read(overlay, node_key(str(provider.peer_id)))
                if not isinstance(node, NodeRecord):
                    return
                mesh_hex = node.mesh
            key = mesh_key(bytes.fromhex(mesh_hex))
            value = await overlay.get_record(key)
            if value is not None and isinstance(_decode(overlay, key, value), MeshListing):
                finish((mesh_hex, value))

        async def wait_then_fall_back() -> None:
            with head_start:
                await trio.sleep(DIRECT_HEAD_START_S)
                fall_back(None)

        nursery.start_soon(direct)
        nursery.start_soon(wait_then_fall_back)
    return result


async def _read(overlay: Overlay, key: str) -> MeshListing | NodeRecord | None:
    value = await overlay.get_record(key)
    return None if value is None else _decode(overlay, key, value)


def _decode(overlay: Overlay, key: str, value: bytes) -> MeshListing | NodeRecord | None:
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
