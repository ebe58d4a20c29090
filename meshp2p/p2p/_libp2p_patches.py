"""What meshp2p changes inside py-libp2p, in one place: its logging, yamux's frame size and window updates, and
a deadline and one quick retry on every dial. `Overlay` applies them when it builds a host; nothing else here
runs on import.

Logging. `import libp2p` takes over its logger (and sets levels on its children); `tame_logging` hands it back,
silenced unless `-v`: py-libp2p logs routine network weather (a peer without a protocol, a refused dial) at ERROR.

Yamux frame size. Bulk throughput over Noise + yamux is bound by per-frame work in Python (trio locks and
wake-ups, a window update per read, one or two Noise messages), not by crypto. py-libp2p caps a DATA frame at
64 KiB *including* its 12-byte header, so a 64 KiB tunnel BODY frame became two yamux frames and three Noise
messages, and a 256 KiB one five frames. With a cap above the tunnel's 256 KiB BODY frame, every BODY frame is one
yamux frame (tools/bench/tunnel_bench.py: CPU per GiB about halved on both ends). This is a sender-side choice only:
yamux never sends more than the window the receiver granted, and receivers size frames by that window (py-libp2p
accepts up to 16 MiB, jvm-libp2p 1 MiB), so peers need not agree on it. The price is head-of-line blocking: one frame
holds the connection's write lock for up to `YAMUX_MAX_FRAME_BYTES` (1-2 ms at the tunnel's loopback rate) before
another stream's frame can go.

Window updates. py-libp2p sends a WINDOW_UPDATE after every read that returned data (PY_YAMUX_RELEASE_ON_READ,
default on): one more frame, Noise message and syscall per gossip message received, and ~4 per MiB of bulk data.
Off, it follows go-yamux: an update when half the window is consumed. Measured: an idle member of a 7-member mesh
3.4 % -> 2.7 % CPU (tools/bench/idle_node.py --others 6), bulk tunnel 4.1 -> 0.4 updates per MiB and 289 -> 446
MB/s (tools/bench/tunnel_bench.py --skip-mesh, shared 2-core machine). It is the receiver's choice alone: the
sender only waits for window, so peers need not agree.

The initial window (`DEFAULT_WINDOW_SIZE`, 256 KiB) is left alone. Raising it would change what each side assumes
the other granted before any window update, so it is only safe when every peer raises it too, and it lets every
stream buffer more unread data; py-libp2p already grows a busy stream's window to 16 MiB, and the benchmark
measured no gain from a larger start.

Dials. py-libp2p bounds no dial but its auto-connector's, and retries a failed one three times; `tune_dials`
bounds every dial of a swarm (`LOOKUP_DIAL_TIMEOUT_S`, or what `dial_timeout` sets for the dials under it) and
retries once, soon.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import trio
from libp2p.network.config import RetryConfig
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux import yamux as yamux_module

#: Every other dial: one that a DHT lookup (ours or py-libp2p's) or a stream to a peer we are not connected to
#: makes. py-libp2p bounds none of them (ConnectionConfig.dial_timeout is read only by its auto-connector), so a
#: departed peer in a routing table could stall a lookup for the OS's TCP connect timeout (~2 min on Linux). 5 s
#: covers a TCP connect whose first two SYNs were lost (retransmits at 1 s and 3 s) plus the Noise and yamux
#: upgrade at internet round trips; loopback and LAN dials take milliseconds.
LOOKUP_DIAL_TIMEOUT_S = 5.0
#: The bound `tune_dials` applies; `dial_timeout` (say, Overlay.connect: an address we were handed on purpose)
#: changes it for the dials made under it.
_dial_timeout_s: ContextVar[float] = ContextVar("meshp2p_dial_timeout_s", default=LOOKUP_DIAL_TIMEOUT_S)
#: One retry of a failed dial, soon. py-libp2p's default (3 retries, 0.1/0.2/0.4 s backoff) spends ~0.7 s on
#: every departed peer a lookup is handed (a finished `discover` client stays in servers' routing tables).
DIAL_RETRIES = 1
DIAL_RETRY_DELAY_S = 0.05
#: Largest yamux DATA frame we send, header included: above the tunnel's 256 KiB BODY frame plus headers, so one
#: write of a BODY frame is one yamux frame (see the module docstring).
YAMUX_MAX_FRAME_BYTES = 512 * 1024
#: "0": a WINDOW_UPDATE when half the receive window is consumed (go-yamux), not after every read (module docstring).
YAMUX_RELEASE_ON_READ_ENV = "PY_YAMUX_RELEASE_ON_READ"


def tame_logging() -> None:
    """`import libp2p` takes over its logger (and sets levels on its children); give it back to ours."""
    root = logging.getLogger("libp2p")
    root.propagate = True
    root.handlers.clear()
    # What matters to an operator, meshp2p logs itself. `meshp2p -v` turns libp2p's own logging back on.
    root.setLevel(logging.CRITICAL if logging.getLogger().level > logging.DEBUG else logging.DEBUG)
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("libp2p."):
            logging.getLogger(name).setLevel(logging.NOTSET)


def tune_yamux() -> None:
    """Send larger yamux frames, and window updates only per half window (module docstring).

    py-libp2p reads both on every write/read: the frame cap from a module constant, the window-update rule from
    the environment (PY_YAMUX_RELEASE_ON_READ, its own tuning knob; an operator's setting is left alone).
    """
    yamux_module.MAX_MESSAGE_SIZE = max(yamux_module.MAX_MESSAGE_SIZE, YAMUX_MAX_FRAME_BYTES)
    os.environ.setdefault(YAMUX_RELEASE_ON_READ_ENV, "0")


def tune_dials(swarm: Any) -> None:
    """One quick retry, and a deadline on every dial of `swarm`: the one place all of them pass (host.connect,
    new_stream)."""
    # new_host has no retry_config parameter; the swarm reads this attribute on every dial.
    swarm.retry_config = RetryConfig(max_retries=DIAL_RETRIES, initial_delay=DIAL_RETRY_DELAY_S)
    dial_peer = swarm.dial_peer

    async def bounded_dial_peer(peer_id: ID) -> Any:
        timeout_s = _dial_timeout_s.get()
        try:
            with trio.fail_after(timeout_s):
                return await dial_peer(peer_id)
        except trio.TooSlowError:
            # A SwarmException, as py-libp2p's own dial failures are, so its callers handle it as one.
            raise SwarmException(f"dial to {peer_id} timed out after {timeout_s} s") from None

    swarm.dial_peer = bounded_dial_peer


@contextmanager
def dial_timeout(timeout_s: float) -> Iterator[None]:
    """Bound the dials made under this block (in this task and those it starts) by `timeout_s`."""
    token = _dial_timeout_s.set(timeout_s)
    try:
        yield
    finally:
        _dial_timeout_s.reset(token)
