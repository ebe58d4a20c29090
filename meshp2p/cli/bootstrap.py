"""`meshp2p bootstrap`: a DHT server and circuit-relay v2 hop with no models: the first contact of joining nodes."""

from __future__ import annotations

import argparse
import signal

import trio
from rich.console import Console

from meshp2p.hosts import ALL_HOSTS, LOOPBACK_HOST
from meshp2p.p2p.bootstrap_peers import bootstrap_peers
from meshp2p.p2p.identity_store import load_or_create_identity
from meshp2p.p2p.overlay import Overlay, OverlayConfig


def run_bootstrap(args: argparse.Namespace, console: Console) -> int:
    overlay = Overlay(load_or_create_identity(), OverlayConfig(
        listen_host=ALL_HOSTS if args.listen_all else LOOPBACK_HOST, port=args.bind_port,
        bootstrap=bootstrap_peers(args.bootstrap or ()), dht_server=True, relay_hop=True))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(overlay.run)
            console.print("[bold]meshp2p bootstrap node[/] — others join with --bootstrap and one of:")
            for addr in overlay.addrs():
                print(addr, flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    trio.run(main)
    console.print("bootstrap node stopped")
    return 0
