"""Which model a request means, and where that model is served: here, elsewhere in the mesh, or nowhere.

Rules:
- the `model` field must equal a model id exactly;
- a missing or empty `model`, or the alias `"default"`, means this node's default model (its first `--model`, or
  the embedded one); on a node that serves none (an API client) it means the model served by the most nodes of
  the mesh (ties: the smallest id);
- a model served here and ready is answered here (no network hop); a model served only elsewhere, or whose
  local llama-server is restarting, goes through the tunnel;
- a model nobody serves but some member has on disk gets 503 + Retry-After: the request is counted as demand,
  and the election makes a standby node load it; any other id gets 404 listing the ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from meshp2p.api.errors import NOT_FOUND, UNAVAILABLE, ApiError
from meshp2p.api.gateway import MeshGateway
from meshp2p.inference.llama_server import LlamaServer

DEFAULT_ALIAS = "default"
PROMOTION_RETRY_S = 5


class Router:
    def __init__(self, servers: Mapping[str, LlamaServer], gateway: MeshGateway | None = None) -> None:
        #: Live: the node's fleet adds and removes servers while it runs.
        self._local = servers
        self.gateway = gateway
        #: Requests being answered right now (gossiped as this node's load).
        self.in_flight = 0
        #: Requests answered by this node's own llama-servers, per model (its clients' and the mesh's).
        self.served: Counter[str] = Counter()

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

    def local_request_started(self, model_id: str) -> None:
        self.in_flight += 1
        self.served[model_id] += 1

    def request_done(self) -> None:
        self.in_flight -= 1
