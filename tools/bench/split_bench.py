#!/usr/bin/env python3
"""What a layer split costs over the libp2p RPC tunnel, and what local GGUFs save at load, in one run.

One model (default: the embedded gemma-3-270m) is run, all on 127.0.0.1:

1. solo: llama-server alone.
2. direct: the same llama-server with `--rpc` straight to a ggml-rpc-server (plain TCP, no tunnel).
3. tunnel: the same split through meshp2p's RPC bridge: llama-server -> RpcTunnelClient port -> libp2p stream
   (two in-process overlays) -> RpcTunnelServer -> the worker's ggml-rpc-server (meshp2p's RpcServer). Loaded
   twice on one RPC server: the first load and a reload (a new llama-server, as after a re-plan).
   Run once with the RPC server as the node runs it without local models (`-c` cache only) and once with
   `--gguf MODEL` (vendor/llama.cpp/patches/0001-rpc-local-gguf.patch), unless --local-gguf picks one.

The split is the one meshp2p makes (meshp2p/app/pipeline.py): the host keeps the first half of the blocks plus the token
embeddings / output head (`-ot ...=CPU`), the RPC server gets the rest; `-t 1 --no-repack` everywhere so that three
processes share two cores fairly and the split's tokens can be compared with solo's.

Reported (JSON on stdout, also --out): generation tok/s (median of --runs) for each; tunnel/direct ratio
(target >= 0.85) and the time the tunnel adds per token; bytes that crossed the tunnel towards the RPC server at
first load and at reload (target with local GGUFs: ~0, only protocol overhead); bytes (both directions) and round
trips per generated token; the host's CPU seconds at load (the hashing the patch adds there); tokens equal to solo
at temperature 0 (target: yes).
Byte counts come from the bridge's own counters (both ends must agree); the direct phase is not proxied, so that
it measures plain TCP.

usage: python tools/bench/split_bench.py [--model PATH] [--bin-dir DIR] [--tokens 64] [--runs 3]
           [--local-gguf both|on|off] [--host-layers N] [--out FILE] [--keep DIR]
  --bin-dir: folder with llama-server and ggml-rpc-server (default: as meshp2p finds them, MESHP2P_LLAMA_DIR first).
  The patched ggml-rpc-server is needed for --local-gguf on/both (a stock one rejects --gguf).
Every process started here is stopped here (by PID), whatever happens.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.binaries import LlamaBinaries, find_llama_binaries
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.ports import free_loopback_port
from meshp2p.inference.processes import stop_process
from meshp2p.inference.rpc_server import OnDemandRpcServer, RpcServer
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.p2p.rpc_tunnel import RpcTunnelClient, RpcTunnelServer
from meshp2p.wire.identity import Identity

DEFAULT_MODEL = Path("/tmp/mh/models/gemma-3-270m-Q4_K_M.gguf")
PROMPT = "The history of the Roman Empire begins with"
READY_TIMEOUT_S = 300.0
COMMON_FLAGS = ("-t", "1", "--no-repack", "-c", "2048", "-np", "1", "--fit", "off", "--no-webui")
#: Anchored: llama.cpp matches `-ot` patterns with regex_search, and an unanchored `output\.weight` also pins every
#: `blk.N.attn_output.weight` to the host (two graph splits per worker layer, ~10x the round trips per token).
HEAD_ON_HOST = r"^token_embd\.weight$=CPU,^output\.weight$=CPU,^output_norm\.weight$=CPU"


def split_flags(rpc_port: int, n_layers: int, host_layers: int) -> tuple[str, ...]:
    """As meshp2p.app.pipeline.pipeline_args for one worker: `-ngl` counts the output head as layer n_layers."""
    return ("--rpc", f"{LOOPBACK_HOST}:{rpc_port}", "-ngl", str(n_layers - host_layers + 1), "-ot", HEAD_ON_HOST)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_llama(binaries: LlamaBinaries, model: Path, log: Path, flags: tuple[str, ...], *, tokens: int,
                    runs: int, mark: Callable[[str], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Start llama-server, wait for /health, run `runs` greedy completions, stop it. `mark(stage)` is awaited
    at "loaded" and "answered"."""
    port = free_loopback_port()
    command = [str(binaries.server), "-m", str(model), "--host", LOOPBACK_HOST, "--port", str(port),
               *COMMON_FLAGS, *flags]
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        started = trio.current_time()
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK_HOST}:{port}", timeout=600) as http:
            with trio.fail_after(READY_TIMEOUT_S):
                while True:
                    if process.returncode is not None:
                        raise RuntimeError(f"llama-server exited ({process.returncode}), see {log}")
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.02)
            result: dict[str, Any] = {"ready_s": round(trio.current_time() - started, 3),
                                      "host_cpu_s_at_load": round(cpu_seconds(process.pid), 3)}
            if mark is not None:
                await mark("loaded")
            answers = []
            for _ in range(runs):
                body = {"prompt": PROMPT, "n_predict": tokens, "temperature": 0, "cache_prompt": False,
                        "return_tokens": True, "ignore_eos": True}
                response = await http.post("/completion", json=body)
                response.raise_for_status()
                answers.append(response.json())
            if mark is not None:
                await mark("answered")
    finally:
        await stop_process(process)
    rates = sorted(a["timings"]["predicted_per_second"] for a in answers)
    result.update({
        "tok_s_runs": [round(r, 2) for r in rates], "tok_s": round(statistics.median(rates), 2),
        "predicted": sum(a["timings"]["predicted_n"] for a in answers),
        "tokens": answers[0]["tokens"], "text": answers[0]["content"],
        "same_tokens_every_run": all(a["tokens"] == answers[0]["tokens"] for a in answers),
    })
    return result


class Tunnel:
    """Two overlays in this process: the host's bridge port leads to the worker's RPC server."""

    def __init__(self, nursery: trio.Nursery, rpc_port: Callable[[], Awaitable[int]]) -> None:
        self.nursery = nursery
        self.rpc_port = rpc_port

    async def start(self, model_id: str) -> int:
        worker = Overlay(Identity.generate(), OverlayConfig())
        await self.nursery.start(worker.run)
        host = Overlay(Identity.generate(), OverlayConfig(bootstrap=(worker.addrs()[0],)))
        await self.nursery.start(host.run)
        self.server = RpcTunnelServer(worker, is_member=lambda peer: peer == host.peer_id, rpc_port=self.rpc_port)
        self.server.install()
        self.client = RpcTunnelClient(host)
        port: int = await self.nursery.start(
            functools.partial(self.client.serve_port, worker.peer_id, model=model_id, threads=1))
        return port

    def counts(self) -> tuple[int, int]:
        return self.client.bytes_to_rpc, self.client.bytes_from_rpc

    async def settled(self) -> tuple[int, int]:
        """The counters once both ends agree (the last reply may still be on its way through the worker)."""
        with trio.fail_after(30):
            # Polled: the bridge's counters are plain integers, they signal nothing.
            while True:
                if self.counts() == (self.server.bytes_to_rpc, self.server.bytes_from_rpc):
                    return self.counts()
                await trio.sleep(0.02)


async def tunnel_phase(args: argparse.Namespace, binaries: LlamaBinaries, work: Path, n_layers: int,
                       local_gguf: bool) -> dict[str, Any]:
    """First load + reload through the tunnel on one RPC server; bytes at each stage."""
    name = "tunnel-gguf" if local_gguf else "tunnel-stock"
    rpc = RpcServer(binaries, log_dir=work / name, threads=1, cache=True, cache_dir=work / name / "rpc-cache",
                    gguf_paths=(args.model,) if local_gguf else ())
    on_demand = OnDemandRpcServer(rpc)
    out: dict[str, Any] = {"rpc_command": " ".join(rpc.command(0)[1:])}
    async with trio.open_nursery() as nursery:
        await nursery.start(on_demand.run)
        tunnel = Tunnel(nursery, on_demand.port)
        port = await tunnel.start(args.model.stem)
        for stage in ("first_load", "reload"):
            marks: dict[str, tuple[int, int]] = {}
            before = await tunnel.settled()

            round_trips: dict[str, int] = {}

            async def mark(when: str, marks: dict[str, tuple[int, int]] = marks,
                           round_trips: dict[str, int] = round_trips) -> None:
                marks[when] = await tunnel.settled()
                round_trips[when] = tunnel.client.round_trips

            runs = args.runs if stage == "first_load" else 1
            result = await run_llama(binaries, args.model, work / name / f"llama-{stage}.log",
                                     split_flags(port, n_layers, args.host_layers), tokens=args.tokens, runs=runs,
                                     mark=mark)
            to_load, from_load = (a - b for a, b in zip(marks["loaded"], before, strict=True))
            to_gen, from_gen = (a - b for a, b in zip(marks["answered"], marks["loaded"], strict=True))
            trips_gen = round_trips["answered"] - round_trips["loaded"]
            result.update({"bytes_to_rpc_at_load": to_load, "bytes_from_rpc_at_load": from_load,
                           "bytes_per_token_to_rpc": round(to_gen / result["predicted"]),
                           "bytes_per_token_from_rpc": round(from_gen / result["predicted"]),
                           "round_trips_per_token": round(trips_gen / result["predicted"], 2)})
            out[stage] = result
        nursery.cancel_scope.cancel()
    log = (work / name / "ggml-rpc-server.log").read_text(errors="replace")
    out["rpc_log_local_gguf"] = [line for line in log.splitlines() if line.startswith("local gguf")]
    return out


async def direct_phase(args: argparse.Namespace, binaries: LlamaBinaries, work: Path, n_layers: int,
                       local_gguf: bool) -> dict[str, Any]:
    rpc = RpcServer(binaries, log_dir=work / "direct", threads=1, cache=False,
                    gguf_paths=(args.model,) if local_gguf else ())
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(rpc.run)
        result = await run_llama(binaries, args.model, work / "direct" / "llama.log",
                                 split_flags(port, n_layers, args.host_layers), tokens=args.tokens, runs=args.runs)
        nursery.cancel_scope.cancel()
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.bin_dir:
        os.environ["MESHP2P_LLAMA_DIR"] = str(args.bin_dir)
    binaries = find_llama_binaries()
    n_layers = read_gguf_header(args.model).block_count or 0
    args.host_layers = args.host_layers if args.host_layers is not None else n_layers // 2
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.local_gguf]
    report: dict[str, Any] = {"model": str(args.model), "model_bytes": args.model.stat().st_size,
                              "binaries": str(binaries.directory), "n_layers": n_layers,
                              "host_layers": args.host_layers, "tokens": args.tokens, "runs": args.runs}
    with tempfile.TemporaryDirectory(prefix="split-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        for sub in ("solo", "direct", "tunnel-gguf", "tunnel-stock"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        solo = await run_llama(binaries, args.model, work / "solo" / "llama.log", (), tokens=args.tokens,
                               runs=args.runs)
        report["solo"] = solo
        report["direct"] = await direct_phase(args, binaries, work, n_layers, modes[-1])
        for local_gguf in modes:
            report["tunnel_gguf" if local_gguf else "tunnel_stock"] = await tunnel_phase(
                args, binaries, work, n_layers, local_gguf)
    tunnel = report["tunnel_gguf" if modes[-1] else "tunnel_stock"]["first_load"]
    summary: dict[str, Any] = {
        "solo_tok_s": solo["tok_s"], "direct_tok_s": report["direct"]["tok_s"], "tunnel_tok_s": tunnel["tok_s"],
        "tunnel_over_direct": round(tunnel["tok_s"] / report["direct"]["tok_s"], 3),
        "direct_over_solo": round(report["direct"]["tok_s"] / solo["tok_s"], 3),
        "tunnel_added_ms_per_token": round(1000 / tunnel["tok_s"] - 1000 / report["direct"]["tok_s"], 2),
        "tokens_equal_solo": {
            "direct": report["direct"]["tokens"] == solo["tokens"],
            **{f"{k}_{stage}": report[k][stage]["tokens"] == solo["tokens"]
               for k in ("tunnel_stock", "tunnel_gguf") if k in report for stage in ("first_load", "reload")}},
    }
    for key in ("tunnel_stock", "tunnel_gguf"):
        if key in report:
            summary[f"{key}_bytes_to_rpc"] = {stage: report[key][stage]["bytes_to_rpc_at_load"]
                                              for stage in ("first_load", "reload")}
            summary[f"{key}_per_token_bytes"] = (report[key]["first_load"]["bytes_per_token_to_rpc"]
                                                 + report[key]["first_load"]["bytes_per_token_from_rpc"])
            summary[f"{key}_round_trips_per_token"] = report[key]["first_load"]["round_trips_per_token"]
            summary[f"{key}_host_cpu_s_at_load"] = report[key]["first_load"]["host_cpu_s_at_load"]
            summary[f"{key}_ready_s"] = report[key]["first_load"]["ready_s"]
    for phase in [report["solo"], report["direct"]] + [report[k][s] for k in ("tunnel_stock", "tunnel_gguf")
                                                       if k in report for s in ("first_load", "reload")]:
        phase["tokens"] = phase["tokens"][:12]
        phase["text"] = phase["text"][:80]
    report["summary"] = summary
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--bin-dir", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--local-gguf", choices=("both", "on", "off"), default="both")
    ap.add_argument("--host-layers", type=int, default=None, help="blocks kept on the host (default: half)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="keep logs in this folder instead of a temporary one")
    return ap.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    result = trio.run(main, arguments)
    text = json.dumps(result, indent=1)
    print(text)
    if arguments.out:
        arguments.out.write_text(text)
    print(json.dumps(result["summary"]), file=sys.stderr)
