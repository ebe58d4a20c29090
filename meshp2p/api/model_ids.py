"""Which model a request means, and where that model is served: here, elsewhere in the mesh, or nowhere.

Rules:
- the `model` field must equal a model id exactly;
- a missing or empty `model`, or the alias `"default"`, means this node's default model (its first `--model`, or
  the embedded one); on a node that serves none (an API client) it means the model served by the most nodes of
  the mesh (ties: the smallest id);
- the servers of the model are this node's own (when it is ready, or when no other node serves the model) and
  every other node's that serves it; mesh/routing.py picks among them (local first, sessions stick) and
  backends/failover.py tries them in that order;
- a model nobody serves but some member has on disk gets 503 + Retry-After: the request is counted as demand,
  and the election makes a standby node load it; any other id gets 404 listing the ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from meshp2p.api.errors import NOT_FOUND, UNAVAILABLE, ApiError
from meshp2p.api.gateway import MeshGateway
from meshp2p.backends.base import Backend, BackendRequest, Reply
from meshp2p.backends.http11 import UpstreamPool
from meshp2p.backends.local import LocalBackend
from meshp2p.inference.llama_server import LlamaServer
from meshp2p.mesh.routing import ServerCandidate

DEFAULT_ALIAS = "default"
PROMOTION_RETRY_S = 5


#: The local server's name among a model's candidates on a node outside any mesh (no peer id to use).
LOCAL_CANDIDATE = "local"


class RequestLoad:
    """How busy this node is: what its status gossips as `load`, and the `requests` of /api/status.

    Its own object, not the Router's, so that the node's status can read it before the Router (which needs the
    mesh) exists.
    """

    def __init__(self) -> None:
        #: Requests being answered right now: the API's, and the mesh's through the tunnel.
        self.in_flight = 0
        #: Requests answered by this node's own llama-servers, per model (its clients' and the mesh's).
        self.served: Counter[str] = Counter()

    def started(self, model_id: str | None = None) -> None:
        """A request is being answered; with `model_id`, by this node's own server of that model."""
        self.in_flight += 1
        if model_id is not None:
            self.served[model_id] += 1

    def done(self) -> None:
        self.in_flight -= 1


class Router:
    def __init__(self, servers: Mapping[str, LlamaServer], pool: UpstreamPool,
                 gateway: MeshGateway | None = None, load: RequestLoad | None = None) -> None:
        #: Live: the node's fleet adds and removes servers while it runs.
        self._local = servers
        self.pool = pool
        self.gateway = gateway
        self.load = load if load is not None else RequestLoad()

    @property
    def servers(self) -> list[LlamaServer]:
        return list(self._local.values())

    def local(self, model_id: str) -> LlamaServer | None:
        return self._local.get(model_id)

    def remote_models(self) -> Mapping[str, Sequence[str]]:
        return {} if self.gateway is None else self.gateway.remote_models()

    def model_ids(self) -> list[str]:
        """Every model this node can answer for: its own first, then the mesh's."""
        return [*self._local, *sorted(m for m in self.remote_models() if m not in self._local)]

    def default_id(self) -> str | None:
        if self._local:
            return next(iter(self._local))
        remote = self.gateway.remote_models() if self.gateway is not None else {}
        if not remote:
            return None
        return min(remote, key=lambda m: (-len(remote[m]), m))

    def resolve_id(self, requested: object) -> str:
        """The model id a request means, or ApiError (400 bad type, 404 unknown)."""
        if requested is None or requested == "" or requested == DEFAULT_ALIAS:
            default = self.default_id()
            if default is None:
                raise ApiError(404, "no model is served in this mesh yet", type=NOT_FOUND, param="model",
                               code="model_not_found")
            return default
        if not isinstance(requested, str):
            raise ApiError(400, "'model' must be a string", param="model", code="invalid_type")
        if requested in self._local or requested in self.remote_models():
            return requested
        if self.gateway is not None and requested in self.gateway.offered_models():
            # Nobody serves it yet, but a member has it on disk: the demand just recorded makes one load it.
            raise ApiError(503, f"model '{requested}' is not served yet; a node that has it is being asked to "
                           f"load it, retry in {PROMOTION_RETRY_S} s", type=UNAVAILABLE, code="model_loading",
                           headers={"Retry-After": str(PROMOTION_RETRY_S)})
        available = ", ".join(self.model_ids()) or "none"
        raise ApiError(404, f"The model '{requested}' does not exist on this mesh. Available models: {available}",
                       type=NOT_FOUND, param="model", code="model_not_found")

    @property
    def local_id(self) -> str:
        return self.gateway.local_id if self.gateway is not None else LOCAL_CANDIDATE

    def route(self, model_id: str) -> tuple[list[ServerCandidate], Callable[[ServerCandidate], Backend]]:
        """Every server of `model_id` a request may go to, and the backend that reaches each: this node's own while
        it is ready (or when it is the only one: its 503 says when to retry), and every other node's."""
        candidates = list(self.gateway.remote_servers(model_id)) if self.gateway is not None else []
        local = self._local.get(model_id)
        if local is not None and (local.is_ready or not candidates):
            candidates.append(ServerCandidate(self.local_id, float(self.load.in_flight), 0.0, True))

        def backend_for(candidate: ServerCandidate) -> Backend:
            if candidate.local and local is not None:
                return _CountedLocal(self, LocalBackend(self.pool, local))
            assert self.gateway is not None, "a remote candidate comes from the gateway"
            return self.gateway.backend(candidate.peer_id)

        return candidates, backend_for


class _CountedLocal:
    """This node's server, counting what it is asked (the `requests` of /api/status, its clients' and the mesh's)."""

    def __init__(self, router: Router, backend: LocalBackend) -> None:
        self.router = router
        self.backend = backend

    async def send(self, request: BackendRequest) -> Reply:
        self.router.load.served[self.backend.server.model.id] += 1
        return await self.backend.send(request)
