"""A node's life in a mesh: find or create it, join it, gossip status, keep its DHT records fresh.

App-layer wiring of the overlay (p2p/), the wire formats (wire/) and the pure mesh view and machines (mesh/).
`MeshService` builds its parts in order and runs them in one nursery; each part is a module of its own:

- app/mesh_join.py: find the mesh (its listing in the DHT, or the token's addresses) and join it, or create it.
  Named mesh (`--mesh-name`): the id is derived from the name, the secret is empty. Private mesh: the id is derived
  from a 32-byte secret kept in `$MESHP2P_HOME/mesh.secret`, so the invite token stays valid across restarts;
  `--join TOKEN` joins someone else's. Gossip is encrypted with a key derived from the secret; the listing (only
  with `--publish`) never carries the secret.
- app/mesh_gossip.py: status and demand on the gossip topics, and a status pushed straight to each newcomer.
- app/mesh_rtt.py: round trips to the members, which our status carries (`GossipedStatus`).
- app/mesh_liveness.py: departures seen on connections (a lost connection whose redial fails), and expiry.
- app/mesh_records.py: node and provider records, the listing (its writer is the view's leader) and the
  split-heal look (`MeshRecords._heal_split`).

The node gives the service its own facts as a `StatusSource` and its request rates as a `DemandSource`; the
service gives the node back the view, the demand map, membership and the RTTs, and nothing here calls the node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from meshp2p.app.mesh_gossip import DemandSource, MeshGossip, StatusSource
from meshp2p.app.mesh_join import MeshJoin
from meshp2p.app.mesh_liveness import MeshLiveness
from meshp2p.app.mesh_records import MeshRecords, wanted_models
from meshp2p.app.mesh_rtt import GossipedStatus, PeerRtts
from meshp2p.app.status import MeshStatus
from meshp2p.mesh.demand import DemandMap
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.join import Membership
from meshp2p.p2p.listing import ListingServer
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.gossip import SequenceCounter
from meshp2p.wire.records import MeshListing
from meshp2p.wire.status import Role
from meshp2p.wire.token import encode_token

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

#: Addresses an invite token carries.
MAX_TOKEN_ADDRS = 8


def _no_demand() -> Mapping[str, float]:
    return {}


def _nobody_to_tell() -> None:
    """No console follows this mesh service."""


@dataclass(frozen=True)
class MeshSettings:
    mesh_id: bytes
    #: b"" for a named (public) mesh.
    secret: bytes
    name: str | None = None
    #: Put the listing in the DHT (named meshes always are).
    publish: bool = False
    region: str | None = None
    max_clients: int | None = None
    role: Role = Role.HOST
    #: Where to join: from an invite token, or empty to look the mesh up (named) / create it.
    join_addrs: tuple[str, ...] = ()

    @property
    def private(self) -> bool:
        return self.secret != b""

    @property
    def listed(self) -> bool:
        return (self.name is not None and not self.private) or self.publish


class MeshService:
    def __init__(self, overlay: Overlay, settings: MeshSettings, local_status: StatusSource,
                 local_demand: DemandSource = _no_demand, *, clock: Callable[[], float] = time.time,
                 view: MeshView | None = None, on_change: Callable[[], None] = _nobody_to_tell) -> None:
        """`local_status`: the node's own facts (the RTTs in it are replaced by those measured here);
        `view`: a MeshView to keep (a benchmark's instrumented one), else a new one; `on_change`: called when a
        member's status or demand arrives (the console's event source diffs then)."""
        self.overlay = overlay
        self.settings = settings
        self.clock = clock
        secret = settings.secret or None
        self.membership = Membership(overlay, settings.mesh_id, settings.secret)
        #: Answers `discover` directly with our records; installed only when the mesh is listed.
        self.listing_server = ListingServer(overlay, settings.mesh_id, clock)
        self.view = view if view is not None else MeshView(settings.mesh_id, str(overlay.peer_id))
        #: Requests per minute per model, merged from every member's reports.
        self.demand = DemandMap()
        #: This node's gossip `seq`, shared by every topic of the mesh (the blackboard's too).
        self.sequence = SequenceCounter()
        self.rtts = PeerRtts(overlay, self.view, is_member=self.is_member)
        self.status = GossipedStatus(local_status, self.rtts)
        self.join = MeshJoin(overlay, self.membership, self.listing_server, mesh_id=settings.mesh_id,
                             name=settings.name, join_addrs=settings.join_addrs, clock=clock)
        self.gossip = MeshGossip(overlay, self.view, self.demand, self.sequence, mesh_id=settings.mesh_id,
                                 secret=secret, status=self.status, local_demand=local_demand, clock=clock,
                                 on_change=on_change)
        self.liveness = MeshLiveness(overlay, self.view, self.membership, returning=self.gossip, rtts=self.rtts,
                                     clock=clock)
        self.records = MeshRecords(overlay, self.view, self.demand, self.join, self.listing_server,
                                   status=self.status, mesh_id=settings.mesh_id, name=settings.name,
                                   private=settings.private, listed=settings.listed, region=settings.region,
                                   max_clients=settings.max_clients, role=settings.role, clock=clock)

    # -- what the rest of the node reads ----------------------------------------------------------------

    @property
    def created(self) -> bool:
        """No mesh was found at start: this node created it."""
        return self.join.created

    @property
    def rtt_ms(self) -> dict[str, float]:
        """Our measured round trip to each peer of the view, in ms (live: pipeline planning reads it)."""
        return self.rtts.rtt_ms

    @property
    def status_topic(self) -> str:
        return self.gossip.status_topic

    @property
    def demand_topic(self) -> str:
        return self.gossip.demand_topic

    def invite_token(self, *, ttl_s: int | None = None) -> str:
        return encode_token(self.overlay.identity, self.settings.mesh_id, self.settings.secret,
                            self.overlay.addrs()[:MAX_TOKEN_ADDRS], now=self.clock(), name=self.settings.name,
                            ttl_s=ttl_s)

    def snapshot(self) -> MeshStatus:
        s, v, now = self.settings, self.view, self.clock()
        return MeshStatus(
            mesh_id=v.mesh_id.hex(), nodes=v.node_count(), clients=v.client_count(), served=v.served_models(),
            capacity_mb=v.capacity_mb(), peers=MeshStatus.peers_of(v, now), name=s.name, private=s.private,
            listed=s.listed, created=self.created, region=s.region, max_clients=s.max_clients,
            peer_id=str(self.overlay.peer_id), addrs=tuple(self.overlay.addrs()),
            members=tuple(sorted(str(p) for p in self.membership.members)), rejected=self.overlay.rejects.as_dict(),
            demand=self.demand.total(now), wanted=tuple(self.wanted_models()),
        )

    def is_member(self, peer: PeerID) -> bool:
        """A joined peer, or one whose signed status we read on our mesh topic (on a private mesh that status was
        encrypted with the mesh key: reading it proves the sender has the secret). Every stream protocol but join
        and the listing serves only these."""
        return self.membership.is_member(peer) or peer.to_base58() in self.view.peers

    def wanted_models(self) -> list[str]:
        """Models asked for in the mesh that nobody serves, hottest first."""
        return wanted_models(self.view, self.demand, self.clock())

    def listing(self) -> MeshListing:
        return self.records.listing()

    def announce_now(self) -> None:
        """Send our status at once instead of at the next heartbeat (we just changed what we serve)."""
        self.gossip.announce_now()

    # -- running ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer the mesh's protocols, subscribe, join (or create) the mesh, then run every part."""
        self.membership.install()
        self.rtts.install()
        self.gossip.install()
        if self.settings.listed:
            self.listing_server.install()
        await self.gossip.subscribe()
        self.view.update(self.view.self_id, self.status(), self.clock())
        try:
            with self.liveness.watching():
                await self.join.find_and_join()
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.gossip.run)
                    await nursery.start(self.rtts.run)
                    await nursery.start(self.liveness.run)
                    nursery.start_soon(self.membership.run_renewals)
                    await nursery.start(self.records.run)
                    task_status.started()
        finally:
            self.membership.uninstall()
