"""A model this node lacks, from the mesh members that hold it before the hub (issue 13, protocols/model-fetch.md).

Catalog models are named the same on every node (the catalog name is the model id), and every member gossips the
content id of each file it offers, so "who holds `qwen2.5-7b`" is a look at the view (mesh/sources.py). The file
lands in the model store ($MESHP2P_HOME/models) under the catalog's file name, where the resolver finds it next
time without the hub (inference/on_disk.py). A model split over several GGUF files is fetched from the hub: a
content id names only its first file (protocols/model-id.md).

The look waits up to FIND_HOLDERS_S for the view to fill (a newcomer hears every member's status within about a
second of joining: p2p/status_push.py); a fetch that fails (no holder left, a lying manifest) keeps what it got
for the next try and leaves the model to the hub. So does a fetch slower than the node's floor (`--min-fetch-mbps`,
default DEFAULT_MIN_FETCH_MBPS): members on thin uplinks must not hold a model back for hours when the hub is there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from meshp2p.home import models_dir
from meshp2p.inference.catalog import CatalogEntry
from meshp2p.inference.progress import SILENT, ProgressSink
from meshp2p.mesh.sources import FileSources, file_sources
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.model_fetch import FetchFailed, fetch_model_file
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.model_id import CONTENT_DIGEST_BYTES, ContentId

log = logging.getLogger(__name__)

FIND_HOLDERS_S = 5.0
#: Megabits per second below which a fetch from members gives way to the hub (a slow home uplink's order).
DEFAULT_MIN_FETCH_MBPS = 20.0
LOOK_EVERY_S = 0.25


def pinned_digest(entry: CatalogEntry) -> bytes | None:
    """The content digest a catalog pin implies: an LFS sha256 is the SHA-256 of the whole file, and a content id's
    digest is its first 16 bytes (protocols/model-id.md); the catalog's size is an estimate, so only the digest."""
    if len(entry.files) != 1 or entry.files[0].sha256 is None:
        return None
    return bytes.fromhex(entry.files[0].sha256)[:CONTENT_DIGEST_BYTES]


@dataclass(frozen=True)
class FetchedModel:
    paths: tuple[Path, ...]
    #: What the file is, checked: the node gossips it at once, without hashing the file again.
    content_id: ContentId


class MeshModelFetcher:
    """Fetch catalog models from members; `view` is the mesh's live view (this node's own entry included)."""

    def __init__(self, overlay: Overlay, view: Callable[[], MeshView], *, progress: ProgressSink = SILENT,
                 store: Callable[[], Path] = models_dir, on_bytes: Callable[[int], None] = lambda n: None,
                 min_bytes_per_s: float | None = None, hub_usable: Callable[[], bool] = lambda: True) -> None:
        self.overlay = overlay
        #: A fetch slower than this gives way to the hub (p2p/throughput.py) — while the hub may be asked: offline
        #: (HF_HUB_OFFLINE), a slow member is still the only source.
        self.min_bytes_per_s = min_bytes_per_s
        self.hub_usable = hub_usable
        #: Told of the bytes of every chunk that arrives (the node's `/metrics` counts them).
        self.on_bytes = on_bytes
        self.view = view
        self.progress = progress
        self.store = store

    async def find(self, entry: CatalogEntry, *, wait_s: float = FIND_HOLDERS_S) -> FileSources | None:
        """The members holding `entry`'s file, looked for until `wait_s` has passed."""
        if entry.source != "hub" or len(entry.files) != 1:
            return None
        pin = pinned_digest(entry)
        sources = None
        with trio.move_on_after(wait_s):
            # The view has no change event to wait on (gossip updates it in place); a look is a scan of a dict.
            while (sources := self._look(entry, pin)) is None:  # noqa: ASYNC110
                await trio.sleep(LOOK_EVERY_S)
        return sources

    def _look(self, entry: CatalogEntry, pin: bytes | None) -> FileSources | None:
        view = self.view()
        expected = None
        if pin is not None:
            offered = (p.status.files.get(entry.name) for p in view.peers.values())
            expected = next((cid for cid in offered if cid is not None and cid.digest == pin), None)
            if expected is None:
                return None
        return file_sources(view.peers.values(), entry.name, self_id=view.self_id, expected=expected)

    async def fetch(self, entry: CatalogEntry, *, wait_s: float = FIND_HOLDERS_S) -> FetchedModel | None:
        """`entry`'s file from members, in the model store; None when none holds it or the fetch failed."""
        sources = await self.find(entry, wait_s=wait_s)
        if sources is None:
            return None
        target = self.store() / entry.files[0].name
        self.progress.begin(f"{entry.name} from {len(sources.peers)} mesh member(s)", total=sources.content_id.size,
                            unit="bytes")
        try:
            report = await fetch_model_file(self.overlay, sources.content_id,
                                            [PeerID.from_base58(p) for p in sources.peers], target,
                                            on_progress=lambda done: self.progress.update(completed=done),
                                            on_bytes=self.on_bytes,
                                            min_bytes_per_s=self.min_bytes_per_s if self.hub_usable() else None)
        except FetchFailed as exc:
            log.warning("%s: %s", entry.name, exc.message)
            return None
        finally:
            self.progress.end()
        log.info("%s fetched from %d member(s) (%s chunks each)%s", entry.name, len(report.delivered),
                 "/".join(str(n) for n in report.delivered.values()),
                 f", {report.resumed_chunks} chunks resumed" if report.resumed_chunks else "")
        return FetchedModel((report.path,), sources.content_id)
