"""What the API needs from the mesh, as an interface: the app layer implements it over the overlay.

Keeping it a Protocol keeps `api/` free of libp2p: the API asks "who serves X", "send this there", and
"someone asked for X"; how that travels is the mesh gateway's business.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from meshp2p.mesh.routing import ServerCandidate


class RemoteReply(Protocol):
    status: int
    headers: tuple[tuple[str, str], ...]

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def read(self) -> bytes: ...

    async def aclose(self) -> None: ...


class RemoteFailure(Exception):
    """A remote server refused or broke; `started` when part of the body had already arrived."""

    def __init__(self, message: str, *, retry_after_s: int | None = None, started: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.started = started


class MeshGateway(Protocol):
    @property
    def local_id(self) -> str: ...

    def remote_servers(self, model_id: str) -> Sequence[ServerCandidate]:
        """Other nodes serving `model_id` now (from status gossip)."""
        ...

    def remote_models(self) -> Mapping[str, Sequence[str]]:
        """model id -> peer ids of the other nodes serving it."""
        ...

    def wanted_models(self) -> Sequence[str]:
        """Models asked for in the mesh that nobody serves."""
        ...

    def offered_models(self) -> set[str]:
        """Models some member could load if asked (served or not)."""
        ...

    async def request(self, peer_id: str, path: str, body: bytes, *, model: str) -> RemoteReply:
        """Send a request through the tunnel; raise RemoteFailure when the peer refuses or breaks."""
        ...

    def record_demand(self, model_id: str) -> None: ...
