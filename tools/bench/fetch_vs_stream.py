#!/usr/bin/env python3
"""What serving a model file to a member costs this node's own inference stream (issue 13: a fetch must never
slow the node's streams), with uploads yielding to inference (p2p/model_fetch.py's busy cap) and without.

One llama-server on the embedded gemma-3-270m (`-t 1`), one holder process offering a `--mib` MiB file over
`/meshp2p/model/1.0.0` (tools/bench/model_fetch.py's holder), and this process fetching it again and again.
Interleaved rounds of one streamed 128-token completion each:
- `alone`: no fetch;
- `fetch`: the holder uploads at full speed during the stream (what it did before the busy cap);
- `fetch, yielding`: the holder's uploads are held to BUSY_UPLOAD_BYTES_S while the stream runs (a flag file
  stands for the node's `in_flight > 0`).
Tok/s is llama-server's own (`timings.predicted_per_second`); MB/s is what the fetch moved during the stream.
On one machine the fetching side shares the cores too (on a mesh it is another machine), so `fetch` overstates
what an upload alone costs; the yielding row is the figure that matters.

usage: python tools/bench/fetch_vs_stream.py [--mib 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_fetch import start_holder, write_file  # noqa: E402  (a sibling script: the holder process)
from streaming import free_port  # noqa: E402  (a sibling module)
from tunnel_bench import processes  # noqa: E402

TOKENS = 128
PROMPT = "Write a long story about a lighthouse keeper and the sea."


def start_llama_server(started: list[subprocess.Popen[bytes]], log: Path) -> str:
    from meshp2p.inference.binaries import find_llama_binaries
    from meshp2p.inference.embedded import default_model

    model = default_model()
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(find_llama_binaries().server), "-m", str(model.path), "--host", "127.0.0.1",
                                 "--port", str(port), "-t", "1", "-c", "1024", "--no-webui"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started.append(proc)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return base
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"llama-server did not start (see {log})")


def stream_tok_s(base: str) -> float:
    body = json.dumps({"prompt": PROMPT, "n_predict": TOKENS, "temperature": 0, "stream": True,
                       "cache_prompt": False, "ignore_eos": True}).encode()
    request = urllib.request.Request(base + "/completion", data=body, headers={"Content-Type": "application/json"})
    rate = 0.0
    with urllib.request.urlopen(request, timeout=120) as response:
        for line in response:
            if line.startswith(b"data: "):
                event = json.loads(line[6:])
                if event.get("stop"):
                    rate = float(event["timings"]["predicted_per_second"])
    return rate


def _set_busy(flag: Path, busy: bool) -> None:
    """The holder's uploads yield while `flag` exists (the node's `in_flight > 0`)."""
    if busy:
        flag.touch()
    else:
        flag.unlink(missing_ok=True)


def _empty(folder: Path) -> None:
    for leftover in folder.iterdir():
        leftover.unlink()


async def run(base: str, holder_addr: str, content_id: str, out: Path, flag: Path,
              rounds: int) -> dict[str, list[tuple[float, float]]]:
    import trio

    from meshp2p.p2p.model_fetch import fetch_model_file
    from meshp2p.p2p.overlay import Overlay, OverlayConfig
    from meshp2p.wire.identity import Identity
    from meshp2p.wire.model_id import parse_content_id

    cid = parse_content_id(content_id)
    results: dict[str, list[tuple[float, float]]] = {"alone": [], "fetch": [], "fetch, yielding": []}
    overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=(holder_addr,)))
    moved = [0]

    async def keep_fetching(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            target = out / "fetched.gguf"
            await fetch_model_file(overlay, cid, [peer], target, on_bytes=lambda n: moved.__setitem__(0, moved[0] + n))
            target.unlink()

    async with trio.open_nursery() as nursery:
        await nursery.start(overlay.run)  # connected to the holder (its bootstrap peer) once started
        by_id = {str(p): p for p in overlay.connected_peers()}
        peer = by_id[holder_addr.rsplit("/p2p/", 1)[1]]
        await trio.to_thread.run_sync(stream_tok_s, base)  # warm-up
        for _ in range(rounds):
            for name in results:
                _set_busy(flag, name == "fetch, yielding")
                async with trio.open_nursery() as inner:
                    if name != "alone":
                        await inner.start(keep_fetching)
                        await trio.sleep(1.0)  # the fetch under way before the stream starts
                    before, started = moved[0], time.monotonic()
                    tok_s = await trio.to_thread.run_sync(stream_tok_s, base)
                    mb_s = (moved[0] - before) / (time.monotonic() - started) / 1e6
                    inner.cancel_scope.cancel()
                _set_busy(flag, False)
                _empty(out)
                results[name].append((tok_s, mb_s))
        nursery.cancel_scope.cancel()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="size of the file the holder serves (default 256)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    args = parser.parse_args()
    import trio

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="fetch-vs-stream-") as tmp, processes() as started:
        root = Path(tmp)
        (root / "out").mkdir()
        source, flag = root / "offered.gguf", root / "busy.flag"
        content_id = write_file(source, args.mib * 2**20)
        holder = start_holder(source, content_id, "", started, yield_file=str(flag))
        base = start_llama_server(started, root / "llama-server.log")
        results = trio.run(run, base, holder.addr, content_id, root / "out", flag, args.rounds)
    from meshp2p.p2p.model_fetch import BUSY_UPLOAD_BYTES_S

    print(f"\nfetch vs stream: gemma-3-270m -t 1, {TOKENS} tokens per stream, {args.rounds} interleaved rounds, "
          f"a {args.mib} MiB file served to this process (busy cap {BUSY_UPLOAD_BYTES_S / 1e6:g} MB/s); "
          f"load {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, {os.cpu_count()} cores")
    alone = statistics.median(t for t, _ in results["alone"])
    for name, rows in results.items():
        tok_s = statistics.median(t for t, _ in rows)
        mb_s = statistics.median(m for _, m in rows)
        print(f"    {name:16} {tok_s:7.1f} tok/s   x{tok_s / alone:.2f} of alone   fetch {mb_s:7.1f} MB/s   "
              f"rounds {' '.join(f'{t:.0f}' for t, _ in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
