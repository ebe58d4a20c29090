"""What the API needs from the mesh, as an interface: the app layer implements it over the overlay
(backends/peer.py's OverlayGateway).

Keeping it a Protocol keeps `api/` free of libp2p: the API asks "who serves X", "which backend reaches that
server", and "someone asked for X"; how that travels is the backend's business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from meshp2p.backends.base import Backend
from meshp2p.mesh.routing import ServerCandidate


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

    def backend(self, peer_id: str) -> Backend:
        """The backend that reaches `peer_id`'s server through the tunnel."""
        ...

    def record_demand(self, model_id: str) -> None: ...
