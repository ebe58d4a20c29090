"""`meshp2p` with no command: say what to run, and serve the read-only console until Ctrl-C (app/idle.py).

When a node already runs with this MESHP2P_HOME, its console is the one to open: the command says where and
exits instead of serving a second, emptier one. The other way round, `meshp2p up` takes the console's port over
from an idle console this user left running (`take_over_idle_console`): the open page then follows the new node.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

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


#: How long `up` waits for an idle console it stopped to free the port.
TAKE_OVER_TIMEOUT_S = 5.0


def take_over_idle_console(port: int) -> bool:
    """Stop the idle console on 127.0.0.1:`port`, if that is what holds it (and it is this user's): True once the
    port is free. Anything else on the port is left alone (the node then says the port is in use)."""
    import httpx

    try:
        node = httpx.get(f"http://{LOOPBACK_HOST}:{port}/api/status", timeout=1.0).json().get("node") or {}
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    if node.get("role") != "idle" or not isinstance(node.get("pid"), int):
        return False
    try:
        os.kill(node["pid"], signal.SIGTERM)
    except OSError:  # another user's, or gone already
        return False
    deadline = time.monotonic() + TAKE_OVER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{LOOPBACK_HOST}:{port}/api/status", timeout=0.5)
        except httpx.HTTPError:
            return True
        time.sleep(0.05)
    return False
