#!/usr/bin/env python3
"""What one request/answer round trip costs through the RPC tunnel, against plain TCP, in one run.

A loopback echo server stands in for ggml-rpc-server; a client sends a small command (default 200 bytes) and
waits for the echo, N times, straight to the echo server and through meshp2p's RPC bridge (RpcTunnelClient port →
libp2p stream between two overlays in this process → RpcTunnelServer → the echo server). Interleaved twice, so a
change in machine load shows as a difference between the two passes. Prints µs per round trip and the tunnel's
added µs. This isolates the tunnel's latency from llama.cpp: `split_bench.py` measures the split as a whole, where
on a 2-core machine llama-server and ggml-rpc-server compete with the bridge's Python for the cores.

usage: python tools/bench/rpc_latency.py [--rounds 2000] [--bytes 200]
Everything started here runs under one trio nursery and stops with it.
"""

from __future__ import annotations

import argparse
import functools
import time

import trio

from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.p2p.rpc_tunnel import RpcTunnelClient, RpcTunnelServer
from meshp2p.wire.identity import Identity

LOOPBACK = "127.0.0.1"


async def echo(stream: trio.SocketStream) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)


async def round_trips(sock: trio.SocketStream, message: bytes, rounds: int) -> float:
    """Seconds per round trip: send, then read until the whole echo is back."""
    start = time.perf_counter()
    for _ in range(rounds):
        await sock.send_all(message)
        got = 0
        while got < len(message):
            got += len(await sock.receive_some(65536))
    return (time.perf_counter() - start) / rounds


async def main(rounds: int, size: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host=LOOPBACK))
        echo_port = int(listeners[0].socket.getsockname()[1])
        worker = Overlay(Identity.generate(), OverlayConfig())
        await nursery.start(worker.run)
        host = Overlay(Identity.generate(), OverlayConfig(bootstrap=(worker.addrs()[0],)))
        await nursery.start(host.run)

        async def rpc_port() -> int:
            return echo_port

        RpcTunnelServer(worker, is_member=lambda peer: peer == host.peer_id, rpc_port=rpc_port).install()
        bridge = RpcTunnelClient(host)
        port = await nursery.start(functools.partial(bridge.serve_port, worker.peer_id))
        direct = await trio.open_tcp_stream(LOOPBACK, echo_port)
        tunnel = await trio.open_tcp_stream(LOOPBACK, port)
        message = b"x" * size
        results: dict[str, list[float]] = {"direct": [], "tunnel": []}
        for _ in range(2):
            for name, sock in (("direct", direct), ("tunnel", tunnel)):
                results[name].append(await round_trips(sock, message, rounds))
        for name, values in results.items():
            print(f"{name:7s} {' / '.join(f'{v * 1e6:.0f}' for v in values)} µs per round trip")
        added = [(t - d) * 1e6 for t, d in zip(results["tunnel"], results["direct"], strict=True)]
        print(f"tunnel adds {' / '.join(f'{a:.0f}' for a in added)} µs per round trip ({size}-byte commands)")
        await direct.aclose()
        await tunnel.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2000, help="round trips per pass (default 2000)")
    ap.add_argument("--bytes", type=int, default=200, help="size of each command (default 200)")
    args = ap.parse_args()
    trio.run(main, args.rounds, args.bytes)
