"""The hub as meshp2p sees it: which hub and cache (`Hub`), a file on it (`HubFile`), what the hub said about one
(`RemoteFile`), the seam where mesh peers plug in (`PeerSource`), and huggingface_hub's errors said once as the
MeshP2PError a user can act on (`hub_error`). Plain data; the downloading is downloads.py's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from huggingface_hub import constants
from huggingface_hub import errors as hf_errors

from meshp2p.errors import AccessDenied, DownloadFailed, FileNotInRepo, MeshP2PError, ModelNotFound, NotDownloaded
from meshp2p.inference.progress import ProgressSink


@dataclass(frozen=True)
class Hub:
    """Which hub and cache. None everywhere (the default) is what huggingface_hub reads from the environment."""

    endpoint: str | None = None
    cache_dir: Path | None = None
    offline: bool | None = None

    def cache(self) -> Path:
        # Resolved, as huggingface_hub resolves it: the blob paths here and there must be the same strings.
        return Path(self.cache_dir if self.cache_dir is not None else constants.HF_HUB_CACHE).expanduser().resolve()

    def is_offline(self) -> bool:
        return constants.is_offline_mode() if self.offline is None else self.offline

    def url(self) -> str:
        return (self.endpoint or constants.ENDPOINT).rstrip("/")


@dataclass(frozen=True)
class HubFile:
    """One file of a model on the hub; `sha256` is a pin (the catalog's), else None (the hub's is used)."""

    repo: str
    filename: str
    revision: str = "main"
    sha256: str | None = None


@dataclass(frozen=True)
class RemoteFile:
    """What the hub said about a HubFile: the commit it resolved to, its blob id (etag), size and the bytes' URL."""

    file: HubFile
    commit: str
    etag: str
    size_bytes: int
    #: What the bytes must hash to: the catalog's pin, else the hub's LFS sha256; None for a small non-LFS file.
    sha256: str | None
    url: str


class PeerSource(Protocol):
    """Where a missing file can come from before the hub: the mesh's members (issue 13 part 4, p2p/model_fetch).

    Called from the thread that runs `ensure_files`; inside a running node that is a worker thread
    (`trio.to_thread.run_sync`), from which an implementation reaches the node's loop with `trio.from_thread.run`.
    """

    def fetch(self, remote: RemoteFile, into: Path, progress: ProgressSink) -> bool:
        """Write the whole file at `into` (which does not exist yet; partial files of a resumable fetch may be kept
        beside it) and say whether it did; False sends the caller to the hub. The caller checks size and SHA-256
        either way, so a peer cannot slip in another file. The content id (protocols/model-id.md) is
        `remote.sha256`'s first 16 bytes with `remote.size_bytes`."""
        ...


def hub_error(exc: Exception, file: HubFile, hub: Hub) -> MeshP2PError:
    """huggingface_hub's and httpx's errors, said once, as the MeshP2PError a user can act on."""
    what = f"{file.repo}/{file.filename}" if file.filename else file.repo
    page = f"https://huggingface.co/{file.repo}"
    if isinstance(exc, MeshP2PError):
        return exc
    if isinstance(exc, hf_errors.GatedRepoError):
        return AccessDenied(f"{file.repo} is a gated repo: Hugging Face answered "
                            f"{exc.response.status_code} for {what}",
                            hint=f"accept the licence on {page} (logged in), then set HF_TOKEN to a token of that "
                            "account (https://huggingface.co/settings/tokens)")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return ModelNotFound(f"there is no repo {file.repo} on {hub.url()} (or it is private)",
                             hint="check the name; a private repo needs HF_TOKEN set to a token that can read it")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ModelNotFound(f"{file.repo} has no revision {file.revision}", hint=f"see the repo's branches on {page}")
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return FileNotInRepo(f"{file.repo} has no file {file.filename}",
                             hint=f"see its files on {page}/tree/main; OWNER/REPO:QUANT picks one by quantisation")
    if isinstance(exc, hf_errors.HfHubHTTPError) and exc.response.status_code in (401, 403):
        return AccessDenied(f"Hugging Face refused {what} ({exc.response.status_code})",
                            hint=f"set HF_TOKEN to a token that can read {file.repo}, and accept its licence on {page}")
    if isinstance(exc, (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError)):
        return NotDownloaded(f"{what} is not in the Hugging Face cache and the hub may not be asked (offline)",
                             hint="unset HF_HUB_OFFLINE, or download it first where the hub can be reached")
    # Anything else is the network or the server (httpx's errors, a short read, a 5xx).
    return DownloadFailed(f"downloading {what} from {hub.url()} failed: {exc or type(exc).__name__}",
                          hint="check the network (and HF_ENDPOINT if set); run the command again: the download "
                          "resumes where it stopped")
