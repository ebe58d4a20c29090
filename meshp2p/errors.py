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


class BackendUnavailable(MeshP2PError):
    """A model is known but its llama-server is not ready (loading, restarting or failed)."""

    def __init__(self, message: str, *, retry_after_s: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class PortInUse(MeshP2PError):
    """A port meshp2p must listen on is taken."""


class PostRefused(MeshP2PError):
    """The node will not post what it was asked to (empty, too long, over its rate); `status` is the HTTP status
    the console answers with."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
