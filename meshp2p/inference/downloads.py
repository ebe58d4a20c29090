"""Model files from Hugging Face into its standard cache, through `huggingface_hub`.

The cache is huggingface_hub's own (`$HF_HUB_CACHE`, default `$HF_HOME/hub`, default `~/.cache/huggingface/hub`),
shared with every other HF tool: a file already there is used as it is, with no request. `HF_ENDPOINT`,
`HF_HUB_OFFLINE`, `HF_TOKEN` and `HF_HOME` are read by huggingface_hub, not here; `Hub` only lets a caller (the
tests) name an endpoint, a cache or offline mode explicitly instead.

`ensure_files` is the one way in: given the files of one model, it returns their paths in the cache, fetching what
is missing. For each missing file, in order:
1. the hub is asked what the file is (huggingface_hub's `get_hf_file_metadata`: a HEAD on `/resolve/`, whose
   headers give the commit, the size and the LFS sha256 as `X-Linked-Etag`);
2. the disk is checked for room for everything still to fetch, before any byte moves;
3. `PeerSource.fetch` may supply the bytes (mesh members first, issue 13 part 4); otherwise they come from the hub
   by http_fetch.py (huggingface_hub's headers, token, timeout and proxies; its own `http_get` moved a third of
   curl's speed), hashed as they arrive;
4. size and SHA-256 are checked (the catalog's pin when it has one, else the hub's LFS sha256); a file that fails is
   removed from the cache and `ChecksumMismatch` raised;
5. `hf_hub_download` then files it in the cache (refs, snapshot symlink) exactly as it files its own downloads.

Why not `hf_hub_download` for the bytes too: in huggingface_hub 2.x (2.4 here; its PR #4228) an interrupted
download is thrown away (each attempt writes its own `<etag>.<random>.incomplete` and deletes it on failure), so
Ctrl-C at 39 of 40 GB would start again from zero. Here the bytes go to `blobs/<etag>.incomplete` (the name older
huggingface_hub versions resumed from) under the same lock file huggingface_hub uses, and a later run resumes with a
`Range` request. Within one run, a cut connection is resumed from the byte it stopped at (http_fetch.py). Files
above huggingface_hub's plain-HTTP limit (50 GB) are left to `hf_hub_download` (hf-xet), which resumes as hf-xet
does.

Split GGUFs (`NAME-00001-of-00003.gguf`) are one model: every part is fetched into one snapshot folder and
llama-server is given the first, finding the others beside it.

The plain data (Hub, HubFile, RemoteFile, PeerSource) and the error mapping are in hub.py; file-name rules (split
parts, quantisation tags) in gguf_names.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.file_download import repo_folder_name, try_to_load_from_cache

# From their modules: huggingface_hub.utils is a lazy facade that type checkers do not see re-exporting them.
from huggingface_hub.utils._fixes import WeakFileLock
from huggingface_hub.utils._headers import build_hf_headers

from meshp2p.errors import ChecksumMismatch, DownloadFailed, NotDownloaded, NotEnoughDisk
from meshp2p.inference.http_fetch import fetch_to
from meshp2p.inference.hub import Hub, HubFile, PeerSource, RemoteFile, hub_error
from meshp2p.inference.progress import SILENT, ProgressSink

#: Metadata requests (HEAD on a file, the repo's file list) give up after this; huggingface_hub's own default for the
#: file list is no timeout at all.
METADATA_TIMEOUT_S = 30.0
HASH_CHUNK_BYTES = 8 * 2**20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def cached_path(file: HubFile, hub: Hub) -> Path | None:
    """The file in the cache at its revision, or None; never a request."""
    found = try_to_load_from_cache(file.repo, file.filename, cache_dir=hub.cache(), revision=file.revision)
    return Path(found) if isinstance(found, str) else None


def ensure_files(files: Sequence[HubFile], *, hub: Hub, title: str, progress: ProgressSink = SILENT,
                 allow_download: bool = True, peers: PeerSource | None = None,
                 received: Callable[[int], None] | None = None) -> tuple[Path, ...]:
    """The paths of `files` in the cache, in order, fetching the missing ones (see the module docstring).
    `received(n)` hears of every `n` bytes that came from the hub over plain HTTP (a node's download counter:
    the progress also advances for bytes already on disk, so it cannot count them)."""
    paths = [cached_path(f, hub) for f in files]
    missing = [f for f, p in zip(files, paths, strict=True) if p is None]
    if not missing:
        return tuple(p for p in paths if p is not None)
    require_downloads(title, hub, allowed=allow_download)
    remotes = [describe(f, hub) for f in missing]
    check_disk(remotes, hub, title)
    total = sum(r.size_bytes for r in remotes)
    progress.begin(f"downloading {title}", total=total, unit="bytes")
    try:
        for remote in remotes:
            if len(remotes) > 1:
                progress.update(stage=remote.file.filename)
            fetch_blob(remote, hub, progress, peers, received)
    except BaseException:
        progress.end(stage="stopped", keep=True)
        raise
    progress.end(stage="done", keep=True)
    result = [p if p is not None else file_in_cache(f, hub) for f, p in zip(files, paths, strict=True)]
    if len({p.parent for p in result}) > 1:
        raise DownloadFailed(f"the parts of {title} are in different snapshots of the repo (it changed meanwhile)",
                             hint="run the command again: the parts already here are not downloaded again")
    return tuple(result)


def require_downloads(title: str, hub: Hub, *, allowed: bool) -> None:
    """NotDownloaded, before any request, when this node may not download (a --client node, HF_HUB_OFFLINE)."""
    if allowed and not hub.is_offline():
        return
    why = "HF_HUB_OFFLINE is set" if allowed else "this is a --client node, which never downloads"
    raise NotDownloaded(f"{title} is not in the Hugging Face cache ({hub.cache()}) and {why}",
                        hint="download it first where the hub can be reached (`meshp2p download NAME`), with the "
                        "same HF_HOME; or unset HF_HUB_OFFLINE")


def describe(file: HubFile, hub: Hub) -> RemoteFile:
    """Ask the hub what `file` is (one HEAD, following the hub's own redirects, not the CDN's)."""
    url = hf_hub_url(file.repo, file.filename, revision=file.revision, endpoint=hub.endpoint)
    try:
        meta = get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, endpoint=hub.endpoint)
    except Exception as exc:
        raise hub_error(exc, file, hub) from exc
    if meta.commit_hash is None or meta.etag is None or meta.size is None:
        raise DownloadFailed(f"{hub.url()} did not describe {file.repo}/{file.filename} (commit, etag or size "
                             "missing): it does not look like a Hugging Face hub",
                             hint="check HF_ENDPOINT (unset, it is https://huggingface.co)")
    lfs_sha = meta.etag if _SHA256.match(meta.etag) else None
    if file.sha256 is not None and lfs_sha is not None and lfs_sha != file.sha256:
        raise ChecksumMismatch(
            f"{file.repo}/{file.filename} on the hub has sha256 {lfs_sha}, but the catalog pins {file.sha256}",
            hint="the repo changed the file: update the catalog entry (or pass hf://REPO/FILE to take the hub's)")
    return RemoteFile(file=file, commit=meta.commit_hash, etag=meta.etag, size_bytes=meta.size,
                      sha256=file.sha256 or lfs_sha, url=meta.location or url)


def check_disk(remotes: Sequence[RemoteFile], hub: Hub, title: str) -> None:
    """Refuse to start a download that cannot fit: what is still to fetch against the free space of the cache's disk."""
    needed = 0
    for r in remotes:
        partial = _incomplete(_blob(r, hub))
        needed += r.size_bytes - (partial.stat().st_size if partial.is_file() else 0)
    where = hub.cache()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise NotEnoughDisk(
            f"{title} needs {_gb(needed)} more on disk, but {where} has {_gb(free)} free",
            hint="free some space there, or point HF_HOME (or HF_HUB_CACHE) at a disk with room")


def fetch_blob(remote: RemoteFile, hub: Hub, progress: ProgressSink, peers: PeerSource | None,
               received: Callable[[int], None] | None = None) -> None:
    """Put the file's checked bytes at `blobs/<etag>` (resuming `blobs/<etag>.incomplete`), unless already there."""
    blob = _blob(remote, hub)
    if remote.size_bytes > constants.MAX_HTTP_DOWNLOAD_SIZE:
        _download_with_hf(remote, hub, progress)
        return
    folder = repo_folder_name(repo_id=remote.file.repo, repo_type="model")
    lock = hub.cache() / ".locks" / folder / f"{remote.etag}.lock"  # huggingface_hub's own lock for this blob
    blob.parent.mkdir(parents=True, exist_ok=True)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(lock)):
        if blob.is_file():
            progress.update(advance=remote.size_bytes)
            return
        fetched = blob.with_name(blob.name + ".from-peers")
        if remote.sha256 is not None and peers is not None and peers.fetch(remote, fetched, progress):
            verify(fetched, remote, progress)
            fetched.replace(blob)
            return
        partial = _incomplete(blob)
        if partial.is_file() and partial.stat().st_size > remote.size_bytes:
            partial.unlink()  # longer than the file: not a prefix of it
        digest = _http_download(remote, hub, partial, progress, received)
        verify(partial, remote, progress, sha256=digest)
        partial.replace(blob)


def file_in_cache(file: HubFile, hub: Hub) -> Path:
    """File a blob that is in `blobs/` under its repo, revision and name (huggingface_hub makes the refs and the
    snapshot link; with the blob present it downloads nothing)."""
    try:
        return Path(hf_hub_download(file.repo, file.filename, revision=file.revision, cache_dir=hub.cache(),
                                    endpoint=hub.endpoint, etag_timeout=METADATA_TIMEOUT_S))
    except Exception as exc:
        raise hub_error(exc, file, hub) from exc


def verify(path: Path, remote: RemoteFile, progress: ProgressSink = SILENT, *, sha256: str | None = None) -> None:
    """Size, then SHA-256 when known (`sha256`: already computed as the bytes arrived, else read here); a file
    that fails is deleted."""
    name = f"{remote.file.repo}/{remote.file.filename}"
    size = path.stat().st_size
    if size != remote.size_bytes:
        path.unlink()
        raise ChecksumMismatch(f"{name} arrived with {size} bytes instead of {remote.size_bytes}; it was removed",
                               hint="run the command again to download it afresh")
    if remote.sha256 is None:
        return
    if sha256 is None:
        progress.update(stage=f"checking the sha256 of {remote.file.filename}")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(HASH_CHUNK_BYTES):
                digest.update(block)
        sha256 = digest.hexdigest()
    if sha256 != remote.sha256:
        path.unlink()
        raise ChecksumMismatch(
            f"{name} does not match its sha256 (expected {remote.sha256}, got {sha256}); it was removed",
            hint="run the command again to download it afresh; if it fails again, the server at "
            f"{urlsplit(remote.url).netloc} serves a damaged file")


@dataclass(frozen=True)
class ListedFile:
    """A file in a repo's listing."""

    name: str
    size_bytes: int | None
    sha256: str | None


def repo_listing(repo: str, revision: str, hub: Hub) -> list[ListedFile]:
    """The repo's files from the hub's model info (`GET /api/models/REPO/revision/REV?blobs=true`)."""
    try:
        info = HfApi(endpoint=hub.endpoint).model_info(repo, revision=revision, files_metadata=True,
                                                         timeout=METADATA_TIMEOUT_S)
    except Exception as exc:
        raise hub_error(exc, HubFile(repo, "", revision), hub) from exc
    return [ListedFile(s.rfilename, s.size, s.lfs.sha256 if s.lfs else None) for s in info.siblings or []]


def cached_listing(repo: str, revision: str, hub: Hub) -> list[str]:
    """The files of the repo's cached snapshot at `revision` (what a cache lookup could find), without a request."""
    folder = hub.cache() / repo_folder_name(repo_id=repo, repo_type="model")
    ref = folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = folder / "snapshots" / commit
    if not snapshot.is_dir():
        return []
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())


def _http_download(remote: RemoteFile, hub: Hub, partial: Path, progress: ProgressSink,
                   received: Callable[[int], None] | None = None) -> str:
    """The bytes into `partial` (resumed), by http_fetch.py; returns their SHA-256."""
    resume = partial.stat().st_size if partial.is_file() else 0
    if resume:
        progress.update(advance=resume)

    def arrived(n: int) -> None:
        progress.update(advance=n)
        if received is not None:
            received(n)

    try:
        return fetch_to(remote.url, partial, size=remote.size_bytes, headers=build_hf_headers(),
                        timeout_s=constants.HF_HUB_DOWNLOAD_TIMEOUT, drop_auth_off=hub.url(),
                        on_bytes=arrived)
    except Exception as exc:
        raise hub_error(exc, remote.file, hub) from exc


def _download_with_hf(remote: RemoteFile, hub: Hub, progress: ProgressSink) -> None:
    """A file too big for plain HTTP: huggingface_hub (hf-xet) fetches it; checked once it is there."""
    try:
        path = Path(hf_hub_download(remote.file.repo, remote.file.filename, revision=remote.file.revision,
                                    cache_dir=hub.cache(), endpoint=hub.endpoint, etag_timeout=METADATA_TIMEOUT_S,
                                    tqdm_class=_bar_class(progress)))
    except Exception as exc:
        raise hub_error(exc, remote.file, hub) from exc
    blob = path.resolve()
    try:
        verify(blob, remote, progress)
    except ChecksumMismatch:
        path.unlink(missing_ok=True)
        raise


class _SinkBar:
    """The part of tqdm's interface huggingface_hub's downloads use (http_get's, and hf-xet's reporter), forwarded to
    a ProgressSink. `update_transfer` makes the xet reporter use one bar, not a second one for network bytes."""

    sink: ProgressSink = SILENT

    def __init__(self, *, initial: int = 0, total: int | None = None, **_: Any) -> None:
        self.n, self.total = initial, total
        self.format_dict: dict[str, Any] = {}
        if initial:
            self.sink.update(advance=initial)

    def __enter__(self) -> _SinkBar:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, n: float | None = 1) -> None:
        if n:
            self.n += int(n)
            self.sink.update(advance=int(n))

    def update_transfer(self, n: float | None = 1) -> None:
        return None

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        return None

    def set_description(self, *_: Any, **__: Any) -> None:
        return None

    def refresh(self) -> None:
        return None

    def close(self) -> None:
        return None


def _bar_class(sink: ProgressSink) -> Any:
    """A tqdm_class for huggingface_hub that reports to `sink` (a class: huggingface_hub looks at its attributes)."""
    return type("SinkBar", (_SinkBar,), {"sink": sink})


def _blob(remote: RemoteFile, hub: Hub) -> Path:
    return hub.cache() / repo_folder_name(repo_id=remote.file.repo, repo_type="model") / "blobs" / remote.etag


def _incomplete(blob: Path) -> Path:
    return blob.with_name(blob.name + ".incomplete")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**7 else f"{n / 1e6:.2f} MB"
