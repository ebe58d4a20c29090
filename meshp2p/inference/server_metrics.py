"""Each local llama-server's own `/metrics` page (Prometheus text; meshp2p starts every server with `--metrics`),
read over loopback when this node's `/metrics` is read, so a scrape of the node shows its models' numbers too.

All servers are asked at once, each with SCRAPE_TIMEOUT_S: a server that is loading, restarting or stuck answers
nothing in time and is left out of that scrape (the caller counts it), rather than holding the whole page.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
import trio

from meshp2p.inference.llama_server import LlamaServer

SCRAPE_TIMEOUT_S = 1.0


async def read_server_metrics(servers: Mapping[str, LlamaServer], *,
                              timeout_s: float = SCRAPE_TIMEOUT_S) -> dict[str, str | None]:
    """Model id -> its server's metrics text, or None when it is not ready or did not answer 200 in time."""
    found: dict[str, str | None] = {model: None for model in servers}

    async def one(http: httpx.AsyncClient, model: str, server: LlamaServer) -> None:
        if not server.is_ready or server.port is None:
            return
        with trio.move_on_after(timeout_s):
            try:
                response = await http.get(f"{server.base_url}/metrics")
            except httpx.HTTPError:
                return
            if response.status_code == 200:
                found[model] = response.text

    async with httpx.AsyncClient(timeout=timeout_s) as http, trio.open_nursery() as nursery:
        for model, server in list(servers.items()):
            nursery.start_soon(one, http, model, server)
    return found
