#!/usr/bin/env python3
"""Speculative decoding on the embedded gemma-3-270m: n-gram speculation on vs off, side by side, in one run.

Two llama-servers (more with --modes) run the same model with the command lines meshp2p gives them
(`LlamaServer.command`): one without speculation, one with `--spec ngram` (meshp2p/inference/speculation.py).
Each round sends both the same prompt, in alternating order, one request at a time: a Python file, the same file
again with an edit, and the start of a third version with another edit, which the model copies out (greedy,
temperature 0, up to the end of the file). Each round renames to another class name, so no two rounds have the
same prompt.

Reported per server: generation tok/s (llama-server's own `timings`, prompt excluded; median over the rounds), the
ratio to speculation off, the acceptance rate (draft tokens accepted / proposed, from the `/metrics` counters that
/api/status reports), and whether every round gave exactly the tokens of speculation off (asserted: exit status 1
when not).

usage: .venv/bin/python tools/bench/speculative.py [--rounds 8] [--tokens 400] [--threads 1]
           [--modes ngram-simple,ngram-map-k] [--json]
  --modes: also run these llama-server --spec-type values (b11434's other n-gram modes), for choosing --spec ngram.
Every process started here is stopped here (by PID), whatever happens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from meshp2p.inference.binaries import find_llama_binaries
from meshp2p.inference.llama_server import LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec, Speculation
from meshp2p.inference.ports import free_loopback_port
from meshp2p.inference.resolve import resolve_model
from meshp2p.inference.spec_metrics import parse_spec_counters

READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 10.0

CODE = '''class Inventory:
    def __init__(self, items):
        self.items = list(items)

    def total_price(self, tax_rate):
        subtotal = 0
        for item in self.items:
            subtotal += item.price * item.quantity
        tax = subtotal * tax_rate
        return subtotal + tax

    def most_expensive(self):
        best = None
        for item in self.items:
            if best is None or item.price > best.price:
                best = item
        return best

    def restock(self, name, quantity):
        for item in self.items:
            if item.name == name:
                item.quantity += quantity
                return item
        raise KeyError(name)

    def remove(self, name):
        for index, item in enumerate(self.items):
            if item.name == name:
                del self.items[index]
                return item
        raise KeyError(name)

    def low_stock(self, threshold):
        result = []
        for item in self.items:
            if item.quantity < threshold:
                result.append(item)
        return result

    def names(self):
        return sorted(item.name for item in self.items)
'''
NAMES = ("Warehouse", "Depot", "Store", "Shelf", "Pantry", "Storage", "Supply", "Catalog", "Ledger", "Cellar")


def prompt(round_: int) -> str:
    """Version 1, version 2 (one edit), and the first line of version 3 (another edit) for the model to finish."""
    new = NAMES[round_ % len(NAMES)]
    v2 = CODE.replace("class Inventory:", "class Stock:")
    return ("Three versions of inventory.py. Each version is the previous one with one name changed.\n\n"
            f"# inventory.py, version 1\n{CODE}\n# inventory.py, version 2: Inventory renamed to Stock\n{v2}\n"
            f"# inventory.py, version 3: Stock renamed to {new}\nclass {new}:\n")


@dataclass
class Server:
    name: str
    spec: ModelSpec
    command: list[str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    log: Any = None
    tok_s: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    drafted: int = 0
    accepted: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def configurations(base: ModelSpec, modes: list[str], binaries: Any, options: ServerOptions,
                   log_dir: Path) -> list[Server]:
    specs = {"off": base, "ngram (meshp2p --spec ngram)": dataclasses.replace(base, speculation=Speculation("ngram"))}
    for mode in modes:
        specs[mode] = dataclasses.replace(base, extra_server_args=(*base.extra_server_args, "--spec-type", mode))
    servers = []
    for name, spec in specs.items():
        port = free_loopback_port()
        servers.append(Server(name, spec, LlamaServer(binaries, spec, options, log_dir=log_dir).command(port), port))
    return servers


def counters(client: httpx.Client, server: Server) -> tuple[int, int]:
    got = parse_spec_counters(client.get(server.url + "/metrics").text)
    return got if got is not None else (0, 0)


def complete(client: httpx.Client, server: Server, text: str, tokens: int) -> dict[str, Any]:
    body = {"prompt": text, "n_predict": tokens, "temperature": 0, "stop": ["\n#"], "cache_prompt": True}
    response = client.post(server.url + "/completion", json=body)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def wait_ready(client: httpx.Client, server: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name}: llama-server exited with {server.process.returncode}")
        try:
            if client.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{server.name}: llama-server not ready after {READY_TIMEOUT_S:.0f} s")


def run(args: argparse.Namespace, servers: list[Server], log_dir: Path) -> None:
    for server in servers:
        server.log = (log_dir / f"{server.name.split()[0]}.log").open("wb")
        server.process = subprocess.Popen(server.command, stdin=subprocess.DEVNULL, stdout=server.log,
                                          stderr=server.log)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for server in servers:
            wait_ready(client, server)
        for server in servers:  # warm up: weights paged in, graphs built
            complete(client, server, "def main():\n", 16)
        for i in range(args.rounds):
            order = servers if i % 2 == 0 else servers[::-1]
            for server in order:
                before = counters(client, server)
                answer = complete(client, server, prompt(i), args.tokens)
                after = counters(client, server)
                server.tok_s.append(float(answer["timings"]["predicted_per_second"]))
                server.tokens.append(int(answer["timings"]["predicted_n"]))
                server.texts.append(str(answer["content"]))
                server.drafted += after[0] - before[0]
                server.accepted += after[1] - before[1]


def stop(servers: list[Server]) -> None:
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.process.terminate()
    for server in servers:
        if server.process is None:
            continue
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
        server.log.close()


def report(args: argparse.Namespace, servers: list[Server]) -> dict[str, Any]:
    off = servers[0]
    base = statistics.median(off.tok_s)
    rows = []
    for s in servers:
        rows.append({"name": s.name, "tok_s_median": round(statistics.median(s.tok_s), 2),
                     "tok_s": [round(t, 1) for t in s.tok_s],
                     "ratio_to_off": round(statistics.median(s.tok_s) / base, 3),
                     "ratio_per_round": [round(t / b, 2) for t, b in zip(s.tok_s, off.tok_s, strict=True)],
                     "drafted": s.drafted, "accepted": s.accepted,
                     "acceptance_rate": round(s.accepted / s.drafted, 3) if s.drafted else None,
                     "same_tokens_as_off": sum(t == o for t, o in zip(s.texts, off.texts, strict=True)),
                     "tokens_per_round": s.tokens})
    return {"model": off.spec.id, "rounds": args.rounds, "max_tokens": args.tokens, "threads": args.threads,
            "load_average": os.getloadavg(), "servers": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8, help="rounds, one request to each server (default 8)")
    parser.add_argument("--tokens", type=int, default=400, help="max tokens per request (default 400; the copy "
                        "ends at the end of the file, ~290 tokens)")
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads (default 1: the servers "
                        "take turns, and a 2-core machine shared with other work loses more to a second thread)")
    parser.add_argument("--modes", default="", help="other llama-server --spec-type values to run as well")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()

    binaries = find_llama_binaries()
    model = resolve_model("gemma-3-270m")
    options = ServerOptions(threads=args.threads, ctx_size=4096)
    with tempfile.TemporaryDirectory(prefix="spec-bench-") as tmp:
        servers = configurations(model, [m for m in args.modes.split(",") if m], binaries, options, Path(tmp))
        try:
            run(args, servers, Path(tmp))
        finally:
            stop(servers)
    result = report(args, servers)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']}, {args.rounds} interleaved rounds, up to {args.tokens} tokens, greedy, "
              f"--threads {args.threads}, load average {' '.join(f'{x:.2f}' for x in result['load_average'])}")
        print(f"{'':32}{'tok/s p50':>10}{'ratio':>8}{'accepted':>10}{'drafted':>9}{'rate':>7}{'same tokens':>13}")
        for r in result["servers"]:
            rate = "" if r["acceptance_rate"] is None else f"{r['acceptance_rate']:.3f}"
            print(f"{r['name']:32}{r['tok_s_median']:>10.1f}{r['ratio_to_off']:>8.2f}{r['accepted']:>10}"
                  f"{r['drafted']:>9}{rate:>7}{r['same_tokens_as_off']:>8}/{args.rounds}")
        print("per-round ratios:", {r["name"]: r["ratio_per_round"] for r in result["servers"][1:]})
        print("tokens per round (off):", result["servers"][0]["tokens_per_round"])
    same = all(r["same_tokens_as_off"] == args.rounds for r in result["servers"])
    if not same:
        print("NOT THE SAME TOKENS as speculation off", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
