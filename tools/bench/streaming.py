"""What the API benchmarks share: one streamed completion timed token by token, ports, percentiles.

Imported by `api_overhead.py` and `tunnel_bench.py` as a sibling module (they put this folder on `sys.path`), so
each stays a plain script.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx


@dataclass
class Sample:
    ttft_ms: float
    tokens_per_s: float
    tokens: int
    #: llama-server's own time to the first token (`timings.prompt_ms` of the first token's event, sent when the
    #: request asks `timings_per_token`); None where the API's events do not carry it.
    server_ms: float | None = None

    @property
    def transport_ms(self) -> float | None:
        """TTFT less llama-server's own part: what the way to and from it took, free of the model's variance."""
        return None if self.server_ms is None else self.ttft_ms - self.server_ms


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stream_once(client: httpx.Client, url: str, body: dict[str, object], *,
                token: Callable[[str], bool] | None = None, headers: Mapping[str, str] | None = None) -> Sample:
    """One streamed answer; TTFT is request start → first token event, tok/s is over the rest.

    `token` tells an SSE line that carries generated text (default `is_token`: /v1/completions' events).
    llama-server sometimes closes an idle keep-alive connection just as it is reused; that attempt is
    repeated (on either path) instead of being counted.
    """
    try:
        return _stream_once(client, url, body, token or is_token, headers)
    except httpx.RemoteProtocolError:
        return _stream_once(client, url, body, token or is_token, headers)


def _stream_once(client: httpx.Client, url: str, body: dict[str, object], token: Callable[[str], bool],
                 headers: Mapping[str, str] | None) -> Sample:
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    server_ms = None
    with client.stream("POST", url, json=body, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not token(line):
                continue
            now = time.perf_counter()
            if tokens == 0:
                first = now
                server_ms = _prompt_ms(line)
            last = now
            tokens += 1
    if tokens < 2:
        raise RuntimeError(f"only {tokens} tokens streamed from {url}")
    return Sample((first - start) * 1000, (tokens - 1) / (last - first), tokens, server_ms)


def _prompt_ms(line: str) -> float | None:
    """`timings.prompt_ms` of an SSE data line's event, if it has one."""
    try:
        event = json.loads(line[6:])
    except ValueError:
        return None
    timings = event.get("timings") if isinstance(event, dict) else None
    value = timings.get("prompt_ms") if isinstance(timings, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def is_token(line: str) -> bool:
    """An SSE line that carries a generated token (not [DONE], not an empty or role-only event)."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return False
    event = json.loads(line[6:])
    return bool(event.get("choices")) and bool(event["choices"][0].get("text"))
