"""`meshp2p` with no command: say what to run, and serve the read-only console until Ctrl-C (app/idle.py).

When a node already runs with this MESHP2P_HOME, its console is the one to open: the command says where and
exits instead of serving a second, emptier one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import trio
from rich.console import Console
from rich.table import Table

from meshp2p.app.idle import NEXT_STEPS, IdleConsole
from meshp2p.home import runtime_file
from meshp2p.hosts import LOOPBACK_HOST


def run_idle(args: argparse.Namespace, console: Console) -> int:
    console.print("[bold]meshp2p[/] pools spare GPUs and CPUs to serve LLMs on an OpenAI-compatible API. To start:")
    steps = Table(show_header=False, box=None, padding=(0, 2))
    for what, command in NEXT_STEPS:
        steps.add_row(f"[bold cyan]{command}[/]", what)
    console.print(steps)
    console.print("`meshp2p --help` lists every command.")
    running = _running_console()
    if running is not None:
        console.print(f"A node already runs here: its console is [bold]{running}[/]")
        return 0
    idle = IdleConsole(LOOPBACK_HOST, args.idle_console)
    trio.run(_serve, idle, console)
    return 0


async def _serve(idle: IdleConsole, console: Console) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(idle.run)
        console.print(f"console (read-only until a node runs): [bold]{idle.url}[/]   [dim]Ctrl-C stops it[/]")
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def _running_console() -> str | None:
    """The console URL of the node this MESHP2P_HOME runs, if its process is alive."""
    try:
        info = json.loads(runtime_file().read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    url = info.get("console_url")
    return str(url) if url else None
