"""Idle mode: what `meshp2p` with no command serves while no node runs here — the console, read-only.

A new user types `meshp2p` and gets told what to run; the console at the same address shows the same advice (and
what this machine could run) instead of a 404, so the page a user bookmarks is the same before and after
`meshp2p up`. Idle mode starts no libp2p host, no llama.cpp and writes nothing into MESHP2P_HOME: it is a look,
not a node. Its status document has the shape of a node's (`/api/status`), with `node.role` "idle", no API,
no mesh, no models, and `node.next_steps`, which the page shows; `/api/events` follows it like a node's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from meshp2p import __version__
from meshp2p.api.console_app import create_console_app
from meshp2p.api.serve import serve_app
from meshp2p.app.console_events import ConsoleEvents
from meshp2p.home import meshp2p_home
from meshp2p.wire.console_events import boot_id

if TYPE_CHECKING:
    from trio_typing import TaskStatus

#: What to run, in the order a new user needs it: (what it does, the command).
NEXT_STEPS: tuple[tuple[str, str], ...] = (
    ("start a mesh that friends can join by its name", "meshp2p up --mesh-name poker-night"),
    ("join a mesh from an invite token", "meshp2p up --join <invite>"),
    ("find public meshes to join", "meshp2p discover"),
    ("serve on this machine only", "meshp2p up --solo"),
    ("see the models you can download", "meshp2p download"),
)


@dataclass(frozen=True)
class IdleConsole:
    host: str
    port: int
    steps: Sequence[tuple[str, str]] = NEXT_STEPS

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def status(self, started_at: float) -> dict[str, Any]:
        return {
            "node": {"version": __version__, "pid": os.getpid(), "started_at": started_at, "api_url": None,
                     "console_url": self.url, "home": str(meshp2p_home()), "llama_cpp": None, "max_vram_gb": None,
                     "role": "idle", "api_keys": False,
                     # In the node part, so the console's `node` event carries it (protocols/console-events.md).
                     "next_steps": [{"what": what, "command": command} for what, command in self.steps]},
            "mesh": None, "blackboard": None, "splits": [], "rpc_worker": None, "models": [],
        }

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; started once the port listens (PortInUse otherwise)."""
        started_at = time.time()
        events = ConsoleEvents(lambda: self.status(started_at), boot=boot_id(os.urandom(4)))
        app = create_console_app(lambda: self.status(started_at), _refuse_drop, events=events)
        async with trio.open_nursery() as nursery:
            await nursery.start(events.run)
            await serve_app(app, self.host, self.port, flag="--console", task_status=task_status)


async def _refuse_drop(model_id: str) -> bool:
    """Nothing is served in idle mode: every drop answers 404 ("this node does not serve it")."""
    return False
