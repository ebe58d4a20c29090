"""Real meshp2p nodes on 127.0.0.1 inside the test's own trio run.

Each node runs in its own nursery under the test's nursery, so a test can stop one abruptly (`node.kill()`,
a vanished machine) and everything else is cancelled when the test's nursery closes: no task or port
outlives a test. Waiting is always for a condition with a deadline, never for a fixed time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.records.validator import Validator

from meshp2p.mesh_service import MeshService, MeshSettings
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.gossip import StatusBody
from meshp2p.wire.identity import Identity

POLL_S = 0.02
#: Generous for a loaded 2-core CI machine; the conditions waited for hold within a second on loopback.
WAIT_S = 10.0


def status(role: str = "host", *, ram_mb: int = 8192, vram_mb: int = 0, loaded: tuple[str, ...] = (),
           available: tuple[str, ...] = (), region: str | None = None) -> StatusBody:
    return StatusBody(role=role, ram_mb=ram_mb, vram_mb=vram_mb, gpu=None, loaded=loaded, available=available,
                      load=0.0, api_port=None, version="test", region=region, rtt_ms={})


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> float:
    """Poll `condition` until it holds; returns the seconds it took, fails the test with `what` otherwise."""
    start = trio.current_time()
    with trio.move_on_after(timeout_s):
        while not condition():
            await trio.sleep(POLL_S)
        return trio.current_time() - start
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


async def start_overlay(nursery: trio.Nursery, bootstrap: tuple[str, ...] = ()) -> Node:
    node = Node(Overlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap)))
    await nursery.start(node._run)
    return node


async def start_member(nursery: trio.Nursery, settings: MeshSettings,
                       local_status: Callable[[], StatusBody] | None = None) -> Node:
    """A MeshService node; the overlay bootstraps off the mesh's join addresses, as `meshp2p up` does."""
    overlay = Overlay(Identity.generate(), OverlayConfig(bootstrap=settings.join_addrs))
    node = Node(overlay, MeshService(overlay, settings, local_status or status))
    await nursery.start(node._run)
    return node


async def connect_all(nodes: list[Node]) -> None:
    """Full mesh of connections and filled DHT routing tables."""
    for i, node in enumerate(nodes):
        for other in nodes[i + 1:]:
            assert await node.overlay.connect(other.overlay.addrs()[0]) is not None
    for node in nodes:
        await node.overlay.dht.refresh_routing_table()
    expected = len(nodes) - 1
    await wait_for(lambda: all(n.overlay.dht.get_routing_table_size() >= expected for n in nodes),
                   "every DHT routing table to hold every other node")
