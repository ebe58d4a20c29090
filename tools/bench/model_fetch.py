#!/usr/bin/env python3
"""What a peer fetch of a model file costs (`/meshp2p/model/1.0.0`, meshp2p/p2p/model_fetch.py), against raw TCP
between the same processes sending the same file, and from two holders at once. Issue 13's target: fetch >= 0.5 x
raw TCP.

A file of `--mib` MiB (random bytes) is written to a temporary folder; one or two helper processes each run an
Overlay and a ModelFileServer that offers it, plus a plain trio TCP listener that sends the same file (read in
1 MiB pieces, as the server reads its chunks). This process fetches it:
- `fetch`: `fetch_model_file` from one holder (Noise + yamux, each 1 MiB chunk checked against the manifest, the
  whole file against its content id, written to disk);
- `raw TCP`: the same bytes from the same holder over a plain TCP stream, written to disk, nothing checked;
- `fetch x2`: `fetch_model_file` from both holders at once (with `--holders 2`).
Interleaved rounds, medians; MB/s and CPU seconds per GiB moved in this process (the receiver, worker threads
included) and in the holders (the senders, summed), which a busy machine distorts less than MB/s; and how long a
fetch takes from its last chunk's arrival to a file checked against its content id. The first fetch
(not counted) warms up connections and lets each holder cut the file's manifest once (it hashes the file).
Every fetched file is deleted after its round, the temporary folder at the end, and every helper process is
stopped (SIGINT, then wait).

usage: python tools/bench/model_fetch.py [--mib 256] [--rounds 3] [--holders 2] [--profile DIR]
  The documented figure is `--mib 1024`. --profile DIR writes cProfile stats of the measured rounds
  (fetcher.prof; holder-N.prof) to DIR, timed in thread CPU time (waiting for a core is not charged).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The checkout this script is in, so that it (and its helpers) measure this checkout's meshp2p, not whichever
#: one is installed.
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from tunnel_bench import cpu_s, processes  # noqa: E402  (a sibling script: the same process handling)

PIECE_BYTES = 1024 * 1024
STOP_TIMEOUT_S = 30.0
TARGET_RATIO = 0.5


# ---------------------------------------------------------------- processes


def write_file(path: Path, size: int) -> str:
    """`size` pseudo-random bytes at `path`; returns the content id's text."""
    from meshp2p.wire.model_id import ContentIdHasher

    rng = random.Random(13)
    hasher = ContentIdHasher()
    with path.open("wb") as file:
        left = size
        while left:
            block = rng.randbytes(min(left, PIECE_BYTES))
            file.write(block)
            hasher.update(block)
            left -= len(block)
    return hasher.result().text


# ---------------------------------------------------------------- the holder (a helper process)


def _holder_main(path: str, content_id: str, profile: str, yield_file: str = "") -> None:
    """An Overlay offering `path` as `content_id` to anyone, and a TCP listener that sends the file to whoever
    connects. Prints its multiaddr and TCP port, then runs until SIGINT. With `yield_file`, its uploads yield to
    inference (the busy cap) while that file exists: what a node does while it answers requests
    (tools/bench/fetch_vs_stream.py)."""
    import trio

    from meshp2p.p2p.model_fetch import ModelFileServer
    from meshp2p.p2p.overlay import Overlay, OverlayConfig
    from meshp2p.wire.identity import Identity
    from meshp2p.wire.model_id import parse_content_id

    cid = parse_content_id(content_id)
    offered = Path(path)

    async def send_file(stream: trio.SocketStream) -> None:
        fd = os.open(offered, os.O_RDONLY)
        try:
            offset = 0
            while piece := os.pread(fd, PIECE_BYTES, offset):
                await stream.send_all(piece)
                offset += len(piece)
        finally:
            os.close(fd)
            await stream.aclose()

    async def main() -> None:
        overlay = Overlay(Identity.generate(), OverlayConfig())
        async with trio.open_nursery() as nursery:
            await nursery.start(overlay.run)
            ModelFileServer(overlay, is_member=lambda _peer: True,
                            files=lambda c: offered if c == cid else None,
                            yield_to=(lambda: os.path.exists(yield_file)) if yield_file else lambda: False).install()
            listeners = await nursery.start(trio.serve_tcp, send_file, 0)
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
            profiler.dump_stats(profile)


@dataclass
class Holder:
    proc: subprocess.Popen[str]
    addr: str
    port: int


def start_holder(path: Path, content_id: str, profile: str, started: list[subprocess.Popen[Any]],
                 yield_file: str = "") -> Holder:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.Popen([sys.executable, __file__, "--holder", str(path), content_id, profile, yield_file],
                            stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2:
        raise SystemExit("a holder process did not start")
    return Holder(proc, line[0], int(line[1]))


# ---------------------------------------------------------------- the fetcher (this process)


@dataclass
class Transfer:
    mb_per_s: float
    #: CPU seconds per GiB in this process (all its threads) and in the holders that sent (summed).
    recv_cpu_s_per_gib: float
    send_cpu_s_per_gib: float


async def _fetcher(holders: list[Holder], content_id: str, size: int, out: Path, rounds: int,
                   profiler: cProfile.Profile | None) -> dict[str, list[Transfer]]:
    import trio

    from meshp2p.p2p.model_fetch import fetch_model_file
    from meshp2p.p2p.overlay import Overlay, OverlayConfig
    from meshp2p.wire.identity import Identity
    from meshp2p.wire.model_id import parse_content_id

    cid = parse_content_id(content_id)
    target = out / "fetched.gguf"

    #: Seconds from the last chunk's arrival to the fetch's return (the whole-file check), per fetch.
    tails: list[float] = []

    async def fetch_from(peers: list[Any]) -> int:
        whole: list[float] = []

        def on_progress(done: int) -> None:
            if done == size:
                whole.append(time.perf_counter())

        report = await fetch_model_file(overlay, cid, peers, target, on_progress=on_progress)
        tails.append(time.perf_counter() - whole[0])
        got = report.path.stat().st_size
        target.unlink()
        return got

    async def fetch_one() -> int:
        return await fetch_from(peers[:1])

    async def fetch_two() -> int:
        return await fetch_from(peers)

    async def raw_tcp() -> int:
        stream = await trio.open_tcp_stream("127.0.0.1", holders[0].port)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        got = 0
        try:
            while data := await stream.receive_some(PIECE_BYTES):
                os.write(fd, data)
                got += len(data)
        finally:
            os.close(fd)
            await stream.aclose()
        target.unlink()
        return got

    async def measure(fn: Callable[[], Any], senders: list[Holder]) -> Transfer:
        cpu_here, cpu_there = time.process_time(), sum(cpu_s(h.proc.pid) for h in senders)
        start = time.perf_counter()
        got = await fn()
        elapsed = time.perf_counter() - start
        cpu_here = time.process_time() - cpu_here
        cpu_there = sum(cpu_s(h.proc.pid) for h in senders) - cpu_there
        assert got == size, f"{fn.__name__} delivered {got} of {size} bytes"
        gib = size / 2**30
        return Transfer(size / elapsed / 1e6, cpu_here / gib, cpu_there / gib)

    overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=tuple(h.addr for h in holders)))
    kinds: dict[str, tuple[Callable[[], Any], list[Holder]]] = {"fetch": (fetch_one, holders[:1]),
                                                                "tcp": (raw_tcp, holders[:1])}
    if len(holders) > 1:
        kinds["fetch2"] = (fetch_two, holders)
    results: dict[str, list[Transfer]] = {name: [] for name in kinds}
    async with trio.open_nursery() as nursery:
        await nursery.start(overlay.run)  # connected to the holders (its bootstrap peers) once started
        by_addr = {str(p): p for p in overlay.connected_peers()}
        if len(by_addr) < len(holders):
            raise SystemExit("could not connect to every holder")
        peers = [by_addr[h.addr.rsplit("/p2p/", 1)[1]] for h in holders]
        start = time.perf_counter()
        await (fetch_two() if len(holders) > 1 else fetch_one())  # warm-up: connections, each holder's manifest
        print(f"    warm-up fetch (each holder hashes the file once): {time.perf_counter() - start:.1f} s",
              flush=True)
        await raw_tcp()
        tails.clear()
        if profiler is not None:
            profiler.enable()
        for i in range(rounds):
            order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
            for name in order:
                fn, senders = kinds[name]
                results[name].append(await measure(fn, senders))
        if profiler is not None:
            profiler.disable()
        nursery.cancel_scope.cancel()
    print(f"    fetch: last chunk to a checked file in {statistics.median(tails) * 1000:.0f} ms (median)")
    return results


def main() -> int:
    if sys.argv[1:2] == ["--holder"]:
        _holder_main(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "",
                     sys.argv[5] if len(sys.argv) > 5 else "")
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256; documented: 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--holders", type=int, choices=(1, 2), default=2,
                        help="holder processes (default 2: also fetch from both at once)")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats of the measured rounds to DIR")
    args = parser.parse_args()
    import trio

    size = args.mib * 2**20
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="model-fetch-bench-") as tmp, processes() as started:
        root = Path(tmp)
        (root / "out").mkdir()
        source = root / "model.gguf"
        content_id = write_file(source, size)
        holders = [start_holder(source, content_id,
                                str(Path(args.profile) / f"holder-{i}.prof") if args.profile else "", started)
                   for i in range(args.holders)]
        print(f"\nmodel fetch: {args.mib} MiB file, {args.holders} holder process(es) → this process, "
              f"{args.rounds} interleaved rounds (median; then each round)", flush=True)
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        results = trio.run(_fetcher, holders, content_id, size, root / "out", args.rounds, profiler)
        if profiler is not None:
            profiler.dump_stats(str(Path(args.profile) / "fetcher.prof"))
    labels = {"tcp": "raw TCP", "fetch": "fetch", "fetch2": "fetch x2"}
    print(f"    {'':10}{'MB/s':>8}{'recv CPU s/GiB':>16}{'send CPU s/GiB':>16}   MB/s per round")
    median = {}
    for name in ("tcp", "fetch", "fetch2"):
        if name not in results:
            continue
        rows = results[name]
        median[name] = statistics.median(r.mb_per_s for r in rows)
        print(f"    {labels[name]:10}{median[name]:>8.1f}"
              f"{statistics.median(r.recv_cpu_s_per_gib for r in rows):>16.2f}"
              f"{statistics.median(r.send_cpu_s_per_gib for r in rows):>16.2f}   "
              f"{' '.join(f'{r.mb_per_s:.0f}' for r in rows)}")
    print(f"    ratio (fetch/raw): {median['fetch'] / median['tcp']:.3f}   (target >= {TARGET_RATIO})")
    if "fetch2" in median:
        print(f"    ratio (fetch from 2 holders/raw): {median['fetch2'] / median['tcp']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
