"""Round-trip times to the members of the view, measured here (p2p/rtt.py) and gossiped in our status.

The planner takes no unmeasured worker (mesh/planner.py) and the router ranks servers by these figures, so a peer
is measured as soon as it appears, again every RTT_INTERVAL_S, and every RTT_RETRY_S while unmeasured (a probe
failed, or it came back on a new connection: `forget`). `GossipedStatus` is where the figures meet the node's own
facts: the status this node sends is its own, with the RTTs measured here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from meshp2p.mesh.view import EXPIRE_CHECK_S, MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.rtt import RttProbe
from meshp2p.wire.status import MAX_RTT_ENTRIES, StatusBody

if TYPE_CHECKING:
    from trio_typing import TaskStatus

RTT_INTERVAL_S = 30.0
#: How soon a peer without a measured RTT is probed again (the planner needs one to use it as a worker).
RTT_RETRY_S = 2.0


class PeerRtts:
    """Our round trip to each peer of the view, in ms: `rtt_ms` is read live by pipeline planning."""

    def __init__(self, overlay: Overlay, view: MeshView, *, is_member: Callable[[PeerID], bool]) -> None:
        self.view = view
        self.probe = RttProbe(overlay, is_member=is_member)
        self.rtt_ms: dict[str, float] = {}

    def install(self) -> None:
        """Answer members' pings (before the mesh is joined: they measure us at once)."""
        self.probe.install()

    def nearest(self) -> dict[str, float]:
        """The figures a status carries: the closest MAX_RTT_ENTRIES peers, closest first."""
        return dict(sorted(self.rtt_ms.items(), key=lambda kv: kv[1])[:MAX_RTT_ENTRIES])

    def forget(self, peer_id: str) -> None:
        """A new connection, perhaps a new process: measure it again at once."""
        self.rtt_ms.pop(peer_id, None)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """RTT to every peer of the view: new peers at once, known ones every RTT_INTERVAL_S, unmeasured ones (a
        probe failed, or the peer came back on a new connection) every RTT_RETRY_S, concurrently. The planner takes
        no unmeasured worker, so a worker restarted waited up to RTT_INTERVAL_S to be used again."""
        measured_at: dict[str, float] = {}

        async def one(peer_id: str) -> None:
            rtt = await self.probe.measure(PeerID.from_base58(peer_id))
            measured_at[peer_id] = trio.current_time()
            if rtt is None:
                self.rtt_ms.pop(peer_id, None)
            else:
                self.rtt_ms[peer_id] = round(rtt, 3)

        task_status.started()
        while True:
            now = trio.current_time()
            due = [p for p in self.view.peers if p != self.view.self_id
                   and now - measured_at.get(p, -RTT_INTERVAL_S) >= (RTT_INTERVAL_S if p in self.rtt_ms
                                                                     else RTT_RETRY_S)]
            async with trio.open_nursery() as nursery:
                for peer_id in due:
                    nursery.start_soon(one, peer_id)
            for gone in set(measured_at) - set(self.view.peers):
                measured_at.pop(gone, None)
                self.rtt_ms.pop(gone, None)
            await trio.sleep(EXPIRE_CHECK_S)


class GossipedStatus:
    """The status this node sends: `local()` (the node's own facts) with the RTTs measured here in `rtt_ms`."""

    def __init__(self, local: Callable[[], StatusBody], rtts: PeerRtts) -> None:
        self.local = local
        self.rtts = rtts

    def __call__(self) -> StatusBody:
        return replace(self.local(), rtt_ms=self.rtts.nearest())
