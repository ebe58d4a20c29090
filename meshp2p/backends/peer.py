"""The API's way into the mesh (api/gateway.py's MeshGateway), over the overlay's HTTP tunnel.

App-layer wiring: who serves what comes from the status gossip (MeshView), requests travel through
`/meshp2p/http/1.0.0`, and requests that arrive through the tunnel are answered by this node's own
llama-servers with the same code path as local API clients.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from meshp2p.api.errors import ApiError
from meshp2p.api.gateway import RemoteFailure
from meshp2p.api.proxy import BackendFailed, answer_locally
from meshp2p.api.upstream import UpstreamPool
from meshp2p.inference.llama_server import LlamaServer
from meshp2p.mesh.demand import DemandCounter
from meshp2p.mesh.routing import ServerCandidate
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.join_protocol import Membership
from meshp2p.p2p.tunnel import TunnelAnswer, TunnelClient, TunnelError, TunnelReply
from meshp2p.wire.tunnel import NOT_MEMBER, RequestHead

log = logging.getLogger("meshp2p.gateway")

_JSON = (("content-type", "application/json"),)
#: Hop-by-hop and framing headers never cross the tunnel (protocols/http-tunnel.md).
_NOT_TUNNELLED = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                            "upgrade", "host", "content-length", "authorization", "cookie", "server", "date"})


class _Reply:
    """A TunnelReply whose failures are the API's RemoteFailure."""

    def __init__(self, inner: TunnelReply) -> None:
        self._inner = inner
        self.status = inner.status
        self.headers = inner.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner.chunks():
                yield chunk
        except TunnelError as exc:
            raise RemoteFailure(exc.message, retry_after_s=exc.retry_after_s, started=exc.started) from exc

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def aclose(self) -> None:
        await self._inner.aclose()


class OverlayGateway:
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

    async def request(self, peer_id: str, path: str, body: bytes, *, model: str) -> _Reply:
        peer = PeerID.from_base58(peer_id)
        await self._ensure_reachable(peer)
        try:
            try:
                reply = await self.tunnel.request(peer, "POST", path, body, model=model, headers=_JSON)
            except TunnelError as exc:
                # It forgot our membership (it restarted, and our renewal has not reached it yet): prove it
                # again and retry once before this counts as a failure of that server.
                if exc.code != NOT_MEMBER or not await self.membership.ensure(peer):
                    raise
                log.info("%s had forgotten our membership; joined it again", peer)
                reply = await self.tunnel.request(peer, "POST", path, body, model=model, headers=_JSON)
        except TunnelError as exc:
            raise RemoteFailure(exc.message, retry_after_s=exc.retry_after_s) from exc
        return _Reply(reply)

    async def _ensure_reachable(self, peer: PeerID) -> None:
        """Teach libp2p the peer's addresses from its status (we may know it only through gossip relays)."""
        overlay = self.tunnel.overlay
        if peer in overlay.connected_peers():
            return
        view = self.view.peers.get(peer.to_base58())
        overlay.learn_addrs(peer, view.status.addrs if view is not None else ())


def tunnel_handler(servers: Mapping[str, LlamaServer], pool: UpstreamPool,
                   on_start: Callable[[str], None], on_done: Callable[[], None]) -> Any:
    """Answer tunnelled requests with this node's own llama-servers (never forwarded again: no loops)."""

    async def handle(peer: PeerID, head: RequestHead, body: bytes) -> TunnelAnswer:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise TunnelError("bad_request", f"the body is not JSON: {exc}") from exc
        model_id = head.model or (payload.get("model") if isinstance(payload, dict) else None)
        server = servers.get(model_id) if isinstance(model_id, str) else None
        if server is None:
            raise TunnelError("model_not_here", f"this node does not serve {model_id!r}", retry_after_s=1)
        if not server.is_ready:
            raise TunnelError("model_unavailable", f"{model_id} is {server.state.value}",
                              retry_after_s=server.retry_after_s())
        on_start(server.model.id)
        try:
            reply = await answer_locally(pool, server, head.path, payload, body, on_done=on_done,
                                         raise_mid_stream=True)
        except ApiError as exc:
            return TunnelAnswer(exc.status, _JSON, json.dumps(exc.body()).encode())
        headers = tuple((k.lower(), v) for k, v in reply.headers.items() if k.lower() not in _NOT_TUNNELLED)
        if reply.chunks is None:
            return TunnelAnswer(reply.status, headers, reply.body or b"")
        return TunnelAnswer(reply.status, headers, None, _failing_as_tunnel(reply.chunks))

    return handle


async def _failing_as_tunnel(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield chunk
    except BackendFailed as exc:
        raise TunnelError("backend_failed", str(exc), retry_after_s=1) from exc
