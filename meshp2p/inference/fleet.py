"""The llama-servers a node runs, started and stopped while it runs (promotion, `meshp2p drop`).

Each server's supervisor runs in its own cancel scope inside the fleet's nursery, so one model can be
dropped without touching the others, and everything stops when the fleet's nursery does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from meshp2p.errors import MeshP2PError
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.llama_server import BackendState, LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


class ServerFleet:
    def __init__(
        self,
        binaries: LlamaBinaries | None,
        options: ServerOptions,
        *,
        log_dir: Path,
        on_port_retired: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.binaries = binaries
        self.options = options
        self.log_dir = log_dir
        self.on_port_retired = on_port_retired
        #: Insertion-ordered: the first is the node's default model.
        self.servers: dict[str, LlamaServer] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None

    def get(self, model_id: str) -> LlamaServer | None:
        return self.servers.get(model_id)

    def add(self, spec: ModelSpec) -> LlamaServer:
        """Register a model before the fleet runs (it starts with the fleet)."""
        if self.binaries is None:
            raise MeshP2PError("this node runs no llama.cpp (API client)", hint="start it without --client")
        server = LlamaServer(self.binaries, spec, self.options, log_dir=self.log_dir)
        self.servers[spec.id] = server
        return server

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every registered server (their processes spawned), then keep running until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for server in list(self.servers.values()):
                await nursery.start(self._supervise, server)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def start(self, spec: ModelSpec) -> LlamaServer:
        """Serve another model now (promotion); returns once its process is spawned."""
        if spec.id in self.servers:
            return self.servers[spec.id]
        if self._nursery is None:
            raise RuntimeError("the fleet is not running")
        server = self.add(spec)
        await self._nursery.start(self._supervise, server)
        log.info("started serving %s", spec.id)
        return server

    def stop(self, model_id: str) -> bool:
        """Stop serving a model; its process is stopped and reaped by its supervisor. False if not served."""
        scope = self._scopes.pop(model_id, None)
        self.servers.pop(model_id, None)
        if scope is None:
            return False
        scope.cancel()
        log.info("stopped serving %s", model_id)
        return True

    async def _supervise(self, server: LlamaServer, *, task_status: TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            self._scopes[server.model.id] = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                nursery.start_soon(server.watch_speculation)
                if self.on_port_retired is not None:
                    nursery.start_soon(self._retire_ports, server, self.on_port_retired)
                task_status.started()

    @staticmethod
    async def _retire_ports(server: LlamaServer, retired: Callable[[int], Awaitable[None]]) -> None:
        """A restarted llama-server listens on a new port: let the owner forget connections to the old one."""
        while True:
            port = server.port
            await server.wait_state(BackendState.RESTARTING, BackendState.STOPPED)
            if port is not None:
                await retired(port)
            await server.wait_state(BackendState.LOADING)
