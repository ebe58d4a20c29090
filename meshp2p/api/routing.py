"""Which backend answers a request, from its `model` field.

Rule: the exact model id; a missing or empty `model`, or the alias `"default"`, means the node's default
model (the first `--model`, or the embedded one). Anything else that is not an id gets 404 listing the ids.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshp2p.api.errors import NOT_FOUND, ApiError
from meshp2p.inference.llama_server import LlamaServer

DEFAULT_ALIAS = "default"


class LocalRouter:
    """Routes among this node's own llama-servers."""

    def __init__(self, servers: Mapping[str, LlamaServer]) -> None:
        #: Live: the node's fleet adds and removes servers while it runs.
        self._by_id = servers
        #: Requests being answered right now (gossiped as this node's load).
        self.in_flight = 0

    def request_done(self) -> None:
        self.in_flight -= 1

    @property
    def servers(self) -> list[LlamaServer]:
        return list(self._by_id.values())

    @property
    def default(self) -> LlamaServer | None:
        return next(iter(self._by_id.values()), None)

    def resolve(self, requested: object) -> LlamaServer:
        if requested is None or requested == "" or requested == DEFAULT_ALIAS:
            if self.default is None:
                raise ApiError(404, "this node serves no model (it runs as an API client)", type=NOT_FOUND,
                               param="model", code="model_not_found")
            return self.default
        if not isinstance(requested, str):
            raise ApiError(400, "'model' must be a string", param="model", code="invalid_type")
        server = self._by_id.get(requested)
        if server is None:
            available = ", ".join(self._by_id)
            raise ApiError(
                404,
                f"The model '{requested}' does not exist on this mesh. Available models: {available}",
                type=NOT_FOUND,
                param="model",
                code="model_not_found",
            )
        return server
