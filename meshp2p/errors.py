"""The one error hierarchy users catch.

Every error carries a `hint`: the next thing the user can do about it. The CLI prints both; the API maps
them to OpenAI-style JSON errors.
"""

from __future__ import annotations


class MeshP2PError(Exception):
    """Base of every error meshp2p raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  → {self.hint}"


class ConfigError(MeshP2PError):
    """A flag, environment variable or file the user gave cannot be used as it is."""


class BinaryNotFound(MeshP2PError):
    """llama-server or the RPC server could not be found."""


class BuildFailed(MeshP2PError):
    """The llama.cpp build recipe failed."""


class ModelNotFound(MeshP2PError):
    """A model name or path does not resolve to a GGUF file."""


class BackendError(MeshP2PError):
    """A model's server (this node's llama-server, or a peer's through the tunnel) did not answer, or broke off.

    `code` is what the client is told (OpenAI's `error.code`); `retry_after_s` when trying again makes sense;
    `started` once part of the answer had been sent on. api/errors.py maps the family to HTTP statuses.
    """

    code = "backend_failed"

    def __init__(self, message: str, *, retry_after_s: int | None = None, started: bool = False,
                 code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s
        self.started = started
        if code is not None:
            self.code = code


class BackendUnavailable(BackendError):
    """Nothing was answered: the server is loading, restarting or failed, unreachable, or refused; another server
    (or the same one after `retry_after_s`) may answer."""

    code = "model_unavailable"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code=code, hint=hint)


class BackendBroke(BackendError):
    """The answer broke off after it had started (a backend crash, a peer gone mid-stream)."""

    def __init__(self, message: str, *, retry_after_s: int | None = None, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s, started=True, code=code, hint=hint)


class UnsupportedRequest(MeshP2PError):
    """The model cannot do what the request asks (embeddings from a model that has none); `param` names the field."""

    def __init__(self, message: str, *, param: str, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.param = param
        self.code = code


class PortInUse(MeshP2PError):
    """A port meshp2p must listen on is taken."""


class PostRefused(MeshP2PError):
    """The blackboard will not do what it was asked; `reason` says why: `empty`, `too_long`, `bad_tags`,
    `rate_limited` (posting), `not_found`, `ambiguous` (finding a post by id prefix). api/errors.py gives each
    its HTTP status."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class DownloadFailed(MeshP2PError):
    """A model file could not be fetched from Hugging Face (network, the hub, a file that changed under us)."""


class AccessDenied(DownloadFailed):
    """The hub refused the file (401/403): a gated repo whose licence is not accepted, or a private one."""


class NotDownloaded(DownloadFailed):
    """The file is not on disk and this node may not download it (HF_HUB_OFFLINE, a --client node)."""


class NotEnoughDisk(DownloadFailed):
    """The download would not fit on the disk that holds the Hugging Face cache."""


class ChecksumMismatch(DownloadFailed):
    """A downloaded file's size or SHA-256 is not what the hub (or the catalog) says; the bad file was removed."""


class FileNotInRepo(ModelNotFound):
    """The repo exists but has no such file (the hub's EntryNotFound)."""


class DraftMismatch(ConfigError):
    """A draft model cannot speculate for its main model: their vocabularies differ (inference/vocab.py)."""
