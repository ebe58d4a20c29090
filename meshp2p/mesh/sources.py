"""Which members to fetch a model file from (protocols/model-fetch.md): those whose signed status offers the model
with a content id, agreeing on which one.

Members name a model by id (a catalog name, a file stem) and gossip the content id of the file behind it
(protocols/model-id.md). Two members may hold different files under one name (another quantisation, a newer
upload): the file fetched is the one most members offer (ties: the smaller content id, so every node picks the
same), or the one the caller already knows it wants (a catalog pin); members offering another are not asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from meshp2p.mesh.view import PeerView
from meshp2p.wire.model_id import ContentId


@dataclass(frozen=True)
class FileSources:
    content_id: ContentId
    #: Members that offer it, most recently heard from first.
    peers: tuple[str, ...]


def file_sources(peers: Iterable[PeerView], model_id: str, *, self_id: str,
                 expected: ContentId | None = None) -> FileSources | None:
    """The file to fetch for `model_id` and the members holding it, or None when no other member offers one."""
    offers = [(p, p.status.files[model_id]) for p in peers
              if p.peer_id != self_id and model_id in p.status.available and model_id in p.status.files]
    if expected is not None:
        chosen: ContentId | None = expected
    else:
        votes = Counter(cid for _, cid in offers)
        chosen = min(votes, key=lambda cid: (-votes[cid], cid.text)) if votes else None
    holders = sorted((p for p, cid in offers if cid == chosen), key=lambda p: -p.last_seen)
    if chosen is None or not holders:
        return None
    return FileSources(chosen, tuple(p.peer_id for p in holders))


def file_holders(peers: Iterable[PeerView], content_id: ContentId, *, self_id: str) -> tuple[str, ...]:
    """The other members whose status offers this very file, under any name (a worker recruited for a split
    fetches the host's file, whatever each holder calls it), most recently heard from first."""
    holders = sorted((p for p in peers if p.peer_id != self_id and content_id in p.status.files.values()),
                     key=lambda p: -p.last_seen)
    return tuple(p.peer_id for p in holders)
