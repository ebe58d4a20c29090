#!/usr/bin/env python3
"""What the meshp2p API adds on top of llama-server: tokens/s and time-to-first-token, side by side.

Starts `meshp2p up` (the embedded gemma-3-270m unless --model), then streams the same completion alternately
directly from its llama-server and through :PORT/v1, in one run, and prints the ratios.
Targets (issue 2): tok/s ratio >= 0.99, TTFT added <= 2 ms at p50.

usage: .venv/bin/python tools/bench/api_overhead.py [--model M] [--rounds 20] [--tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from streaming import Sample, free_port, percentile, stream_once  # a sibling module: see streaming.py

READY_TIMEOUT_S = 180.0


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model to serve (default: the embedded gemma-3-270m)")
    parser.add_argument("--rounds", type=int, default=20, help="pairs of requests (default 20)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens generated per request (default 128)")
    parser.add_argument("--threads", type=int, default=2, help="llama-server threads (default 2)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        if not args.model:
            # Reuse the assembled default model of the usual data dir when there is one.
            store = Path(os.environ.get("MESHP2P_HOME", Path.home() / ".meshp2p")) / "models"
            if store.is_dir():
                (Path(home) / "models").symlink_to(store)
        proc, api, console = start_node(args, Path(home))
        try:
            model_id, backend_port = wait_backend_port(proc, console)
            body = {"model": model_id, "prompt": "The history of the city of Paris begins",
                    "max_tokens": args.tokens, "temperature": 0, "stream": True, "ignore_eos": True}
            targets = {"direct": f"http://127.0.0.1:{backend_port}/v1/completions",
                       "meshp2p": f"http://127.0.0.1:{api}/v1/completions"}
            samples: dict[str, list[Sample]] = {name: [] for name in targets}
            with httpx.Client(timeout=120) as client:
                for url in targets.values():  # warm both paths (connections, prompt cache)
                    stream_once(client, url, body)
                for i in range(args.rounds):
                    order = list(targets) if i % 2 == 0 else list(reversed(targets))
                    for name in order:
                        samples[name].append(stream_once(client, targets[name], body))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)

    direct, proxied = samples["direct"], samples["meshp2p"]
    added = [p.ttft_ms - d.ttft_ms for d, p in zip(direct, proxied, strict=True)]
    tps_d = statistics.median(s.tokens_per_s for s in direct)
    tps_p = statistics.median(s.tokens_per_s for s in proxied)
    print(f"model {model_id}, {args.rounds} interleaved rounds, {args.tokens} tokens each, streamed /v1/completions")
    print(f"{'':12}{'TTFT p50 ms':>14}{'TTFT p90 ms':>14}{'tok/s p50':>12}")
    for name, rows in (("direct", direct), ("meshp2p", proxied)):
        ttfts = [s.ttft_ms for s in rows]
        print(f"{name:12}{percentile(ttfts, 0.5):>14.2f}{percentile(ttfts, 0.9):>14.2f}"
              f"{statistics.median(s.tokens_per_s for s in rows):>12.1f}")
    print(f"tok/s ratio (meshp2p/direct): {tps_p / tps_d:.3f}   (target >= 0.99)")
    print(f"TTFT added p50: {statistics.median(added):.2f} ms   (target <= 2 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
