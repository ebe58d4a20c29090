#!/usr/bin/env python3
"""What the HTTP tunnel (`/meshp2p/http/1.0.0`, meshp2p/p2p/tunnel.py) costs, in one run, three ways.

1. Tokens through the mesh: a bootstrap node, node A serving the model, node C (`--client`), all separate
   `meshp2p up` processes in one named mesh on loopback. The same streamed /v1/completions (`ignore_eos`)
   alternately straight at A's llama-server (port from A's console, `/api/status`) and at C's API
   (C → tunnel → A → llama-server). Targets: tok/s ratio (tunnel/direct) >= 0.97, TTFT added <= 10 ms at p50.
   Also prints the CPU the two node processes spend per 1000 tunnelled tokens.
2. Bulk bytes: this process and a helper process each run an Overlay; the helper's TunnelServer answers with a
   large body streamed in 1 MiB chunks, and also sends the same bytes on a plain trio TCP stream. Interleaved
   rounds: MB/s of each, CPU seconds per GiB on both sides (steadier than MB/s on a busy machine), and how many
   yamux frames the tunnel cut each MiB into. Target: tunnel >= 0.25 x raw TCP.
3. Load: many concurrent streamed completions at C (all through the tunnel to A). Target: 0 errors.
   (py-libp2p caps outbound streams at 256 per connection; the tunnel pools at most MAX_STREAMS_PER_PEER.)

Part 2 runs first, before llama-server takes a core. llama-server runs with `--threads 1` by default: on a
2-core machine a second thread fights the three Python processes on the tunnel's path for the CPU, and the ratio
would measure that contention, not the tunnel. Every process started is stopped (SIGINT, then wait) at the end.

usage: python tools/bench/tunnel_bench.py --model PATH [--rounds 12] [--tokens 128] [--threads 1]
           [--bulk-mib 64] [--bulk-rounds 3] [--clients 64] [--client-tokens 8] [--skip-mesh] [--skip-bulk]
           [--profile DIR]
  --profile DIR writes cProfile stats of the bulk part (client.prof: receiver, server.prof: sender) to DIR,
  timed in thread CPU time: on a shared machine, time spent waiting for a core is not charged to a function.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
# This checkout's meshp2p, not whichever one is installed (the bulk helper runs this file too).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from streaming import Sample, free_port, is_token, percentile, stream_once  # a sibling module: see streaming.py

READY_TIMEOUT_S = 180.0
ROUTE_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.1
BULK_CHUNK_BYTES = 1024 * 1024
BULK_WARMUP_MIB = 8
PROMPT = "The history of the city of Paris begins"


# ---------------------------------------------------------------- processes


def stop(proc: subprocess.Popen[Any]) -> None:
    """Ctrl-C, then wait; kill only if it ignores that."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    """Every process appended to the list is stopped on the way out, last started first."""
    started: list[subprocess.Popen[Any]] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            stop(proc)


def meshp2p(home: Path, *args: str) -> subprocess.Popen[bytes]:
    """`meshp2p ARGS` with its own MESHP2P_HOME; its output goes to HOME/output.log."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / "output.log").open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "meshp2p", *args], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "MESHP2P_HOME": str(home)})


def wait_until(what: str, timeout_s: float, check: Any, *procs: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"{proc.args!r} exited with {proc.returncode} while waiting for {what}")
        try:
            value = check()
        except (httpx.HTTPError, OSError, KeyError, IndexError, ValueError):
            value = None
        if value:
            return value
        time.sleep(POLL_S)
    raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")


# ---------------------------------------------------------------- part 1: tokens


@dataclass
class Mesh:
    model_id: str
    backend_port: int
    c_api: int
    #: The two node processes on the tunnel's path (not their llama-servers).
    node_pids: tuple[int, int]


def start_mesh(args: argparse.Namespace, root: Path, started: list[subprocess.Popen[Any]]) -> Mesh:
    boot = meshp2p(root / "boot", "bootstrap")
    started.append(boot)

    def boot_addr() -> str | None:
        # `meshp2p bootstrap` prints one dialable address per line.
        for line in (root / "boot" / "output.log").read_text(errors="replace").splitlines():
            if line.startswith("/ip4/127.0.0.1/") and "/p2p/" in line:
                return line.strip()
        return None

    addr = wait_until("the bootstrap address", ROUTE_TIMEOUT_S, boot_addr, boot)
    mesh = f"tunnel-bench-{os.getpid()}"
    common = ("--mesh-name", mesh, "--bootstrap", addr, "--no-build")
    a_api, a_console, c_api, c_console = free_port(), free_port(), free_port(), free_port()
    a = meshp2p(root / "a", "up", *common, "--model", args.model, "--threads", str(args.threads),
                "--port", str(a_api), "--console", str(a_console))
    started.append(a)
    c = meshp2p(root / "c", "up", *common, "--client", "--port", str(c_api), "--console", str(c_console))
    started.append(c)

    def a_ready() -> tuple[str, int] | None:
        model = httpx.get(f"http://127.0.0.1:{a_console}/api/status", timeout=2).json()["models"][0]
        return (model["id"], model["port"]) if model["state"] == "ready" else None

    model_id, backend_port = wait_until("A's llama-server", READY_TIMEOUT_S, a_ready, a, c)

    def c_routes() -> bool:
        data = httpx.get(f"http://127.0.0.1:{c_api}/v1/models", timeout=2).json()["data"]
        return any(m["id"] == model_id and m["meshp2p"]["nodes"] and m["meshp2p"]["state"] != "wanted"
                   for m in data)

    wait_until("C to route the model to A", ROUTE_TIMEOUT_S, c_routes, a, c)
    return Mesh(model_id, backend_port, c_api, (a.pid, c.pid))


def bench_tokens(args: argparse.Namespace, mesh: Mesh) -> None:
    body = {"model": mesh.model_id, "prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0,
            "stream": True, "ignore_eos": True}
    targets = {"direct": f"http://127.0.0.1:{mesh.backend_port}/v1/completions",
               "tunnel": f"http://127.0.0.1:{mesh.c_api}/v1/completions"}
    samples: dict[str, list[Sample]] = {name: [] for name in targets}
    #: CPU seconds the two node processes spent while each path was being measured.
    node_cpu = dict.fromkeys(targets, 0.0)
    with httpx.Client(timeout=120) as client:
        for url in targets.values():  # warm both paths (connections, pooled tunnel stream, prompt cache)
            stream_once(client, url, body)
        for i in range(args.rounds):
            order = list(targets) if i % 2 == 0 else list(reversed(targets))
            for name in order:
                before = sum(cpu_s(pid) for pid in mesh.node_pids)
                samples[name].append(stream_once(client, targets[name], body))
                node_cpu[name] += sum(cpu_s(pid) for pid in mesh.node_pids) - before
    direct, tunnel = samples["direct"], samples["tunnel"]
    added = [t.ttft_ms - d.ttft_ms for d, t in zip(direct, tunnel, strict=True)]
    tps_d = statistics.median(s.tokens_per_s for s in direct)
    tps_t = statistics.median(s.tokens_per_s for s in tunnel)
    print(f"\n[1] tokens: model {mesh.model_id}, llama-server --threads {args.threads}, {args.rounds} interleaved "
          f"rounds, {args.tokens} tokens each, streamed /v1/completions")
    print(f"    {'':8}{'TTFT p50 ms':>13}{'TTFT p90 ms':>13}{'tok/s p50':>11}")
    for name, rows in (("direct", direct), ("tunnel", tunnel)):
        ttfts = [s.ttft_ms for s in rows]
        print(f"    {name:8}{percentile(ttfts, 0.5):>13.2f}{percentile(ttfts, 0.9):>13.2f}"
              f"{statistics.median(s.tokens_per_s for s in rows):>11.1f}")
    print(f"    tok/s ratio (tunnel/direct): {tps_t / tps_d:.3f}   (target >= 0.97)")
    print(f"    TTFT added p50: {statistics.median(added):.2f} ms   (target <= 10 ms)")
    per_1k = {name: 1000 * 1000 * node_cpu[name] / sum(s.tokens for s in samples[name]) for name in targets}
    print(f"    CPU of nodes A + C per 1000 tokens: {per_1k['tunnel']:.0f} ms through the tunnel, "
          f"{per_1k['direct']:.0f} ms while the direct requests ran (their background)")


async def _one_client(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> tuple[float, str | None]:
    start = time.perf_counter()
    tokens, done = 0, False
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                return time.perf_counter() - start, f"HTTP {response.status_code}"
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif is_token(line):
                    tokens += 1
    except Exception as exc:
        return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - start
    if not done or tokens != body["max_tokens"]:
        return elapsed, f"incomplete: {tokens} tokens, [DONE] {'seen' if done else 'missing'}"
    return elapsed, None


async def _concurrent(args: argparse.Namespace, mesh: Mesh) -> tuple[list[float], list[str], float]:
    url = f"http://127.0.0.1:{mesh.c_api}/v1/completions"
    body = {"model": mesh.model_id, "prompt": PROMPT, "max_tokens": args.client_tokens, "temperature": 0,
            "stream": True, "ignore_eos": True}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one_client(client, url, body) for _ in range(args.clients)))
        wall = time.perf_counter() - start
    return [r[0] * 1000 for r in results], [r[1] for r in results if r[1] is not None], wall


def bench_concurrent(args: argparse.Namespace, mesh: Mesh) -> None:
    latencies, errors, wall = asyncio.run(_concurrent(args, mesh))
    print(f"\n[3] load: {args.clients} concurrent streamed completions of {args.client_tokens} tokens at C "
          f"(all through the tunnel to A)")
    print(f"    errors: {len(errors)}   (target 0)")
    for err in sorted(set(errors))[:5]:
        print(f"      {errors.count(err)} x {err}")
    print(f"    latency p50 {percentile(latencies, 0.5):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms, "
          f"all done in {wall:.1f} s ({args.clients * args.client_tokens / wall:.0f} tok/s overall)")


# ---------------------------------------------------------------- part 2: bulk


def count_yamux_frames() -> Counter[str]:
    """Count the yamux frames this process sends, by type (`data`, `data_bytes`, `window_update`): how finely
    the tunnel's bytes are cut explains most of its cost. Wraps py-libp2p's one frame writer."""
    from libp2p.stream_muxer.yamux import yamux

    counts: Counter[str] = Counter()
    write_frame = yamux.Yamux._write_frame

    async def counted(self: Any, data: bytes) -> None:
        kind = data[1] if len(data) >= yamux.HEADER_SIZE else -1
        if kind == yamux.TYPE_DATA:
            counts["data"] += 1
            counts["data_bytes"] += len(data) - yamux.HEADER_SIZE
        elif kind == yamux.TYPE_WINDOW_UPDATE:
            counts["window_update"] += 1
        await write_frame(self, data)

    yamux.Yamux._write_frame = counted  # type: ignore[method-assign]
    return counts


def _bulk_server_main(profile: str | None) -> None:
    """The helper process: an Overlay whose TunnelServer answers `/v1/bulk` with N zero-ish bytes in 1 MiB
    chunks, and a TCP listener that sends N bytes (N: a decimal line from the client), or, asked `stats`, its
    yamux frame counts as JSON. Prints its multiaddr and TCP port, then runs until SIGINT."""
    import trio

    frames = count_yamux_frames()

    from meshp2p.p2p.overlay import Overlay, OverlayConfig
    from meshp2p.p2p.tunnel import TunnelAnswer, TunnelServer
    from meshp2p.wire.identity import Identity

    payload = b"\x5a" * BULK_CHUNK_BYTES

    async def chunks(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // BULK_CHUNK_BYTES):
            yield payload

    async def handler(peer: Any, head: Any, body: bytes) -> TunnelAnswer:
        total = int(json.loads(body)["bytes"])
        return TunnelAnswer(200, (("content-type", "application/octet-stream"),), None, chunks(total))

    async def tcp_handler(stream: trio.SocketStream) -> None:
        line = b""
        while not line.endswith(b"\n"):
            got = await stream.receive_some(64)
            if not got:
                return
            line += got
        if line == b"stats\n":
            await stream.send_all(json.dumps(frames).encode())
        else:
            for _ in range(int(line) // BULK_CHUNK_BYTES):
                await stream.send_all(payload)
        await stream.aclose()

    async def main() -> None:
        overlay = Overlay(Identity.generate(), OverlayConfig())
        async with trio.open_nursery() as nursery:
            await nursery.start(overlay.run)
            TunnelServer(overlay, is_member=lambda _peer: True, handler=handler).install()
            listeners = await nursery.start(trio.serve_tcp, tcp_handler, 0)
            port = listeners[0].socket.getsockname()[1]
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                print(overlay.addrs()[0], port, flush=True)
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    profiler = cProfile.Profile(time.thread_time) if profile else None
    try:
        if profiler is not None:
            profiler.enable()
        trio.run(main)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile or "")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Transfer:
    mb_per_s: float
    #: CPU seconds per GiB moved, in the receiving (this) and the sending (helper) process: what a busy
    #: machine does not distort as much as wall-clock throughput.
    recv_cpu_s_per_gib: float
    send_cpu_s_per_gib: float
    #: Yamux DATA frames the sender cut the bytes into, and window updates the receiver sent, per MiB.
    data_frames_per_mib: float = 0.0
    window_updates_per_mib: float = 0.0


async def _bulk_client(addr: str, port: int, helper_pid: int, mib: int, rounds: int,
                       profiler: cProfile.Profile | None) -> dict[str, list[Transfer]]:
    import trio

    from meshp2p.p2p.overlay import Overlay, OverlayConfig
    from meshp2p.p2p.tunnel import TunnelClient
    from meshp2p.wire.identity import Identity

    async def via_tunnel(total: int) -> int:
        reply = await client.request(peer, "POST", "/v1/bulk", json.dumps({"bytes": total}).encode(), model=None)
        got = 0
        async for chunk in reply.chunks():
            got += len(chunk)
        await reply.aclose()
        return got

    async def via_tcp(total: int) -> int:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"%d\n" % total)
        got = 0
        while data := await stream.receive_some(BULK_CHUNK_BYTES):
            got += len(data)
        await stream.aclose()
        return got

    async def helper_frames() -> Counter[str]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"stats\n")
        data = b""
        while got := await stream.receive_some(4096):
            data += got
        await stream.aclose()
        return Counter(json.loads(data))

    async def measure(fn: Any, total: int) -> Transfer:
        sent_before, updates_before = await helper_frames(), frames["window_update"]
        cpu_here, cpu_there, start = time.process_time(), cpu_s(helper_pid), time.perf_counter()
        got = await fn(total)
        elapsed = time.perf_counter() - start
        cpu_here, cpu_there = time.process_time() - cpu_here, cpu_s(helper_pid) - cpu_there
        assert got == total, f"{fn.__name__} delivered {got} of {total} bytes"
        gib, mib = total / 2**30, total / 2**20
        data_frames = (await helper_frames())["data"] - sent_before["data"]
        return Transfer(total / elapsed / 1e6, cpu_here / gib, cpu_there / gib, data_frames / mib,
                        (frames["window_update"] - updates_before) / mib)

    frames = count_yamux_frames()

    overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=(addr,)))
    results: dict[str, list[Transfer]] = {"tunnel": [], "tcp": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(overlay.run)
        client = TunnelClient(overlay)
        peer = overlay.connected_peers()[0]
        await via_tunnel(BULK_WARMUP_MIB * 1024 * 1024)
        await via_tcp(BULK_WARMUP_MIB * 1024 * 1024)
        if profiler is not None:
            profiler.enable()
        for i in range(rounds):
            order = [via_tunnel, via_tcp] if i % 2 == 0 else [via_tcp, via_tunnel]
            for fn in order:
                results["tunnel" if fn is via_tunnel else "tcp"].append(await measure(fn, mib * 1024 * 1024))
        if profiler is not None:
            profiler.disable()
        await client.aclose()
        nursery.cancel_scope.cancel()
    return results


def bench_bulk(args: argparse.Namespace, started: list[subprocess.Popen[Any]]) -> None:
    import trio

    server_profile = str(Path(args.profile) / "server.prof") if args.profile else ""
    helper = subprocess.Popen([sys.executable, __file__, "--bulk-server", server_profile],
                              stdout=subprocess.PIPE, text=True)
    started.append(helper)
    assert helper.stdout is not None
    line = helper.stdout.readline().split()
    if len(line) != 2:
        raise SystemExit("the bulk helper did not start")
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    results = trio.run(_bulk_client, line[0], int(line[1]), helper.pid, args.bulk_mib, args.bulk_rounds, profiler)
    if profiler is not None:
        profiler.dump_stats(str(Path(args.profile) / "client.prof"))
    print(f"\n[2] bulk: {args.bulk_mib} MiB in 1 MiB chunks, helper process → this process, "
          f"{args.bulk_rounds} interleaved rounds (median; then each round)")
    print(f"    {'':9}{'MB/s':>8}{'recv CPU s/GiB':>16}{'send CPU s/GiB':>16}   MB/s per round")
    median = {}
    for name, label in (("tcp", "raw TCP"), ("tunnel", "tunnel")):
        rows = results[name]
        median[name] = statistics.median(r.mb_per_s for r in rows)
        print(f"    {label:9}{median[name]:>8.1f}{statistics.median(r.recv_cpu_s_per_gib for r in rows):>16.2f}"
              f"{statistics.median(r.send_cpu_s_per_gib for r in rows):>16.2f}   "
              f"{' '.join(f'{r.mb_per_s:.0f}' for r in rows)}")
    rows = results["tunnel"]
    per_mib = statistics.median(r.data_frames_per_mib for r in rows)
    print(f"    tunnel per MiB: {per_mib:.1f} yamux DATA frames (avg {1024 / per_mib:.0f} KiB), "
          f"{statistics.median(r.window_updates_per_mib for r in rows):.1f} window updates")
    print(f"    ratio (tunnel/raw): {median['tunnel'] / median['tcp']:.3f}   (target >= 0.25)")


# ---------------------------------------------------------------- main


def main() -> int:
    if sys.argv[1:2] == ["--bulk-server"]:
        _bulk_server_main(sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model file A serves (needed unless --skip-mesh)")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved pairs of requests (default 12)")
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request (default 128)")
    parser.add_argument("--threads", type=int, default=1, help="llama-server threads (default 1, see above)")
    parser.add_argument("--bulk-mib", type=int, default=64, help="MiB per bulk transfer (default 64)")
    parser.add_argument("--bulk-rounds", type=int, default=3, help="interleaved bulk rounds (default 3)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients in part 3 (default 64; 0 skips it)")
    parser.add_argument("--client-tokens", type=int, default=8, help="tokens per concurrent request (default 8)")
    parser.add_argument("--skip-mesh", action="store_true", help="run only the bulk part")
    parser.add_argument("--skip-bulk", action="store_true", help="skip the bulk part")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of the bulk part to DIR")
    args = parser.parse_args()
    if not args.skip_mesh and not args.model:
        parser.error("--model is needed for the mesh parts (or pass --skip-mesh)")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    with processes() as started:
        if not args.skip_bulk:
            bench_bulk(args, started)
            stop(started.pop())
        if not args.skip_mesh:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    mesh = start_mesh(args, Path(tmp), started)
                    bench_tokens(args, mesh)
                    if args.clients > 0:
                        bench_concurrent(args, mesh)
                except BaseException:
                    _print_logs(Path(tmp))
                    raise
                finally:
                    while started:
                        stop(started.pop())
    return 0


def _print_logs(root: Path, lines: int = 15) -> None:
    """The end of each node's output, before its temporary home is removed."""
    for log in sorted(root.glob("*/output.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"--- {log.parent.name}: last {len(tail)} lines of output", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
