"""A model this node lacks, from the mesh members that hold it before the hub (issue 13, protocols/model-fetch.md).

Catalog models are named the same on every node (the catalog name is the model id), and every member gossips the
content id of each file it offers, so "who holds `qwen2.5-7b`" is a look at the view (mesh/sources.py). The file
lands in the model store ($MESHP2P_HOME/models) under the catalog's file name, where the resolver finds it next
time without the hub (inference/on_disk.py).

A model split over several GGUF files (`-00001-of-00003.gguf` ...) is gossiped by its first file's content id
(protocols/model-id.md): its holders are asked for the content ids of all its files (`list`, answered by `parts`;
the list most of them send is used), then each file is fetched from them in turn like a whole model, each resumable
and checked on its own, into the store beside the others under the catalog's names (llama.cpp finds the parts
beside the first). A file no member could send comes from the hub (checked to be the file the members listed) and
is linked into the store from the Hugging Face cache; without a list (older members) the whole model is left to the
hub. `fetch_parts` is the part shared with the recruited workers of a split (app/recruitment.py).

The look waits up to FIND_HOLDERS_S for the view to fill (a newcomer hears every member's status within about a
second of joining: p2p/status_push.py); a fetch that fails (no holder left, a lying manifest) keeps what it got
for the next try and leaves the model to the hub. So does a fetch slower than the node's floor (`--min-fetch-mbps`,
default DEFAULT_MIN_FETCH_MBPS): members on thin uplinks must not hold a model back for hours when the hub is there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from meshp2p.errors import MeshP2PError
from meshp2p.home import models_dir
from meshp2p.inference.catalog import CatalogEntry
from meshp2p.inference.content_id import content_id
from meshp2p.inference.downloads import ensure_files
from meshp2p.inference.hub import Hub
from meshp2p.inference.progress import SILENT, ProgressSink
from meshp2p.mesh.sources import FileSources, file_sources
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.model_fetch import FetchFailed, fetch_model_file, list_parts
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.model_id import CONTENT_DIGEST_BYTES, ContentId

log = logging.getLogger(__name__)

FIND_HOLDERS_S = 5.0
#: Megabits per second below which a fetch from members gives way to the hub (a slow home uplink's order).
DEFAULT_MIN_FETCH_MBPS = 20.0
LOOK_EVERY_S = 0.25


def pinned_digests(entry: CatalogEntry) -> tuple[bytes | None, ...]:
    """The content digest each catalog pin implies (None where a file is not pinned): an LFS sha256 is the SHA-256
    of the whole file, and a content id's digest is its first 16 bytes (protocols/model-id.md); the catalog's size
    is an estimate, so only the digest."""
    return tuple(None if f.sha256 is None else bytes.fromhex(f.sha256)[:CONTENT_DIGEST_BYTES] for f in entry.files)


def pinned_digest(entry: CatalogEntry) -> bytes | None:
    """The pin of the entry's first file: the one status gossip names the model by."""
    return pinned_digests(entry)[0] if entry.files else None


@dataclass(frozen=True)
class FetchedModel:
    paths: tuple[Path, ...]
    #: What the (first) file is, checked: the node gossips it at once, without hashing the file again.
    content_id: ContentId
    #: Every file's content id, in order, for a split model (empty for a whole file).
    parts: tuple[ContentId, ...] = ()


async def fetch_parts(overlay: Overlay, ids: Sequence[ContentId], holders: Sequence[PeerID], targets: Sequence[Path],
                      *, on_progress: Callable[[int], None] = lambda done: None,
                      on_bytes: Callable[[int], None] = lambda n: None,
                      min_bytes_per_s: float | None = None) -> list[int]:
    """Fetch each file `ids[i]` of a model from `holders` to `targets[i]`, one after the other (they share the
    uplinks), skipping a file already there; the indexes of the files that could not be fetched.
    `on_progress(done)` counts the bytes of the whole model."""
    failed: list[int] = []
    base = 0
    for index, (cid, target) in enumerate(zip(ids, targets, strict=True)):
        if await _holds(target, cid):
            base += cid.size
            on_progress(base)
            continue
        try:
            await fetch_model_file(overlay, cid, holders, target, on_progress=partial(_offset, on_progress, base),
                                   on_bytes=on_bytes, min_bytes_per_s=min_bytes_per_s)
        except FetchFailed as exc:
            log.warning("file %d of %d (%s): %s", index + 1, len(ids), target.name, exc.message)
            failed.append(index)
        base += cid.size
    return failed


def _offset(on_progress: Callable[[int], None], base: int, done: int) -> None:
    on_progress(base + done)


async def _holds(path: Path, cid: ContentId) -> bool:
    """Whether `path` is already that file (a former fetch of the model got this far): hashed, once, to know."""
    try:
        if (await trio.Path(path).stat()).st_size != cid.size:
            return False
        return await content_id(path) == cid
    except OSError:
        return False


class MeshModelFetcher:
    """Fetch catalog models from members; `view` is the mesh's live view (this node's own entry included)."""

    def __init__(self, overlay: Overlay, view: Callable[[], MeshView], *, progress: ProgressSink = SILENT,
                 store: Callable[[], Path] = models_dir, on_bytes: Callable[[int], None] = lambda n: None,
                 min_bytes_per_s: float | None = None, hub_usable: Callable[[], bool] = lambda: True,
                 hub: Callable[[], Hub] = Hub, on_hub_bytes: Callable[[int], None] | None = None) -> None:
        """`hub`, `on_hub_bytes`: where a file of a split model no member could send is downloaded from, and who
        hears of its bytes (as `Resolver.received`)."""
        self.overlay = overlay
        self.hub = hub
        self.on_hub_bytes = on_hub_bytes
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
        if entry.source != "hub" or not entry.files:
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
        if len(entry.files) > 1:
            return await self._fetch_split(entry, sources)
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

    async def _fetch_split(self, entry: CatalogEntry, sources: FileSources) -> FetchedModel | None:
        """Every file of a split model (module docstring): from the members that list them, the hub for the rest."""
        listed = await list_parts(self.overlay, sources.content_id, [PeerID.from_base58(p) for p in sources.peers])
        ids = listed.ids
        pins = pinned_digests(entry)
        if ids is None or len(ids) != len(entry.files):
            log.warning("%s: no member listed its %d files (%s): it is downloaded from the hub", entry.name,
                        len(entry.files), ", ".join(f"{p[-8:]} {r}" for p, r in listed.dropped.items())
                        or f"they list {len(ids or ())}")
            return None
        if any(pin is not None and pin != cid.digest for pin, cid in zip(pins, ids, strict=True)):
            log.warning("%s: the members' files are not the ones the catalog pins: it is downloaded from the hub",
                        entry.name)
            return None
        store = self.store()
        targets = [store / f.name for f in entry.files]
        self.progress.begin(f"{entry.name} ({len(ids)} files) from {len(listed.holders)} mesh member(s)",
                            total=sum(cid.size for cid in ids), unit="bytes")
        try:
            failed = await fetch_parts(self.overlay, ids, listed.holders, targets,
                                       on_progress=lambda done: self.progress.update(completed=done),
                                       on_bytes=self.on_bytes,
                                       min_bytes_per_s=self.min_bytes_per_s if self.hub_usable() else None)
        finally:
            self.progress.end()
        for index in failed:
            if not self.hub_usable() or not await self._from_hub(entry, index, ids[index], targets[index]):
                return None
        log.info("%s fetched from %d member(s): %d files%s", entry.name, len(listed.holders), len(ids),
                 f", {len(failed)} of them from the hub" if failed else "")
        return FetchedModel(tuple(targets), ids[0], ids)

    async def _from_hub(self, entry: CatalogEntry, index: int, cid: ContentId, target: Path) -> bool:
        """File `index` of a split model from the hub into its cache, linked at `target` beside the members' parts;
        False (and logged) when it cannot be had or is not the file the members listed."""
        file = entry.hub_files()[index]
        try:
            (path,) = await trio.to_thread.run_sync(partial(ensure_files, (file,), hub=self.hub(),
                                                            title=f"{entry.name} ({file.filename})",
                                                            progress=self.progress, received=self.on_hub_bytes))
            got = await content_id(path)
        except (MeshP2PError, OSError) as exc:
            log.warning("%s: %s is on no member and not from the hub either: %s", entry.name, file.filename, exc)
            return False
        if got != cid:
            log.warning("%s: the hub's %s (%s) is not the file the members hold (%s)", entry.name, file.filename,
                        got.text, cid.text)
            return False
        await trio.to_thread.run_sync(_link, target, path)
        return True


def _link(target: Path, to: Path) -> None:
    target.unlink(missing_ok=True)
    target.symlink_to(to)
