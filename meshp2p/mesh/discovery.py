"""Choosing a mesh to join from DHT listings (`meshp2p up --auto`, `meshp2p discover --auto`).

Score (higher is better), every term documented because users will ask why a mesh was picked:
- region: +100 when the listing's region equals the wanted one (case-insensitive), 0 when no region is wanted,
  -50 when both are set and differ (a far mesh still beats none);
- model: +60 when the wanted model is served, +25 when it is only wanted by the mesh (joining with it helps),
  0 when no model is wanted;
- capacity: +10 per doubling of the mesh's total capacity (log2 of GB, capped at +60): big meshes serve more;
- fullness: a listing at or over max_clients is never chosen; otherwise -40 x clients/max_clients;
- last joined: +30 for the mesh this node joined last time (stability across restarts);
- public only: private listings need an invite token and are never auto-joined.
Ties break on node count, then on mesh id, so every node given the same listings makes the same choice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from meshp2p.wire.records import MeshListing

REGION_MATCH = 100.0
REGION_MISMATCH = -50.0
MODEL_SERVED = 60.0
MODEL_WANTED = 25.0
CAPACITY_PER_DOUBLING = 10.0
CAPACITY_CAP = 60.0
FULLNESS_PENALTY = 40.0
LAST_JOINED_BONUS = 30.0


@dataclass(frozen=True)
class Candidate:
    mesh_id: str
    listing: MeshListing


def is_joinable(listing: MeshListing) -> bool:
    full = listing.max_clients is not None and listing.clients >= listing.max_clients
    return listing.public and not full


def score(candidate: Candidate, *, region: str | None = None, model: str | None = None,
          last_joined: str | None = None) -> float:
    listing = candidate.listing
    total = 0.0
    if region and listing.region:
        total += REGION_MATCH if listing.region.strip().upper() == region.strip().upper() else REGION_MISMATCH
    if model:
        if model in listing.served:
            total += MODEL_SERVED
        elif model in listing.wanted:
            total += MODEL_WANTED
    gigabytes = listing.capacity_mb / 1024
    if gigabytes > 1:
        total += min(CAPACITY_CAP, CAPACITY_PER_DOUBLING * math.log2(gigabytes))
    if listing.max_clients:
        total -= FULLNESS_PENALTY * listing.clients / listing.max_clients
    if last_joined is not None and candidate.mesh_id == last_joined:
        total += LAST_JOINED_BONUS
    return total


def rank(candidates: Iterable[Candidate], *, region: str | None = None, model: str | None = None,
         last_joined: str | None = None) -> list[tuple[float, Candidate]]:
    """Joinable candidates, best first."""
    scored = [(score(c, region=region, model=model, last_joined=last_joined), c)
              for c in candidates if is_joinable(c.listing)]
    return sorted(scored, key=lambda sc: (-sc[0], -sc[1].listing.nodes, sc[1].mesh_id))
