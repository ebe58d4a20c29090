"""Content ids of this node's model files (protocols/model-id.md): hashed once, off the event loop, then cached.

Hashing a multi-GB GGUF takes seconds to minutes, so it runs in a worker thread (`trio.to_thread`) while the node
serves, and the result is kept in `$MESHP2P_HOME/cache/content-ids.json` keyed by (resolved path, size, mtime_ns):
a restart, or another model added, hashes nothing it already knows. The cache's rules (which entry is still good,
how the file is written) are pure functions on plain data, tested without touching a disk.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from meshp2p.home import meshp2p_home
from meshp2p.inference.models import ModelSpec
from meshp2p.wire.errors import WireError
from meshp2p.wire.model_id import ContentId, ContentIdHasher, parse_content_id

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CACHE_NAME = "content-ids.json"
#: Bounds the file for users who try many models; the oldest entries go first (their files are hashed again).
MAX_CACHE_ENTRIES = 1024
READ_CHUNK_BYTES = 4 * 2**20
#: Files from this size on are logged and get a progress bar: SHA-256 reads a few hundred MB to ~2 GB a second.
LARGE_FILE_BYTES = 256 * 2**20
#: A status message is at most 16 KiB (protocols/gossip.md); `files` may take this much of it, so a node offering
#: many long-named models still sends a valid status (models past the budget are just not matched for splits).
FILES_GOSSIP_BUDGET_BYTES = 6144
#: CBOR overhead of one `files` entry: two text headers, at most 2 bytes each for these lengths.
_ENTRY_OVERHEAD_BYTES = 4


@dataclass(frozen=True)
class FileStamp:
    """What says a file is unchanged since it was hashed, without reading it."""

    path: str
    size: int
    mtime_ns: int


Entries = dict[str, dict[str, Any]]


# -- the cache: pure -------------------------------------------------------------------------------------------


def parse_cache(text: str) -> Entries:
    """The entries of a cache file; a file that is unreadable, of another version or malformed counts as empty."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if type(data) is not dict or data.get("v") != CACHE_VERSION or type(data.get("files")) is not dict:
        return {}
    return {path: entry for path, entry in data["files"].items() if type(path) is str and type(entry) is dict}


def cached_id(entries: Entries, stamp: FileStamp) -> ContentId | None:
    """The content id recorded for this exact file (same path, size and mtime), or None: hash it again."""
    entry = entries.get(stamp.path)
    if entry is None or entry.get("size") != stamp.size or entry.get("mtime_ns") != stamp.mtime_ns:
        return None
    if type(entry.get("size")) is not int or type(entry.get("mtime_ns")) is not int:
        return None
    try:
        cid = parse_content_id(entry.get("id"))
    except WireError:
        return None
    return cid if cid.size == stamp.size else None


def with_entry(entries: Entries, stamp: FileStamp, cid: ContentId) -> Entries:
    """A copy with this file's entry written last (newest), keeping at most MAX_CACHE_ENTRIES."""
    updated = {path: entry for path, entry in entries.items() if path != stamp.path}
    updated[stamp.path] = {"size": stamp.size, "mtime_ns": stamp.mtime_ns, "id": cid.text}
    return dict(list(updated.items())[-MAX_CACHE_ENTRIES:])


def render_cache(entries: Entries) -> str:
    return json.dumps({"v": CACHE_VERSION, "files": entries}, indent=1) + "\n"


def files_to_gossip(ids: dict[str, ContentId], offered: Iterable[str]) -> dict[str, ContentId]:
    """The `files` of a status: ids of the offered models, in offer order, within FILES_GOSSIP_BUDGET_BYTES."""
    files: dict[str, ContentId] = {}
    used = 0
    for model in offered:
        cid = ids.get(model)
        if cid is None:
            continue
        used += len(model.encode()) + len(cid.text) + _ENTRY_OVERHEAD_BYTES
        if used > FILES_GOSSIP_BUDGET_BYTES:
            break
        files[model] = cid
    return files


# -- hashing and the cache file: blocking I/O, run in worker threads ----------------------------------------------


def default_cache_file() -> Path:
    return meshp2p_home() / "cache" / CACHE_NAME


def stamp_of(path: Path) -> FileStamp:
    resolved = path.resolve()
    st = resolved.stat()
    return FileStamp(str(resolved), st.st_size, st.st_mtime_ns)


class HashingStopped(Exception):
    """The node stopped while a file was being hashed."""


def hash_file(path: Path, on_progress: Callable[[int], None] = lambda done: None,
              stop: threading.Event | None = None) -> ContentId:
    """Read the whole file through the hasher (hashlib releases the GIL on big chunks: the event loop runs on).

    `stop` is checked between chunks, so a node stopped in the middle of a 40 GB file does not read on.
    """
    hasher = ContentIdHasher()
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            if stop is not None and stop.is_set():
                raise HashingStopped(str(path))
            hasher.update(chunk)
            on_progress(hasher.size)
    return hasher.result()


def _read_entries(cache_file: Path) -> Entries:
    try:
        return parse_cache(cache_file.read_text(encoding="utf-8"))
    except OSError:
        return {}


def _store(cache_file: Path, stamp: FileStamp, cid: ContentId) -> None:
    """Read, update and replace the cache file atomically (two nodes sharing a home lose at most an entry)."""
    entries = with_entry(_read_entries(cache_file), stamp, cid)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    tmp.write_text(render_cache(entries), encoding="utf-8")
    tmp.replace(cache_file)


async def content_id(path: Path, *, cache_file: Path | None = None,
                     on_progress: Callable[[int], None] = lambda done: None) -> ContentId:
    """The file's content id: from the cache when the file is unchanged, else hashed in a worker thread and cached.

    A file that changes while it is hashed (still being downloaded, say) is not cached: its next use hashes again.
    """
    cache_file = cache_file or default_cache_file()
    stamp = await trio.to_thread.run_sync(stamp_of, path)
    cached = cached_id(await trio.to_thread.run_sync(_read_entries, cache_file), stamp)
    if cached is not None:
        return cached
    large = stamp.size >= LARGE_FILE_BYTES
    if large:
        log.info("hashing %s (%.1f GB) once, so peers with the same file can be found; cached in %s",
                 path.name, stamp.size / 1e9, cache_file)
    started = time.monotonic()
    stop = threading.Event()
    cid: ContentId
    try:
        # Abandoned on cancel (the node is stopping); `stop` then ends the thread at its next chunk. (trio-typing's
        # stubs, which shadow trio's own, predate the `abandon_on_cancel` name.)
        cid = await trio.to_thread.run_sync(hash_file, Path(stamp.path), on_progress, stop,  # type: ignore[call-arg]
                                            abandon_on_cancel=True)
    finally:
        stop.set()
    if large:
        log.info("hashed %s in %.1f s: %s", path.name, time.monotonic() - started, cid.text)
    if await trio.to_thread.run_sync(stamp_of, path) == stamp:
        try:
            await trio.to_thread.run_sync(_store, cache_file, stamp, cid)
        except OSError as exc:
            log.warning("could not write %s (%s): %s will be hashed again next time", cache_file, exc, path.name)
    return cid


class ModelFileIds:
    """The content ids of the models this node offers, filled in one by one in the background (`run`).

    `ids` is what status gossip carries (a split GGUF's first file: protocols/model-id.md); `parts` the id of every
    file of a split model, in order, which members fetching it ask for (protocols/model-fetch.md); a split model
    gets its entry in `ids` only once all its files are hashed. `hashing` is (bytes done, total) per model while a
    large file is being hashed, for the progress bars of `meshp2p up`.
    """

    def __init__(self, *, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self.ids: dict[str, ContentId] = {}
        self.parts: dict[str, tuple[ContentId, ...]] = {}
        self.hashing: dict[str, tuple[int, int]] = {}
        self.errors: dict[str, str] = {}
        self.done = trio.Event()

    async def run(self, specs: Iterable[ModelSpec], on_change: Callable[[], None] = lambda: None, *,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hash `specs` in order (one file at a time: parallel reads of one disk are no faster), then return."""
        todo = list(specs)
        for spec in todo:
            if spec.size_bytes >= LARGE_FILE_BYTES:
                self.hashing[spec.id] = (0, spec.size_bytes)
        task_status.started()
        for spec in todo:
            files = spec.files or (spec.path,)
            before = [0]  # bytes of the model's files hashed before this one

            def progress(done: int, model_id: str = spec.id, total: int = spec.size_bytes,
                         before: list[int] = before) -> None:
                if model_id in self.hashing:
                    self.hashing[model_id] = (before[0] + done, total)

            try:
                ids = []
                for path in files:
                    ids.append(await content_id(path, cache_file=self.cache_file, on_progress=progress))
                    before[0] += ids[-1].size
                if len(ids) > 1:
                    self.parts[spec.id] = tuple(ids)
                self.ids[spec.id] = ids[0]
            except OSError as exc:
                # Without an id the model is still served here; peers just will not pick this node as a worker.
                self.errors[spec.id] = str(exc)
                log.warning("cannot hash %s (%s): it will not be offered for splits", spec.path, exc)
            finally:
                self.hashing.pop(spec.id, None)
            on_change()
        self.done.set()
