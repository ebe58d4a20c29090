"""Finding and joining a node's mesh, at start and whenever a split mesh heals (app/mesh_records.py).

- Named mesh (`--mesh-name`): the id is derived from the name, the secret is empty. The node looks the listing
  up in the DHT and joins its addresses; if there is none it is the first and creates it.
- Private mesh: `--join TOKEN` carries the addresses to join (an invite token); a node that has none creates it.
- Joining an address is proving the mesh secret to the peer there (p2p/join.py), both ways.
- A node that could join none of the listed addresses (a mesh that died before its listing expired) serves on
  its own and writes the listing even alone (`list_alone`), so later nodes find it rather than the dead
  addresses; the split heals if the others come back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from meshp2p.p2p.join import Membership
from meshp2p.p2p.listing import ListingServer
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.errors import WireError
from meshp2p.wire.records import MeshListing, decode_record, mesh_key

log = logging.getLogger(__name__)


class MeshJoin:
    """Who to join, and whether this node created the mesh."""

    def __init__(self, overlay: Overlay, membership: Membership, listing_server: ListingServer, *,
                 mesh_id: bytes, name: str | None, join_addrs: tuple[str, ...], clock: Callable[[], float]) -> None:
        self.overlay = overlay
        self.membership = membership
        self.listing_server = listing_server
        self.mesh_id = mesh_id
        self.name = name
        self.addrs = join_addrs
        self.clock = clock
        #: No mesh was found: this node started it.
        self.created = False
        #: Write the listing from a view of one: we created the mesh, or could join none of its listed addresses.
        self.list_alone = False

    async def find_and_join(self) -> None:
        addrs = list(self.addrs)
        if not addrs and self.name is not None:
            listing = await self.lookup_listing()
            if listing is not None:
                addrs = list(listing.addrs)
        if not addrs:
            self.created = self.list_alone = True
            log.info("no existing mesh found: this node starts it")
            return
        joined = await self.join_addrs(addrs)
        if not joined:
            # Nobody answered (a mesh that died before its listing expired): list ourselves even alone, so later
            # nodes find us rather than the dead addresses; the split heals if the others come back.
            self.list_alone = True
            log.warning("could not join any of the mesh's %d addresses; serving on our own until one answers",
                        len(addrs))

    async def join_addrs(self, addrs: list[str]) -> int:
        """Connect to and join every reachable address; returns how many peers accepted us."""
        reached = await self.overlay.connect_many([a for a in addrs if str(self.overlay.peer_id) not in a])
        accepted = 0
        for info in reached:
            if info.peer_id in self.membership.members or await self.membership.join(info.peer_id):
                accepted += 1
        return accepted

    async def lookup_listing(self) -> MeshListing | None:
        """The mesh's listing from the DHT, also offered to `discover` (p2p/listing.py) as it is."""
        key = mesh_key(self.mesh_id)
        value = await self.overlay.get_record(key)
        if value is None:
            return None
        try:
            body = decode_record(key, value, now=self.clock()).body
        except WireError as exc:
            self.overlay.rejects.add("dht", exc.reason)
            return None
        self.listing_server.offer_listing(value)
        return body if isinstance(body, MeshListing) else None
