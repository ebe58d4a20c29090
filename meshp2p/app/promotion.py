"""Promotion: a node with llama.cpp starts serving a model the mesh needs (mesh/election.py has the rules).

Every PROMOTE_CHECK_S the election runs on the gossiped view and the merged demand map; when it hands this node a
model this node offers and does not run yet, the node starts it. Every node runs the same rules on nearly the same
view, so they agree on who promotes without voting. The promotion is announced at once twice: when loading starts
("loading": nobody else should promote for it now, the election's stampede rule relies on it) and when loading
ended ("loaded": route to us without waiting for the next heartbeat).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from meshp2p.app.local import OfferedModels
from meshp2p.inference.fleet import ServerFleet
from meshp2p.inference.llama_server import LOAD_TIMEOUT_S, BackendState
from meshp2p.mesh.demand import DemandMap
from meshp2p.mesh.election import NeedTracker, plan_promotions, snapshot_from_view
from meshp2p.mesh.view import MeshView

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

PROMOTE_CHECK_S = 1.0


class Announcer(Protocol):
    """Who tells the mesh at once that what this node serves changed (MeshService)."""

    def announce_now(self) -> None: ...


class PromotionService:
    """Runs the election for this node and loads what it is handed."""

    def __init__(self, view: MeshView, demand: DemandMap, announcer: Announcer, offered: OfferedModels,
                 fleet: ServerFleet, *, clock: Callable[[], float] = time.time) -> None:
        self.view = view
        self.demand = demand
        self.announcer = announcer
        self.offered = offered
        self.fleet = fleet
        self.clock = clock

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        tracker = NeedTracker()
        # Sizes of what is offered at start: a model dropped later is no longer handed to us (`offered.get`).
        sizes = {m.id: m.size_bytes // (1024 * 1024) for m in self.offered.specs()}
        task_status.started()
        while True:
            await trio.sleep(PROMOTE_CHECK_S)
            now = self.clock()
            snapshot = snapshot_from_view(self.view)
            demand = self.demand.total(now)
            tracker.observe(snapshot, demand, now, served_at=self.view.served_at)
            promotion = plan_promotions(snapshot, demand, self_id=self.view.self_id, now=now,
                                        recently_served=tracker.last_served, unserved_since=tracker.need_since,
                                        model_sizes_mb=sizes)
            spec = self.offered.get(promotion.model_id) if promotion is not None else None
            if promotion is None or spec is None or self.fleet.get(spec.id) is not None:
                continue
            log.info("promoting: serving %s (%s)", spec.id, promotion.reason)
            server = await self.fleet.start(spec)
            self.announcer.announce_now()  # "loading": nobody else should promote for it now
            with trio.move_on_after(LOAD_TIMEOUT_S):
                await server.wait_state(BackendState.READY, BackendState.STOPPED)
            self.announcer.announce_now()  # "loaded": route to us without waiting for the next heartbeat
