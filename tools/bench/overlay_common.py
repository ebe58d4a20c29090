"""What the overlay benchmarks share: percentiles, log taming, closing a node's swarm, stopping helper processes.

Imported by `overlay_discover.py` and `gossip_convergence.py` as a sibling module (they put this folder on
`sys.path`), so each stays a plain script.
"""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import time
from collections.abc import Sequence

import trio

from meshp2p.p2p.overlay import Overlay

#: Closing ~20 connections takes ~0.6 s on a quiet machine; one abandoned half-way would leave a zombie peer.
CLOSE_TIMEOUT_S = 30.0
#: A helper process closes its nodes' swarms before it exits; past this it is killed.
PROCESS_STOP_TIMEOUT_S = 20.0
PROCESS_KILL_TIMEOUT_S = 5.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least a fraction q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f}"


def quiet_logging(verbose: bool) -> None:
    """libp2p logs ERROR for every failed dial (routine here: nodes come and go); keep the tables readable."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING if verbose else logging.CRITICAL)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


async def close_swarm(overlay: Overlay) -> None:
    """Close an overlay's swarm; call it before cancelling `Overlay.run`.

    `Overlay.run` stops by cancellation; its shutdown closes the TCP listener, but under cancellation
    py-libp2p never closes the swarm's connections: they stay up with nobody serving them, so every later
    stream a peer opens on one stalls for the 10 s protocol-negotiation timeout. (Closing after the
    cancellation is too late: the connections are no longer tracked.) A real process that exits closes its
    sockets; this does the same for an in-process node.
    """
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
        await overlay.host.get_network().close()


async def close_all(overlays: Sequence[Overlay]) -> None:
    async with trio.open_nursery() as nursery:
        for overlay in overlays:
            nursery.start_soon(close_swarm, overlay)


def stop_processes(procs: Sequence[subprocess.Popen[str]]) -> None:
    """Stop helper processes by their PIDs and reap them: SIGINT to each (its nodes close their swarms, then it
    exits), one shared wait, then SIGTERM, and SIGKILL for any that still hangs."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + PROCESS_STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(PROCESS_KILL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
