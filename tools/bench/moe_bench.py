#!/usr/bin/env python3
"""What `--moe shard` buys and costs against the exact layer split, measured side by side in one run.

For each model (default: the tiny llama-style MoE and qwen3moe models of tools/make_tiny_gguf.py, 8 experts /
2 used; or any MoE GGUF given with --model), all on 127.0.0.1, every process `-t 1` (several llama.cpp processes
share this machine's cores) and `--no-repack`:

1. Calibration: expert usage from llama-imatrix (inference/calibration.py), the weight-norm estimate without it.
2. Plan: N shards (--shards, default 2) as `--moe shard` plans them (mesh/moe_shards.py), each holding --experts per
   layer (default: the guard's floor, raised until N shards cover every expert); written with write_expert_shard.
   Writing throughput (bytes/s) vs a plain copy (shutil.copyfile, copy_file_range) of a file of the same size:
   target >= 0.5.
3. Exact split vs solo: generation tok/s of llama-server alone and split by layers over N-1 ggml-rpc-servers (the
   host keeps its blocks, the embeddings and head, as app/pipeline.py places them; plain TCP, not the libp2p
   tunnel: tools/bench/split_bench.py measures that); bytes per generated token over the RPC sockets (a counting
   proxy in a second, separate run so that it does not slow the first).
4. Throughput: N concurrent sessions, each --tokens long: over N shards (one session each) vs on the split
   (`--parallel N`): aggregate tok/s. The reason shards exist.
5. Quality of each shard against the whole model on a fixed text (not the calibration text): llama-perplexity's
   `--kl-divergence`: top-1 next-token agreement ("same top p") and the perplexity ratio PPL(shard)/PPL(whole);
   a ratio > 1.1 is flagged. Also the curve for one shard of the top-k experts, k from experts_used to all: what the
   guard's fraction (--moe-min-experts) costs. Needs llama-perplexity (not in meshp2p's build: `cmake --build
   <work>/build --target llama-perplexity`; looked for next to llama-server and in the build tree).

usage: python tools/bench/moe_bench.py [--model PATH ...] [--shards 2] [--experts K] [--tokens 64] [--runs 3]
           [--out FILE]
Prints a table per model and the whole result as JSON (also --out). Every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_tiny_gguf import write_tiny_gguf

from meshp2p.app.moe_shards import shard_model
from meshp2p.inference.binaries import (
    LLAMA_CPP_TAG,
    LlamaBinaries,
    build_cache_root,
    find_llama_binaries,
)
from meshp2p.inference.calibration import ExpertUsage, run_imatrix, weight_norm_usage
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.models import spec_from_gguf
from meshp2p.inference.moe_shard import write_expert_shard
from meshp2p.mesh.moe_shards import ShardMember, min_experts, plan_shards

PPL_FLAG_RATIO = 1.1
WRITE_TARGET = 0.5
CTX = 512
PPL_CTX = 128
HEALTH_TIMEOUT_S = 120.0
EVAL_TEXT = """\
The old lighthouse keeper climbed the spiral stairs each evening at six, carrying a can of oil and a cloth. From
the lamp room he could see the whole bay: the ferry crossing to the island, the red roofs of the village, and far
out, the dark line where the continental shelf dropped away. He wrote the weather in a leather book, as his father
had, though the lamp had been automatic for twenty years.

import os
def walk(root):
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        yield path
        if os.path.isdir(path):
            yield from walk(path)

Water boils at 100 degrees Celsius at sea level, but at the top of Mount Everest it boils at about 70 degrees,
because the air pressure is roughly a third as high. A kilogram of ice needs 334 kilojoules to melt, and a litre of
water needs about 4.2 kilojoules to warm by one degree. The speed of sound in air is around 343 metres per second.

Customer: I ordered a blue jacket in size medium, but I received a green one in large. Can you help?
Agent: I am sorry about that. I have arranged a free return label and a replacement in blue, size medium, which
will ship today. You should receive an email with the tracking number within the hour.

Der Zug nach Berlin fährt um halb neun vom Gleis drei. La biblioteca abre a las nueve y cierra a las ocho. Les
enfants jouent dans le parc pendant que leurs parents discutent sur un banc à l'ombre des platanes.

Step 1: measure the room. Step 2: buy ten percent more flooring than the area, for cuts and mistakes. Step 3: leave
the boards in the room for two days so they adjust to its humidity. Step 4: start along the longest straight wall.
"""


# ---- processes ---------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started(argv: Sequence[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def llama_server(bins: LlamaBinaries, model: Path, work: Path, *extra: str, parallel: int = 1) -> Iterator[str]:
    port = free_port()
    argv = [str(bins.server), "-m", str(model), "--port", str(port), "--host", "127.0.0.1", "-t", "1", "-c",
            str(CTX * parallel), "-np", str(parallel), "--no-repack", "--no-warmup", *extra]
    with started(argv, work / f"server-{port}.log") as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited: {(work / f'server-{port}.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not become healthy")
            time.sleep(0.05)
        yield url


@contextmanager
def rpc_servers(bins: LlamaBinaries, count: int, work: Path) -> Iterator[list[int]]:
    assert bins.rpc_server is not None, "the exact split needs ggml-rpc-server"
    ports = [free_port() for _ in range(count)]
    with ExitStack() as stack:
        for port in ports:
            stack.enter_context(started([str(bins.rpc_server), "-H", "127.0.0.1", "-p", str(port), "-t", "1"],
                                        work / f"rpc-{port}.log"))
        for port in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        yield ports


class CountingProxy:
    """A loopback TCP forwarder that counts the bytes each way (to the RPC server, back from it)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.to_rpc = self.from_rpc = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                with self.lock:
                    if up:
                        self.to_rpc += len(data)
                    else:
                        self.from_rpc += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    @property
    def total(self) -> int:
        with self.lock:
            return self.to_rpc + self.from_rpc

    def close(self) -> None:
        self.sock.close()


# ---- measurements ------------------------------------------------------------------------------------------------

def generate(url: str, tokens: int, prompt: str = "Once upon a time") -> tuple[float, int]:
    """(seconds of generation as llama-server timed it, tokens generated)."""
    r = httpx.post(url + "/completion", json={"prompt": prompt, "n_predict": tokens, "temperature": 0,
                                              "cache_prompt": False, "ignore_eos": True}, timeout=600)
    r.raise_for_status()
    timings = r.json()["timings"]
    return timings["predicted_ms"] / 1000, int(timings["predicted_n"])


def tok_s(url: str, tokens: int, runs: int) -> float:
    generate(url, 4)  # warm
    return statistics.median(n / s for s, n in (generate(url, tokens) for _ in range(runs)))


def aggregate_tok_s(urls: Sequence[str], tokens: int) -> float:
    """All sessions at once (one per url entry), tokens generated in all / wall seconds."""
    generate(urls[0], 4)
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        start = time.monotonic()
        done = list(pool.map(lambda ui: generate(ui[1], tokens, f"Session {ui[0]}: once upon a time"),
                             enumerate(urls)))
        wall = time.monotonic() - start
    return sum(n for _, n in done) / wall


def split_args(n_layers: int, ports: Sequence[int]) -> list[str]:
    """As app/pipeline.py places a split: the host keeps the first share of blocks, embeddings and head."""
    nodes = len(ports) + 1
    host = n_layers // nodes
    offloaded = n_layers - host
    share = ",".join(f"{1 / len(ports):.6f}" for _ in ports)
    return ["--rpc", ",".join(f"127.0.0.1:{p}" for p in ports), "-ngl", str(offloaded + 1), "--tensor-split", share,
            "-ot", r"^token_embd\.weight$=CPU,^output\.weight$=CPU,^output_norm\.weight$=CPU"]


def find_perplexity(bins: LlamaBinaries) -> Path | None:
    for candidate in (bins.directory / "llama-perplexity",
                      build_cache_root() / "work" / LLAMA_CPP_TAG / "build" / "bin" / "llama-perplexity"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def quality(perplexity: Path, whole: Path, shards: Sequence[Path], work: Path) -> list[dict[str, Any]]:
    """Each shard against the whole model on EVAL_TEXT: top-1 agreement and PPL(shard)/PPL(whole)."""
    text = work / "eval.txt"
    text.write_text(EVAL_TEXT * 2)
    base = work / "base.kld"
    common = ["-f", str(text), "-c", str(PPL_CTX), "-t", "1", "--no-warmup", "-b", str(PPL_CTX)]
    subprocess.run([str(perplexity), "-m", str(whole), *common, "--kl-divergence-base", str(base)],
                   check=True, capture_output=True, timeout=3600)
    out = []
    for shard in shards:
        for _attempt in range(2):  # a rare run prints no summary: run it once more before giving up
            done = subprocess.run([str(perplexity), "-m", str(shard), *common, "--kl-divergence-base", str(base),
                                   "--kl-divergence"], capture_output=True, text=True, timeout=3600, check=False)
            log = done.stdout + done.stderr
            ratio = _number(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([0-9.]+)", log)
            same = _number(r"Same top p:\s*([0-9.]+)", log)
            if ratio is not None and same is not None:
                break
        entry: dict[str, Any] = {
            "ppl_ratio": ratio, "top1_agreement": None if same is None else same / 100,
            "kld": _number(r"Mean\s+KLD:\s*([0-9.]+)", log), "flagged": ratio is None or ratio > PPL_FLAG_RATIO}
        if ratio is None or same is None:
            entry["error"] = f"exit {done.returncode}: " + " | ".join(log.strip().splitlines()[-3:])
        out.append(entry)
    return out


def copy_throughput(size: int, work: Path, runs: int) -> float:
    src, dst = work / "copy-src.bin", work / "copy-dst.bin"
    with src.open("wb") as f:
        left = size
        while left:
            n = min(left, 1 << 24)
            f.write(os.urandom(n))
            left -= n
    times = []
    for _ in range(runs):
        dst.unlink(missing_ok=True)
        start = time.perf_counter()
        shutil.copyfile(src, dst)
        times.append(time.perf_counter() - start)
    src.unlink()
    dst.unlink()
    return size / statistics.median(times)


def measure_write(model: Path, experts: Sequence[Any], paths: Sequence[Path], work: Path,
                  runs: int) -> dict[str, Any]:
    """Shard writing throughput (median of `runs` per shard) vs a plain copy of a file of the shard's size."""
    times = []
    for keep, path in zip(experts, paths, strict=True):
        each = []
        for _ in range(runs):
            path.unlink(missing_ok=True)
            t0 = time.perf_counter()
            write_expert_shard(model, path, keep)
            each.append(time.perf_counter() - t0)
        times.append(statistics.median(each))
    size = paths[0].stat().st_size
    write_bps, copy_bps = size / statistics.median(times), copy_throughput(size, work, runs)
    return {"shard_MB": round(size / 1e6, 2), "shard_MBps": round(write_bps / 1e6, 1),
            "copy_MBps": round(copy_bps / 1e6, 1), "ratio": round(write_bps / copy_bps, 2), "target": WRITE_TARGET}


def write_at_scale(work: Path, runs: int) -> dict[str, Any]:
    """The tiny models are a few MB, where fixed costs (header, rename) dominate: the same measurement on a wider
    synthetic MoE (~200 MB, a ~100 MB shard of 4 of 8 experts)."""
    model = write_tiny_gguf(work / "wide-moe.gguf", "moe", layers=8, embd=256, ff=1024, seed=21)
    path = work / "wide-moe-shard.gguf"
    result = measure_write(model, [[0, 2, 5, 7]], [path], work, runs)
    model.unlink()
    path.unlink()
    return result


# ---- one model ---------------------------------------------------------------------------------------------------

def bench_model(model: Path, bins: LlamaBinaries, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    spec = spec_from_gguf(model)
    layout = spec.layout
    if layout is None or not layout.is_moe or not layout.experts:
        raise SystemExit(f"{model} is not a Mixture-of-Experts GGUF")
    n, used = layout.experts, layout.experts_used or 1
    n_layers = len(layout.layer_bytes)
    result: dict[str, Any] = {"model": str(model), "size_bytes": spec.size_bytes, "experts": n,
                              "experts_used": used, "layers": n_layers, "shards": args.shards}

    # 1. calibration
    start = time.perf_counter()
    usage: ExpertUsage = run_imatrix(bins.imatrix, model, n_layers, n) if bins.imatrix else weight_norm_usage(model)
    result["calibration"] = {"source": usage.source, "seconds": round(time.perf_counter() - start, 2)}

    # 2. plan and write the shards
    facts = shard_model(spec, usage)
    per_expert = sum(facts.expert_bytes)
    k = args.experts or max(min_experts(n, used, args.min_fraction), math.ceil(n / args.shards))
    cap = facts.trunk_bytes + k * per_expert
    plan = plan_shards(facts, [ShardMember(f"shard{i}", cap) for i in range(args.shards)],
                       min_fraction=args.min_fraction)
    assert plan.covers_every_expert(n)
    paths = [work / f"{model.stem}-{a.peer_id}.gguf" for a in plan.shards]
    write = measure_write(model, [a.experts for a in plan.shards], paths, work, args.runs)
    shard_bytes = paths[0].stat().st_size
    result["plan"] = {"experts_per_shard": k, "core": len(plan.core[0]) if plan.core else 0,
                      "shard_bytes": shard_bytes,
                      "traffic_share": [s.traffic_share for s in plan.shards]}
    result["write"] = write

    # 3. solo vs exact split, and bytes per token
    with llama_server(bins, model, work) as url:
        solo = tok_s(url, args.tokens, args.runs)
    with rpc_servers(bins, args.shards - 1, work) as ports:
        with llama_server(bins, model, work, *split_args(n_layers, ports)) as url:
            split = tok_s(url, args.tokens, args.runs)
        proxies = [CountingProxy(p) for p in ports]
        try:
            with llama_server(bins, model, work, *split_args(n_layers, [p.port for p in proxies])) as url:
                generate(url, 4)
                before = sum(p.total for p in proxies)
                _, produced = generate(url, args.tokens)
                per_token = (sum(p.total for p in proxies) - before) / produced
        finally:
            for p in proxies:
                p.close()
        # 4. N concurrent sessions on the split (parallel slots) vs one per shard
        with llama_server(bins, model, work, *split_args(n_layers, ports), parallel=args.shards) as url:
            split_agg = aggregate_tok_s([url] * args.shards, args.tokens)
    with ExitStack() as stack:
        urls = [stack.enter_context(llama_server(bins, p, work)) for p in paths]
        shard_agg = aggregate_tok_s(urls, args.tokens)
    result["exact_split"] = {"solo_tok_s": round(solo, 1), "split_tok_s": round(split, 1),
                             "ratio": round(split / solo, 2), "bytes_per_token": round(per_token)}
    result["sessions"] = {"sessions": args.shards, "split_agg_tok_s": round(split_agg, 1),
                          "shards_agg_tok_s": round(shard_agg, 1), "ratio": round(shard_agg / split_agg, 2)}

    # 5. quality
    perplexity = find_perplexity(bins)
    if perplexity is None:
        result["quality"] = "llama-perplexity not found (cmake --build <work>/build --target llama-perplexity)"
        return result
    result["quality"] = [{"shard": s.peer_id, **q} for s, q in zip(plan.shards, quality(perplexity, model, paths,
                                                                                           work), strict=True)]
    curve = []
    ranked = [sorted(range(n), key=lambda e, row=row: (-row[e], e)) for row in usage.counts]
    ks = sorted({used, *range(max(used, n // 4), n + 1, max(1, n // 8))})
    curve_paths = []
    for kk in ks:
        path = work / f"{model.stem}-top{kk}.gguf"
        write_expert_shard(model, path, [sorted(r[:kk]) for r in ranked])
        curve_paths.append(path)
    for kk, q in zip(ks, quality(perplexity, model, curve_paths, work), strict=True):
        curve.append({"experts": kk, "fraction": round(kk / n, 3), **q})
    result["quality_curve_top_k"] = curve
    return result


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def print_table(r: dict[str, Any]) -> None:
    print(f"\n== {Path(r['model']).name}: {r['experts']} experts / {r['experts_used']} used, {r['layers']} layers, "
          f"{r['size_bytes'] / 1e6:.1f} MB; calibration {r['calibration']['source']} "
          f"({r['calibration']['seconds']} s)")
    p, w, e, s = r["plan"], r["write"], r["exact_split"], r["sessions"]
    print(f"plan        {r['shards']} shards x {p['experts_per_shard']} experts/layer (core {p['core']}), "
          f"{p['shard_bytes'] / 1e6:.2f} MB each, router traffic held {p['traffic_share']}")
    print(f"exact split {e['split_tok_s']} tok/s vs solo {e['solo_tok_s']} tok/s = {e['ratio']}x; "
          f"{e['bytes_per_token']} bytes/token over RPC")
    print(f"sessions    {s['sessions']} concurrent: shards {s['shards_agg_tok_s']} tok/s vs split "
          f"{s['split_agg_tok_s']} tok/s = {s['ratio']}x")
    print(f"writing     {w['shard_MB']} MB shard {w['shard_MBps']} MB/s vs copy {w['copy_MBps']} MB/s = {w['ratio']} "
          f"(target >= {w['target']}){'' if w['ratio'] >= w['target'] else '  BELOW TARGET'}")
    if isinstance(r["quality"], str):
        print(f"quality     {r['quality']}")
        return
    for q in r["quality"]:
        print(f"quality     {q['shard']}: top-1 agreement {_f(q['top1_agreement'])}, PPL ratio {_f(q['ppl_ratio'])}"
              f"{'  FLAGGED (> 1.1x)' if q['flagged'] else ''}{'  ' + q['error'] if 'error' in q else ''}")
    for q in r["quality_curve_top_k"]:
        print(f"top-k curve {q['experts']:>3} experts ({q['fraction']:.0%}): top-1 {_f(q['top1_agreement'])}, "
              f"PPL ratio {_f(q['ppl_ratio'])}{'  FLAGGED' if q['flagged'] else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, help="a MoE GGUF (repeatable; default: tiny ones)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--experts", type=int, default=None, help="experts per layer per shard")
    parser.add_argument("--min-fraction", type=float, default=0.5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    bins = find_llama_binaries()
    results = []
    with tempfile.TemporaryDirectory(prefix="moe-bench-") as tmp:
        work = Path(tmp)
        models = args.model or [write_tiny_gguf(work / "tiny-moe.gguf", "moe", layers=8, seed=21),
                                write_tiny_gguf(work / "tiny-qwen3moe.gguf", "qwen3moe", layers=8, seed=21)]
        for model in models:
            read_gguf_header(model)
            result = bench_model(model, bins, args, work)
            print_table(result)
            results.append(result)
        if not args.model:
            scale = write_at_scale(work, args.runs)
            print(f"\n== writing at scale: a {scale['shard_MB']} MB shard at {scale['shard_MBps']} MB/s vs copy "
                  f"{scale['copy_MBps']} MB/s = {scale['ratio']} (target >= {scale['target']})")
            results.append({"write_at_scale": scale})
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
