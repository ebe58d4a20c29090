"""A member's DHT records, kept fresh: its node and provider records, the mesh listing, and the split-heal look.

- Every node publishes its own node record and provider records (`meshes`, `region:R`, `model:M`), so
  `discover` needs only a few lookups. Records live RECORD_TTL_S and are republished well before
  (mesh/records.RecordSchedule has every timing here).
- The serving node with the lowest PeerID in the view (`MeshView.leader`) writes the mesh listing: one writer per
  key. A joiner whose view does not hold the members yet never does; only the creator, or a node that could join
  none of the listed addresses (`MeshJoin.list_alone`), writes from a view of one. The listing is written only
  when the mesh is listed (named, or `--publish`).
- Every HEAL_SPLIT_S the leader of a named mesh looks the listing up again (`_heal_split`): two nodes that created
  the same named mesh at the same moment find each other and merge. One lookup per part of a split mesh is enough
  (the other members follow through the connections they then keep to every member), so the others do not spend
  DHT walks on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from meshp2p import __version__
from meshp2p.app.mesh_gossip import StatusSource
from meshp2p.app.mesh_join import MeshJoin
from meshp2p.mesh.demand import DemandMap
from meshp2p.mesh.records import RECORD_TTL_S, RecordSchedule
from meshp2p.mesh.view import MeshView
from meshp2p.p2p.listing import ListingServer
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.records import (
    KIND_MESH,
    KIND_NODE,
    MESHES_TOPIC,
    MeshListing,
    NodeRecord,
    encode_record,
    model_topic,
    provider_key,
    region_topic,
)
from meshp2p.wire.status import Role

if TYPE_CHECKING:
    from trio_typing import TaskStatus

#: Addresses a node record or the listing gives joiners.
MAX_RECORD_ADDRS = 16
#: Models a node record or the listing names.
MAX_RECORD_MODELS = 64


def wanted_models(view: MeshView, demand: DemandMap, now: float) -> list[str]:
    """Models asked for in the mesh that nobody serves, hottest first."""
    return demand.wanted(now, set(view.served_models()))


class MeshRecords:
    """What this node keeps in the DHT for its mesh, on mesh/records.RecordSchedule's timings."""

    def __init__(self, overlay: Overlay, view: MeshView, demand: DemandMap, join: MeshJoin,
                 listing_server: ListingServer, *, status: StatusSource, mesh_id: bytes, name: str | None,
                 private: bool, listed: bool, region: str | None, max_clients: int | None, role: Role,
                 clock: Callable[[], float]) -> None:
        self.overlay = overlay
        self.view = view
        self.demand = demand
        self.join = join
        self.listing_server = listing_server
        self.status = status
        self.mesh_id = mesh_id
        self.name = name
        self.private = private
        self.region = region
        self.max_clients = max_clients
        self.role = role
        self.clock = clock
        self._published_listing: MeshListing | None = None
        self._listing_published_at = 0.0
        self._schedule = RecordSchedule(clock(), listed=listed, named=name is not None)

    def listing(self) -> MeshListing:
        """The listing as this node would write it now."""
        v = self.view
        wanted = tuple(wanted_models(v, self.demand, self.clock()))
        return MeshListing(
            name=self.name, region=v.region() or self.region, public=not self.private, nodes=v.node_count(),
            clients=v.client_count(), max_clients=self.max_clients, served=v.served_models()[:MAX_RECORD_MODELS],
            wanted=wanted[:MAX_RECORD_MODELS], capacity_mb=v.capacity_mb(), addrs=tuple(self._join_addrs()),
            version=__version__,
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Node and provider records, the listing (leader only) and the look for split meshes (leader of a named
        mesh only), as mesh/records.RecordSchedule says."""
        task_status.started()
        schedule = self._schedule
        while True:
            now = self.clock()
            work = schedule.due(now, leader=self.view.leader() == self.view.self_id)
            if work.republish:
                await self._publish_node_and_providers()
            if work.check_listing:
                await self._maybe_publish_listing(now)
            if work.heal:
                await self._heal_split()
            await trio.sleep(max(0.0, schedule.next_at() - self.clock()))

    async def _publish_node_and_providers(self) -> None:
        status = self.status()
        record = NodeRecord(mesh=self.mesh_id.hex(), region=self.region, role=self.role,
                            addrs=tuple(self.overlay.addrs()[:MAX_RECORD_ADDRS]),
                            models=status.loaded[:MAX_RECORD_MODELS], version=__version__)
        key, value = encode_record(self.overlay.identity, KIND_NODE, str(self.overlay.peer_id), record,
                                   now=self.clock(), ttl_s=RECORD_TTL_S)
        self.listing_server.offer_node_record(value)
        await self.overlay.put_record(key, value)
        topics = [MESHES_TOPIC] + ([region_topic(self.region)] if self.region else [])
        topics += [model_topic(m) for m in status.loaded]
        for topic in topics:
            await self.overlay.provide(provider_key(topic))

    async def _maybe_publish_listing(self, now: float) -> None:
        # A joiner's view holds only itself until the members' status arrives, so it would elect itself and
        # overwrite the listing with a one-node mesh at its own addresses: only the creator writes from a view of one.
        if self.view.leader() != self.view.self_id or (len(self.view.peers) < 2 and not self.join.list_alone):
            return
        listing = self.listing()
        stale = self._schedule.listing_stale(self._listing_published_at, now)
        if listing == self._published_listing and not stale:
            return
        # A full mesh (clients >= max_clients) is still written, so the stale "room left" listing is replaced
        # at once; discover shows it as not joinable and --auto never picks it.
        key, value = encode_record(self.overlay.identity, KIND_MESH, self.mesh_id.hex(), listing,
                                   now=now, ttl_s=RECORD_TTL_S)
        self.listing_server.offer_listing(value)
        await self.overlay.put_record(key, value)
        self._published_listing, self._listing_published_at = listing, now

    async def _heal_split(self) -> None:
        """Join listed members we are not connected to (two nodes created the same named mesh at once)."""
        if self.name is None:
            return
        listing = await self.join.lookup_listing()
        if listing is None:
            return
        members = self.join.membership.members
        missing = [a for a in listing.addrs if not any(str(p) in a for p in members)
                   and str(self.overlay.peer_id) not in a]
        if missing:
            await self.join.join_addrs(missing)

    def _join_addrs(self) -> list[str]:
        """Where joiners should dial: the listing's writer (us), up to MAX_RECORD_ADDRS addresses."""
        return self.overlay.addrs()[:MAX_RECORD_ADDRS]
