#!/usr/bin/env python3
"""How fast the project's GGUF header reader is against the `gguf` package's GGUFReader, side by side.

Both read the same file: a header with a 262 144-token vocabulary (strings and scores, as gemma-3's), the part
of a real model header that costs. meshp2p reads headers at start (every --model, every file in the model store),
so a slow reader is a slow start. Prints the median of each over several runs and their ratio.

usage: python tools/bench/gguf_header.py [--runs 5] [--tokens 262144]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
from pathlib import Path

import gguf

from meshp2p.inference.gguf_header import read_gguf_header


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def write_header(path: Path, tokens: int) -> None:
    pieces = b"".join(_string(f"tok{i}") for i in range(tokens))
    kvs = [
        _string("general.architecture") + struct.pack("<I", 8) + _string("gemma3"),
        _string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, tokens) + pieces,
        _string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, tokens) + bytes(4 * tokens),
        _string("gemma3.block_count") + struct.pack("<II", 4, 18),
    ]
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


def median_s(read: object, path: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        read(path)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="reads of each kind (median reported)")
    parser.add_argument("--tokens", type=int, default=262_144, help="vocabulary size in the header")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.gguf"
        write_header(path, args.tokens)
        ours = median_s(read_gguf_header, path, args.runs)
        theirs = median_s(gguf.GGUFReader, path, args.runs)
    print(f"header with a {args.tokens}-token vocabulary ({path.name}), median of {args.runs}:")
    print(f"  meshp2p read_gguf_header  {ours * 1000:8.1f} ms")
    print(f"  gguf.GGUFReader           {theirs * 1000:8.1f} ms")
    print(f"  ratio (GGUFReader / ours) {theirs / ours:8.1f}x")


if __name__ == "__main__":
    main()
