"""Real meshp2p nodes on 127.0.0.1 inside the test's own trio run.

Each node runs in its own nursery under the test's nursery, so a test can stop one abruptly (`node.kill()`,
a vanished machine) and everything else is cancelled when the test's nursery closes: no task or port
outlives a test. Waiting is always for a condition with a deadline, never for a fixed time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.host.basic_host import BasicHost
from libp2p.network.stream.exceptions import StreamError
from libp2p.records.validator import Validator

from helpers.processes import port_is_free
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity
from meshp2p.wire.status import StatusBody

POLL_S = 0.02
#: Generous for a loaded 2-core CI machine; the conditions waited for hold within a second on loopback.
WAIT_S = 10.0
CLOSE_S = 5.0
#: A whole test inside `network()`, start to stop: a backstop under every read and wait that has no deadline of
#: its own (the slowest of these tests took 8 s at load average 4-5 on this 2-core machine).
NETWORK_S = 240.0


def status(role: str = "host", *, ram_mb: int = 8192, vram_mb: int = 0, loaded: tuple[str, ...] = (),
           available: tuple[str, ...] = (), region: str | None = None) -> StatusBody:
    return StatusBody(role=role, ram_mb=ram_mb, vram_mb=vram_mb, gpu=None, loaded=loaded, available=available,
                      load=0.0, api_port=None, version="test", region=region, rtt_ms={})


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Poll `condition` until it holds; returns the seconds it took, fails the test with `what` otherwise."""
    start = trio.current_time()
    with trio.move_on_after(timeout_s):
        # Polling, not an Event: the conditions live inside libp2p and meshp2p, which signal nothing.
        while True:
            if condition():
                return trio.current_time() - start
            await trio.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class AcceptAll(Validator):
    """What a hostile node installs so its own DHT stores and pushes anything it is given."""

    def validate(self, key: str, value: bytes) -> None:
        return None

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


@dataclass
class Node:
    """One overlay (and optionally its mesh service) running under the test's nursery."""

    overlay: Overlay
    service: MeshService | None = None
    running: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def peer_id(self) -> str:
        return str(self.overlay.peer_id)

    def kill(self) -> None:
        """Cancel every task of this node at once: its peers see connections drop, nothing says goodbye."""
        self.scope.cancel()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self.scope:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.overlay.run)
                    if self.service is not None:
                        await nursery.start(self.service.run)
                    self.running = True
                    task_status.started()
            finally:
                self.running = False


async def stop_system_tasks(host: BasicHost) -> None:
    """For bare py-libp2p hosts: stop what py-libp2p runs as trio *system* tasks, outside every nursery.

    Its TCP listener keeps the port open even after a clean exit from `BasicHost.run`, and identify exchanges
    run on for up to 30 s (`host.close()` stops both, but spends 0.2 s per connection). `Overlay.run` does this
    itself when it stops, which `network()` checks.
    """
    for scope in list(getattr(host, "_identify_tasks", ())):
        scope.cancel()
    for listener in list(host.get_network().listeners.values()):
        await listener.close()


async def read_until_eof(stream: Any, timeout_s: float = 10.0) -> bytes:
    """Everything a peer sends on `stream` before it closes its side (a reset counts as a close)."""
    received = b""
    with trio.fail_after(timeout_s):
        while True:
            try:
                data = await stream.read(65536)
            except StreamError:
                return received
            if not data:
                return received
            received += data


@dataclass
class Network:
    """Nodes started under one nursery; see `network()`."""

    nursery: trio.Nursery
    nodes: list[Node] = field(default_factory=list)
    #: Every port a node listened on, checked free once the network stopped.
    ports: list[int] = field(default_factory=list)

    async def start_overlay(self, bootstrap: tuple[str, ...] = ()) -> Node:
        return await self._start(Node(Overlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap))))

    async def start_member(self, settings: MeshSettings, local_status: Callable[[], StatusBody] | None = None,
                           *, bootstrap: tuple[str, ...] = (), dht_server: bool = True) -> Node:
        """A MeshService node; its overlay bootstraps off `bootstrap` and the mesh's join addresses, as
        `meshp2p up` does (a DHT server unless `dht_server` is false)."""
        overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap + settings.join_addrs,
                                                             dht_server=dht_server))
        return await self._start(Node(overlay, MeshService(overlay, settings, local_status or status)))

    async def start_member_with(self, identity: Identity, settings: MeshSettings) -> Node:
        """`start_member` with a given identity (a test that needs to know which PeerID is lower)."""
        overlay = Overlay(identity, OverlayConfig(bootstrap=settings.join_addrs))
        return await self._start(Node(overlay, MeshService(overlay, settings, status)))

    async def start_node(self, node: Node) -> Node:
        """Start a node the test built itself (to wrap some of its methods first)."""
        return await self._start(node)

    async def _start(self, node: Node) -> Node:
        await self.nursery.start(node._run)
        self.nodes.append(node)
        self.ports += [int(addr.split("/tcp/")[1].split("/")[0]) for addr in node.overlay.addrs()]
        return node


@asynccontextmanager
async def network(limit_s: float = NETWORK_S) -> AsyncIterator[Network]:
    """Run nodes for the duration of the block, then stop them all and check nothing is left behind. The block
    fails with trio.TooSlowError after `limit_s`, so no read in it blocks for ever."""
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    try:
        with trio.fail_after(limit_s):
            async with trio.open_nursery() as nursery:
                net = Network(nursery)
                yield net
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Trio groups even a lone failure; unwrap it so a failed assertion reads plainly.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    await wait_for(lambda: trio.lowlevel.current_statistics().tasks_living <= tasks_before,
                   "every task of the network to end", timeout_s=CLOSE_S)
    busy = [port for port in net.ports if not port_is_free(port)]
    assert not busy, f"ports still listening after the network stopped: {busy}"


async def connect_all(nodes: list[Node]) -> None:
    """Every node dials every other one, which also puts it in the dialer's DHT routing table."""
    reached: list[bool] = []

    async def connect(node: Node, other: Node) -> None:
        reached.append(await node.overlay.connect(other.overlay.addrs()[0]) is not None)

    async with trio.open_nursery() as nursery:
        for node in nodes:
            for other in nodes:
                if other is not node:
                    nursery.start_soon(connect, node, other)
    assert all(reached), "a loopback dial failed"
    assert all(n.overlay.dht.get_routing_table_size() == len(nodes) - 1 for n in nodes)
