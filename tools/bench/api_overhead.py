#!/usr/bin/env python3
"""What the meshp2p API adds on top of llama-server: tokens/s and time-to-first-token, side by side, per API.

Starts `meshp2p up` (the embedded gemma-3-270m unless --model), then streams the same prompt through each API
(/v1/completions, /v1/chat/completions, /v1/responses, /v1/messages), alternately directly from the node's
llama-server and through :PORT, in one run, and prints one row per API and path with the ratios.
Targets (issues 2 and 14): tok/s ratio >= 0.99, TTFT added <= 2 ms at p50.

llama-server's own time to the first token varies by several ms from request to request on a shared 2-core machine,
which buries a 2 ms difference in dozens of rounds. Every request asks `timings_per_token`, so where an API's
first token event carries llama-server's `timings.prompt_ms`, a second figure ("less server") takes that time out
of both paths before pairing them: what is left is the way to llama-server and back, which is what meshp2p adds to.

`--with-key` creates an API key with `meshp2p keys create --json` in the node's MESHP2P_HOME before the node
starts, and the meshp2p rows send it (`Authorization: Bearer`). While a keys file exists the node asks every request
for a key, so a keyless row cannot run beside it: compare with a run without `--with-key`. A row is a `Path`; a
second way through the node is one more entry in `routes_of()`.

usage: .venv/bin/python tools/bench/api_overhead.py [--model M] [--rounds 20] [--tokens 128] [--threads 2]
                                                    [--api chat --api messages ...] [--with-key]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import Sample, free_port, is_token, percentile, stream_once  # a sibling module: see streaming.py

READY_TIMEOUT_S = 180.0
PROMPT = "The history of the city of Paris begins"
TOK_S_RATIO_TARGET = 0.99
TTFT_ADDED_TARGET_MS = 2.0
#: How `meshp2p keys create --json` prints the key text (meshp2p/access/keys.py: KEY_PREFIX).
KEY_PREFIX = "mp-sk-"


def _event(line: str) -> dict[str, Any] | None:
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    event: dict[str, Any] = json.loads(line[6:])
    return event


def is_chat_token(line: str) -> bool:
    event = _event(line)
    return bool(event and event.get("choices") and event["choices"][0].get("delta", {}).get("content"))


def is_responses_token(line: str) -> bool:
    event = _event(line)
    return bool(event and event.get("type") == "response.output_text.delta" and event.get("delta"))


def is_messages_token(line: str) -> bool:
    event = _event(line)
    return bool(event and event.get("type") == "content_block_delta" and event["delta"].get("text"))


@dataclass(frozen=True)
class Api:
    """One API: its path, the body that asks it for `tokens` tokens of PROMPT, and how its stream shows a token."""

    name: str
    path: str
    body: Callable[[str, int], dict[str, object]]
    token: Callable[[str], bool]


MESSAGES = [{"role": "user", "content": PROMPT}]


#: An explicit `stop` (`stop_sequences` on Anthropic's): meshp2p adds a model's default stop strings (the embedded
#: model's transcript turns) to a request without one, and the direct path must be asked the same thing.
NO_STOP: list[str] = []

APIS = {api.name: api for api in (
    Api("completions", "/v1/completions",
        lambda m, n: {"model": m, "prompt": PROMPT, "max_tokens": n, "stop": NO_STOP}, is_token),
    Api("chat", "/v1/chat/completions",
        lambda m, n: {"model": m, "messages": MESSAGES, "max_tokens": n, "stop": NO_STOP}, is_chat_token),
    Api("responses", "/v1/responses",
        lambda m, n: {"model": m, "input": PROMPT, "max_output_tokens": n, "stop": NO_STOP}, is_responses_token),
    Api("messages", "/v1/messages",
        lambda m, n: {"model": m, "messages": MESSAGES, "max_tokens": n, "stop_sequences": NO_STOP},
        is_messages_token),
)}


@dataclass(frozen=True)
class Route:
    """One way to a model: a base URL and the headers sent on it (a row of the table, per API)."""

    name: str
    base: str
    headers: dict[str, str] = field(default_factory=dict)


def routes_of(backend_port: int, api_port: int, key: str | None) -> list[Route]:
    direct = Route("direct", f"http://127.0.0.1:{backend_port}")
    if key is None:
        return [direct, Route("meshp2p", f"http://127.0.0.1:{api_port}")]
    return [direct, Route("meshp2p+key", f"http://127.0.0.1:{api_port}", {"Authorization": f"Bearer {key}"})]


def meshp2p(*args: str, home: Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshp2p", *args], env={**os.environ, "MESHP2P_HOME": str(home)},
                          capture_output=True, text=True, **kwargs)


def create_key(home: Path) -> str:
    """A new API key in `home`, by the CLI (which knows the keys file); exits if this meshp2p has no `keys`."""
    if meshp2p("keys", "--help", home=home, timeout=60).returncode != 0:
        raise SystemExit("--with-key: this meshp2p has no `meshp2p keys` command (API keys are not merged yet); "
                         "run without --with-key")
    done = meshp2p("keys", "create", "--json", home=home, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"--with-key: `meshp2p keys create --json` failed ({done.returncode}):\n{done.stderr}")
    found = [v for v in _strings(json.loads(done.stdout)) if v.startswith(KEY_PREFIX)]
    if not found:
        raise SystemExit(f"--with-key: no key ({KEY_PREFIX}...) in the output of `meshp2p keys create --json`:\n"
                         f"{done.stdout}")
    return found[0]


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def start_node(args: argparse.Namespace, home: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    api, console = free_port(), free_port()
    cmd = [sys.executable, "-m", "meshp2p", "up", "--port", str(api), "--console", str(console),
           "--threads", str(args.threads), "--no-build"]
    if args.model:
        cmd += ["--model", args.model]
    proc = subprocess.Popen(cmd, env={**os.environ, "MESHP2P_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, api, console


def wait_backend_port(proc: subprocess.Popen[bytes], console: int) -> tuple[str, int]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"meshp2p up exited with {proc.returncode}")
        try:
            model = httpx.get(f"http://127.0.0.1:{console}/api/status", timeout=2).json()["models"][0]
            if model["state"] == "ready":
                return model["id"], model["port"]
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("node not ready in time")


def measure(apis: list[Api], routes: list[Route], model_id: str, args: argparse.Namespace
            ) -> dict[tuple[str, str], list[Sample]]:
    """Every (API, path) pair `args.rounds` times, interleaved: each round goes through every API, and each API's
    paths swap order from round to round, so drift in the machine's load falls on every row alike.

    The APIs' prompts differ (chat templates), and llama-server reuses its cache only for the prompt it saw last:
    before an API's timed pair, one uncounted 1-token request puts its prompt in the cache, so every timed request
    starts from the same cache state (without it, whichever path came first after another API paid for the prompt).
    """
    def body(api: Api, tokens: int, stream: bool) -> dict[str, object]:
        return {**api.body(model_id, tokens), "temperature": 0, "stream": stream, "ignore_eos": True,
                "timings_per_token": True}

    samples: dict[tuple[str, str], list[Sample]] = {(a.name, r.name): [] for a in apis for r in routes}
    with httpx.Client(timeout=120) as client:
        def warm(api: Api) -> None:
            try:
                client.post(routes[0].base + api.path, json=body(api, 1, False)).raise_for_status()
            except httpx.RemoteProtocolError:  # llama-server closed an idle keep-alive connection: see stream_once
                client.post(routes[0].base + api.path, json=body(api, 1, False)).raise_for_status()

        def once(api: Api, route: Route) -> Sample:
            return stream_once(client, route.base + api.path, body(api, args.tokens, True), token=api.token,
                               headers=route.headers)

        for api in apis:  # warm every path (connections, the prompt cache)
            for route in routes:
                once(api, route)
        for i in range(args.rounds):
            for k, api in enumerate(apis):
                warm(api)
                for route in routes if (i + k) % 2 == 0 else reversed(routes):
                    samples[api.name, route.name].append(once(api, route))
    return samples


def report(apis: list[Api], routes: list[Route], samples: dict[tuple[str, str], list[Sample]]) -> None:
    print(f"{'api':13}{'path':13}{'TTFT p50 ms':>12}{'TTFT p90 ms':>12}{'tok/s p50':>11}{'tokens':>8}"
          f"{'tok/s ratio':>13}{'TTFT added p50':>16}{'less server':>13}")
    for api in apis:
        direct = samples[api.name, routes[0].name]
        tps_direct = statistics.median(s.tokens_per_s for s in direct)
        for route in routes:
            rows = samples[api.name, route.name]
            ttfts = [s.ttft_ms for s in rows]
            tps = statistics.median(s.tokens_per_s for s in rows)
            line = (f"{api.name:13}{route.name:13}{percentile(ttfts, 0.5):>12.2f}{percentile(ttfts, 0.9):>12.2f}"
                    f"{tps:>11.1f}{statistics.median(s.tokens for s in rows):>8.0f}")
            if route is not routes[0]:
                ratio = tps / tps_direct
                added = statistics.median(p.ttft_ms - d.ttft_ms for d, p in zip(direct, rows, strict=True))
                line += (f"{ratio:>11.3f}{' ' if ratio >= TOK_S_RATIO_TARGET else '!'} "
                         f"{added:>13.2f}{' ' if added <= TTFT_ADDED_TARGET_MS else '!'}")
                transport = [(p.transport_ms, d.transport_ms) for d, p in zip(direct, rows, strict=True)]
                paired = [p - d for p, d in transport if p is not None and d is not None]
                if len(paired) * 2 >= len(rows):
                    less = statistics.median(paired)
                    line += f"{less:>11.2f}{' ' if less <= TTFT_ADDED_TARGET_MS else '!'}"
                else:
                    line += f"{'-':>11} "
            print(line)
    print(f"targets: tok/s ratio >= {TOK_S_RATIO_TARGET}, TTFT added p50 <= {TTFT_ADDED_TARGET_MS} ms "
          "(! marks a miss); 'less server': the TTFT added with llama-server's own time to the first token "
          "(its timings.prompt_ms) taken out of both paths, where its events carry it ('-' where not)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model to serve (default: the embedded gemma-3-270m)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds; each streams every API once per path "
                        "(default 20)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per request (default 128)")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads (default 2)")
    parser.add_argument("--api", action="append", choices=list(APIS), dest="apis",
                        help="an API to measure (repeat; default all)")
    parser.add_argument("--with-key", action="store_true",
                        help="create an API key (`meshp2p keys create --json`) and send it through meshp2p")
    args = parser.parse_args()
    apis = [APIS[name] for name in (args.apis or APIS)]

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if not args.model:
            # Reuse the assembled default model of the usual data dir when there is one.
            store = Path(os.environ.get("MESHP2P_HOME", Path.home() / ".meshp2p")) / "models"
            if store.is_dir():
                (home / "models").symlink_to(store)
        key = create_key(home) if args.with_key else None
        load_before = os.getloadavg()
        proc, api_port, console = start_node(args, home)
        try:
            model_id, backend_port = wait_backend_port(proc, console)
            routes = routes_of(backend_port, api_port, key)
            samples = measure(apis, routes, model_id, args)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        load_after = os.getloadavg()

    print(f"model {model_id}, {args.rounds} interleaved rounds, {args.tokens} streamed tokens per request, "
          f"llama-server --threads {args.threads}; load average (1/5/15 min) before "
          f"{' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in load_after)}")
    report(apis, routes, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
