"""An HTTP client for a running node's console API: what `meshp2p blackboard` and its MCP server call.

Errors come back as MeshP2PError with the node's own message and hint, or, when the node cannot be reached,
with the command that starts one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from meshp2p.access.files import read_console_token
from meshp2p.errors import MeshP2PError
from meshp2p.home import console_token_file, runtime_file
from meshp2p.hosts import LOOPBACK_HOST

TIMEOUT_S = 30.0


def console_url(port: int | None) -> str:
    """The console of the node on `port` here, or of the node this $MESHP2P_HOME runs (its node.json)."""
    if port is not None:
        return f"http://{LOOPBACK_HOST}:{port}"
    path = runtime_file()
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MeshP2PError(f"no running node found ({path} is missing or unreadable)",
                           hint="start one with `meshp2p up`, or pass --console PORT") from exc
    url = info.get("console_url")
    if not url:
        raise MeshP2PError("the running node has no console API", hint="restart it without --console 0")
    return str(url)


def console_headers() -> dict[str, str]:
    """The console token of the node this $MESHP2P_HOME runs, when it wrote one: its write endpoints need it (or
    an API key) while API keys are on, and only this user can read it."""
    token = read_console_token(console_token_file())
    return {} if token is None else {"Authorization": f"Bearer {token}"}


class ConsoleClient:
    def __init__(self, port: int | None = None) -> None:
        self.base = console_url(port)
        self.http = httpx.Client(base_url=self.base, timeout=TIMEOUT_S, headers=console_headers())

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, params=_clean(params))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def events(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Server-sent events from `path`, each `data:` line decoded as JSON; runs until the node closes it."""
        try:
            with self.http.stream("GET", path, params=_clean(params), timeout=httpx.Timeout(TIMEOUT_S, read=None)) as r:
                if r.status_code != 200:
                    r.read()
                    raise _error(r)
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        yield json.loads(line[5:])
        except httpx.HTTPError as exc:
            raise _unreachable(self.base, exc) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(self.base, exc) from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json()


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}


def _unreachable(base: str, exc: Exception) -> MeshP2PError:
    return MeshP2PError(f"could not reach the node at {base}: {exc}",
                        hint="is it running? (`meshp2p up`; or pass --console PORT)")


def _error(response: httpx.Response) -> MeshP2PError:
    try:
        error = response.json().get("error", {})
        message, hint = error.get("message") or response.text, error.get("hint")
    except (ValueError, AttributeError):
        message, hint = response.text or f"HTTP {response.status_code}", None
    return MeshP2PError(str(message), hint=hint)
