#!/usr/bin/env python3
"""What each of our Noise/yamux patches (meshp2p/p2p/_libp2p_patches.py) saves, one at a time, side by side.

Both ends of one bulk libp2p stream run in this process (two Overlays on loopback): one writes `--mib` MiB in
256 KiB pieces, the other reads 1 MiB at a time. With both ends in one process, CPU seconds per GiB is the whole
cost of moving the bytes (a busy machine inflates it less than MB/s), and trio's scheduler steps per MiB count
the awaits that yielded. Variants, interleaved round by round (medians):
  patched   every patch (what an Overlay runs)
  -noise    py-libp2p's own Noise session (`tune_noise` undone)
  -frames   py-libp2p's bytearray stream buffers and joining read (`_FrameBuffer`, `_read_up_to_a_frame` undone)
  -locks    trio's locks on the frame path (`tune_locks` undone)
  stock     all three undone (the frame-size and window-update patches, which came earlier, stay in every variant)
The undoing reaches into the patch module's private names: this is a measuring tool, not an API.

usage: python tools/bench/libp2p_bulk.py [--mib 96] [--rounds 5] [--variants patched,-noise,-frames,-locks,stock]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# This checkout's meshp2p, not whichever one is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio
from libp2p.custom_types import TProtocol
from libp2p.io import utils as io_utils
from libp2p.security.noise import patterns as noise_patterns
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux import yamux as yamux_module

from meshp2p.p2p import _libp2p_patches as patches
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity

PIECE_BYTES = 256 * 1024
READ_BYTES = 1024 * 1024
PROTOCOL = TProtocol("/meshp2p-bench/bulk/1.0.0")
_PY_READ_DATA_BODY = yamux_module.Yamux._read_data_body
VARIANTS = ("patched", "-noise", "-frames", "-locks", "stock")


def undo(variant: str) -> None:
    """Take back what `variant` goes without; the Overlays just built applied every patch."""
    off = {"patched": set(), "stock": {"noise", "frames", "locks"}}.get(variant, {variant.lstrip("-")})
    if "noise" in off:
        noise_patterns.SecureSession = SecureSession  # type: ignore[attr-defined]
        yamux_module.read_exactly = io_utils.read_exactly  # type: ignore[attr-defined]
        yamux_module.Yamux._read_data_body = _PY_READ_DATA_BODY  # type: ignore[method-assign]
    if "frames" in off:
        yamux_module.YamuxStream.read = patches._PY_YAMUX_READ  # type: ignore[method-assign]
    if "locks" in off:
        for cls, init in patches._PY_INITS.items():
            cls.__init__ = init  # type: ignore[misc]

    def yamux_init(self: Any, *args: Any, **kwargs: Any) -> None:
        patches._PY_YAMUX_INIT(self, *args, **kwargs)
        if "frames" not in off:
            self.stream_buffers = patches._StreamBuffers(self.stream_buffers)
        if "locks" not in off:
            self.streams_lock = patches._EagerLock()
            self._write_lock = patches._EagerLock()

    yamux_module.Yamux.__init__ = yamux_init  # type: ignore[method-assign]


class Steps(trio.abc.Instrument):
    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: Any) -> None:
        self.steps += 1


async def one_round(variant: str, mib: int, steps: Steps) -> tuple[float, float, float]:
    """CPU s/GiB, MB/s and scheduler steps per MiB of one transfer, both ends in this process."""
    total = mib * 2**20
    payload = bytes(range(256)) * (PIECE_BYTES // 256)

    async def send(stream: Any) -> None:
        await stream.read(16)
        for _ in range(total // PIECE_BYTES):
            await stream.write(payload)
        await stream.close()

    sender = Overlay(Identity.generate(), OverlayConfig())
    sender.host.set_stream_handler(PROTOCOL, send)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        receiver = Overlay(Identity.generate(), OverlayConfig(bootstrap=(sender.addrs()[0],)))
        undo(variant)  # after both Overlays applied the patches, before their connection exists
        await nursery.start(receiver.run)
        stream = await receiver.host.new_stream(sender.peer_id, [PROTOCOL])
        steps.steps, cpu, start = 0, time.process_time(), time.perf_counter()
        await stream.write(b"go")
        got = 0
        while got < total:
            got += len(await stream.read(READ_BYTES))
        wall, cpu, step_count = time.perf_counter() - start, time.process_time() - cpu, steps.steps
        nursery.cancel_scope.cancel()
    return cpu / (mib / 1024), total / wall / 1e6, step_count / mib


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=96, help="MiB per transfer (default 96)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + " ".join(VARIANTS))
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    steps = Steps()
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}

    async def run() -> None:
        for i in range(args.rounds):
            for variant in variants if i % 2 == 0 else reversed(variants):
                results[variant].append(await one_round(variant, args.mib, steps))

    trio.run(run, instruments=[steps])
    print(f"\nbulk libp2p stream, both ends in this process: {args.mib} MiB in {PIECE_BYTES // 1024} KiB writes, "
          f"{READ_BYTES // 2**20} MiB reads, {args.rounds} interleaved rounds (medians)")
    print(f"    {'':10}{'CPU s/GiB':>10}{'MB/s':>8}{'steps/MiB':>11}   CPU s/GiB per round")
    def median(variant: str, field: int) -> float:
        return statistics.median(r[field] for r in results[variant])

    for variant in variants:
        print(f"    {variant:10}{median(variant, 0):>10.2f}{median(variant, 1):>8.0f}{median(variant, 2):>11.1f}   "
              + " ".join(f"{r[0]:.2f}" for r in results[variant]))
    if "patched" in results:
        for variant in variants:
            if variant != "patched":
                print(f"    {variant}: {median(variant, 0) / median('patched', 0):.2f} x the patched CPU per GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
