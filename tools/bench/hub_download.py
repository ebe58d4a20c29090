#!/usr/bin/env python3
"""What meshp2p's Hugging Face download costs against `curl` of the same file from the same server (issue 13's
target: meshp2p >= 0.9 x curl).

A local hub (tests/helpers/hub_server.py: the hub's protocol as huggingface_hub uses it, LFS file behind a CDN
redirect) runs in a child process, so its sending threads do not share this process's interpreter lock with the
download being measured. It serves one repo with a `--mib` MiB file of random bytes. Each round, interleaved:
- `meshp2p`: `ensure_files` into a fresh huggingface_hub cache, exactly as `meshp2p download` does: the HEAD for
  the metadata, the disk check, the bytes through `meshp2p/inference/http_fetch.py` (hashed as they arrive), the
  size and SHA-256 check, and the filing into the cache (refs, snapshot link);
- `curl`: `curl -L` of the same resolve URL to a file (following the same redirect), nothing checked;
- `hf_hub_download`: huggingface_hub's own download into a fresh cache (for reference: what any HF tool pays).
Medians of `--rounds` rounds, MB/s and the ratio to curl. Every downloaded file and cache is removed after its
round; the hub process is stopped at the end (stdin closed, then SIGINT if it lingers).

usage: python tools/bench/hub_download.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

HUB_REPO = "bench/tiny"
HUB_FILE = "model.gguf"
STOP_TIMEOUT_S = 30.0


def serve(mib: int) -> None:
    """The child: a local hub with one file, its address on stdout, until stdin closes."""
    from helpers.hub_server import local_hub

    data = os.urandom(mib * 2**20)
    with local_hub() as hub:
        hub.add_repo(HUB_REPO, {HUB_FILE: data})
        print(json.dumps({"endpoint": hub.endpoint, "sha256": hashlib.sha256(data).hexdigest()}), flush=True)
        sys.stdin.read()


def timed(download: Callable[[Path], Path], size: int) -> float:
    """MB/s of one download into a fresh temporary folder (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    try:
        start = time.perf_counter()
        path = download(folder)
        elapsed = time.perf_counter() - start
        assert path.stat().st_size == size, f"{path} has {path.stat().st_size} bytes, not {size}"
        return size / elapsed / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the served file in MiB (default 256)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds, interleaved (default 3)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        serve(args.mib)
        return
    if shutil.which("curl") is None:
        sys.exit("curl is not installed: the benchmark compares against it (apt-get install curl)")

    from huggingface_hub import hf_hub_download

    from meshp2p.inference.downloads import ensure_files
    from meshp2p.inference.hub import Hub, HubFile

    child = subprocess.Popen([sys.executable, __file__, "--serve", "--mib", str(args.mib)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        info = json.loads(child.stdout.readline())
        endpoint, size = info["endpoint"], args.mib * 2**20
        url = f"{endpoint}/{HUB_REPO}/resolve/main/{HUB_FILE}"

        def meshp2p(folder: Path) -> Path:
            hub = Hub(endpoint=endpoint, cache_dir=folder / "hub", offline=False)
            (path,) = ensure_files([HubFile(HUB_REPO, HUB_FILE)], hub=hub, title="bench")
            return path

        def curl(folder: Path) -> Path:
            out = folder / HUB_FILE
            subprocess.run(["curl", "-sSfL", "-o", str(out), url], check=True)
            return out

        def hf(folder: Path) -> Path:
            return Path(hf_hub_download(HUB_REPO, HUB_FILE, cache_dir=folder / "hub", endpoint=endpoint))

        ways: dict[str, Callable[[Path], Path]] = {"meshp2p": meshp2p, "curl": curl, "hf_hub_download": hf}
        for way in ways.values():
            timed(way, size)  # warm-up: page cache, connection setup, imports
        results: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                results[name].append(timed(way, size))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.send_signal(2)
            child.wait(STOP_TIMEOUT_S)

    load = os.getloadavg()[0]
    print(f"hub download of {args.mib} MiB over loopback, {args.rounds} rounds (load {load:.2f}, "
          f"{os.cpu_count()} cores)")
    curl_mbps = statistics.median(results["curl"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:<16} {median:8.1f} MB/s   x{median / curl_mbps:.2f} of curl")
    ratio = statistics.median(results["meshp2p"]) / curl_mbps
    print(f"meshp2p / curl = {ratio:.2f} (target >= 0.9): {'ok' if ratio >= 0.9 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
