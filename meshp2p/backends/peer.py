"""Another member's llama-server as a backend, through `/meshp2p/http/1.0.0`, and the mesh as the API sees it.

Who serves what comes from the status gossip (MeshView). A request to a peer travels through the tunnel; the
tunnel's failures are mapped here, once, to the BackendError family: a refusal or a broken exchange before the
answer's head is BackendUnavailable (another server may answer), a stream that breaks off is BackendBroke. A peer
that forgot our membership (it restarted) is joined again and asked once more before that counts as a failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from meshp2p.backends.base import JSON_HEADERS, BackendRequest, Reply, end_to_end
from meshp2p.errors import BackendBroke, BackendUnavailable
from meshp2p.mesh.demand import DemandCounter
from meshp2p.mesh.routing import ServerCandidate
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.join import Membership
from meshp2p.p2p.tunnel import TunnelClient, TunnelError, TunnelReply
from meshp2p.wire.tunnel import NOT_MEMBER

log = logging.getLogger(__name__)

class PeerBackend:
    """The server of a model on one peer."""

    def __init__(self, mesh: OverlayGateway, peer_id: str) -> None:
        self.mesh = mesh
        self.peer_id = peer_id

    async def send(self, request: BackendRequest) -> Reply:
        peer = PeerID.from_base58(self.peer_id)
        self.mesh.teach_addrs(peer)
        try:
            reply = await self._open(peer, request)
        except TunnelError as exc:
            raise BackendUnavailable(f"{self.peer_id} did not answer: {exc.message}",
                                     retry_after_s=exc.retry_after_s or 1) from exc
        headers = end_to_end(reply.headers)
        if request.stream and reply.status == 200:
            return Reply(reply.status, headers, None, self._chunks(reply), reply.aclose)
        try:
            body = b"".join([chunk async for chunk in reply.chunks()])
        except TunnelError as exc:  # nothing was passed on yet: for the client, this server did not answer
            raise BackendUnavailable(f"{self.peer_id} broke off its answer: {exc.message}",
                                     retry_after_s=exc.retry_after_s or 1) from exc
        finally:
            await reply.aclose()
        return Reply(reply.status, headers, body)

    async def _open(self, peer: PeerID, request: BackendRequest) -> TunnelReply:
        tunnel = self.mesh.tunnel
        try:
            return await tunnel.request(peer, "POST", request.path, request.raw, model=request.model,
                                        headers=JSON_HEADERS)
        except TunnelError as exc:
            # It forgot our membership (it restarted, and our renewal has not reached it yet): prove it again
            # and retry once before this counts as a failure of that server.
            if exc.code != NOT_MEMBER or not await self.mesh.membership.ensure(peer):
                raise
            log.info("%s had forgotten our membership; joined it again", peer)
            return await tunnel.request(peer, "POST", request.path, request.raw, model=request.model,
                                        headers=JSON_HEADERS)

    async def _chunks(self, reply: TunnelReply) -> AsyncIterator[bytes]:
        try:
            async for chunk in reply.chunks():
                yield chunk
        except TunnelError as exc:
            raise BackendBroke(f"{self.peer_id} broke off its answer: {exc.message}",
                               retry_after_s=exc.retry_after_s, code=exc.code) from exc
        finally:
            await reply.aclose()


class OverlayGateway:
    """The API's view of the mesh (api/gateway.py's MeshGateway): its servers, its demand, its backends."""

    def __init__(self, view: MeshView, tunnel: TunnelClient, demand: DemandCounter,
                 wanted: Callable[[], list[str]], membership: Membership,
                 clock: Callable[[], float] = time.time) -> None:
        self.view = view
        self.membership = membership
        self.wanted = wanted
        self.tunnel = tunnel
        self.demand = demand
        self.clock = clock

    @property
    def local_id(self) -> str:
        return self.view.self_id

    def remote_servers(self, model_id: str) -> Sequence[ServerCandidate]:
        me = self.view.self_id
        return [ServerCandidate(p.peer_id, p.status.load, self.view.peers[me].status.rtt_ms.get(p.peer_id)
                                if me in self.view.peers else None, False)
                for p in self.view.peers.values() if p.peer_id != me and model_id in p.status.loaded]

    def remote_models(self) -> Mapping[str, Sequence[str]]:
        models: dict[str, list[str]] = {}
        for p in self.view.peers.values():
            if p.peer_id != self.view.self_id:
                for m in p.status.loaded:
                    models.setdefault(m, []).append(p.peer_id)
        return models

    def wanted_models(self) -> Sequence[str]:
        return self.wanted()

    def offered_models(self) -> set[str]:
        """Models some member has on disk and could load (promotion), served or not."""
        return {m for p in self.view.peers.values() for m in p.status.available}

    def record_demand(self, model_id: str) -> None:
        self.demand.record(model_id, self.clock())

    def backend(self, peer_id: str) -> PeerBackend:
        return PeerBackend(self, peer_id)

    def teach_addrs(self, peer: PeerID) -> None:
        """Teach libp2p the peer's addresses from its status (we may know it only through gossip relays)."""
        if peer in self.tunnel.overlay.connected_peers():
            return
        view = self.view.peers.get(peer.to_base58())
        self.tunnel.overlay.learn_addrs(peer, view.status.addrs if view is not None else ())
