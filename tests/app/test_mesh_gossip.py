"""When a MeshService gossips: status on change plus a keepalive, demand only while there is some.

Each gossip message costs every member CPU (receive, verify, forward), so an idle mesh must stay quiet: the
keepalive is rare, since departures are seen on connections (tests/app/test_mesh_liveness.py); a start or a change
goes out at once and a few times more in case gossip lost it; a newcomer gets our status straight
(tests/app/test_status_push.py), not by gossip.
Driven with trio's autojump clock and a stand-in overlay that records what is published: no sleeping, no sockets.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.mesh.cadence import (
    DEMAND_EMPTY_REPEATS,
    DEMAND_INTERVAL_S,
    STATUS_CHECK_S,
    STATUS_REPEAT_GAPS_S,
    YOUNG_S,
)
from meshp2p.mesh.view import PEER_TIMEOUT_S, STATUS_INTERVAL_S
from meshp2p.p2p.rejects import RejectCounter
from meshp2p.wire.gossip import decode_gossip
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.status import StatusBody

MESH = named_mesh_id("cadence")


class RecordingOverlay:
    """Just enough of Overlay for MeshService's gossip loops: who published what, when (trio's clock)."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.peer_id = ID.from_pubkey(create_new_key_pair(self.identity.seed).public_key)
        self.rejects = RejectCounter()
        self.published: list[tuple[float, str, dict[str, Any]]] = []

    async def publish(self, topic: str, data: bytes) -> None:
        msg = decode_gossip(data, mesh_id=MESH, topic=topic, now=trio.current_time(), secret=None)
        self.published.append((trio.current_time(), msg.type, msg.body))


def status(**changes: Any) -> StatusBody:
    base = StatusBody(role="host", ram_mb=8192, vram_mb=0, gpu=None, loaded=(), available=(), load=0.0,
                      api_port=None, version="test", region=None, rtt_ms={})
    return dataclasses.replace(base, **changes)


def service(local_status: Any = status, local_demand: Any = dict) -> tuple[MeshService, RecordingOverlay]:
    overlay = RecordingOverlay()
    settings = MeshSettings(mesh_id=MESH, secret=b"", name="cadence")
    return MeshService(overlay, settings, local_status, local_demand, clock=trio.current_time), overlay  # type: ignore[arg-type]


def times(overlay: RecordingOverlay, msg_type: str) -> list[float]:
    return [t for t, kind, _ in overlay.published if kind == msg_type]


def test_the_keepalive_keeps_a_live_peer():
    assert 2 * STATUS_INTERVAL_S < PEER_TIMEOUT_S, "one lost keepalive must not drop a live peer"
    assert STATUS_CHECK_S < STATUS_INTERVAL_S
    assert sum(STATUS_REPEAT_GAPS_S) < STATUS_INTERVAL_S


async def test_an_unchanged_status_goes_out_repeated_after_start_then_only_as_keepalive(autojump_clock: Any):
    svc, overlay = service()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc.gossip._heartbeat)
        await trio.sleep(sum(STATUS_REPEAT_GAPS_S) + 10 * STATUS_INTERVAL_S + 0.5)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(times(overlay, "status"))]
    assert gaps == pytest.approx([*STATUS_REPEAT_GAPS_S] + [STATUS_INTERVAL_S] * 10, abs=0.01)


async def test_a_changed_status_goes_out_within_a_check_and_drifting_figures_wait(autojump_clock: Any):
    current = {"status": status()}
    svc, overlay = service(lambda: current["status"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc.gossip._heartbeat)
        await trio.sleep(sum(STATUS_REPEAT_GAPS_S) + 0.1)
        start_sends = len(times(overlay, "status"))
        assert start_sends == 1 + len(STATUS_REPEAT_GAPS_S)
        current["status"] = status(rtt_ms={"peer": 1.5}, load=2.0)  # drift: waits for the keepalive
        await trio.sleep(STATUS_INTERVAL_S - STATUS_REPEAT_GAPS_S[-1] - 0.2)
        assert len(times(overlay, "status")) == start_sends
        changed_at = trio.current_time()
        current["status"] = status(loaded=("tiny",), rtt_ms={"peer": 1.5}, load=2.0)
        await trio.sleep(STATUS_CHECK_S + 0.01)
        sent = overlay.published[-1]
        assert sent[0] - changed_at <= STATUS_CHECK_S and sent[2]["loaded"] == ["tiny"]
        # A change is repeated like a start, in case gossip lost it.
        await trio.sleep(sum(STATUS_REPEAT_GAPS_S))
        after_change = [t for t in times(overlay, "status") if t >= sent[0]]
        gaps = [b - a for a, b in itertools.pairwise(after_change)]
        assert gaps == pytest.approx(list(STATUS_REPEAT_GAPS_S), abs=0.01)
        svc.announce_now()
        await trio.sleep(0.01)
        assert times(overlay, "status")[-1] == pytest.approx(trio.current_time(), abs=0.02)
        nursery.cancel_scope.cancel()


async def test_past_its_youth_a_node_sends_a_change_once(autojump_clock: Any):
    current = {"status": status()}
    svc, overlay = service(lambda: current["status"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc.gossip._heartbeat)
        await trio.sleep(YOUNG_S + 0.5)
        changed_at = trio.current_time()
        current["status"] = status(loaded=("tiny",))
        await trio.sleep(sum(STATUS_REPEAT_GAPS_S) + STATUS_CHECK_S + 0.5)
        nursery.cancel_scope.cancel()
    after = [t for t, kind, body in overlay.published if kind == "status" and t >= changed_at]
    assert len(after) == 1 and after[0] - changed_at <= STATUS_CHECK_S


async def test_a_new_member_gets_our_status_straight_and_the_mesh_no_broadcast(autojump_clock: Any):
    svc, overlay = service()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc.gossip._heartbeat)
        await trio.sleep(sum(STATUS_REPEAT_GAPS_S) + 1.5)
        before = len(times(overlay, "status"))
        svc.gossip._apply_status("12D3KooWnewcomer", status())
        svc.gossip._apply_status("12D3KooWnewcomer2", status())
        svc.gossip._apply_status("12D3KooWnewcomer", status())  # known by now: no second push
        await trio.sleep(STATUS_INTERVAL_S - sum(STATUS_REPEAT_GAPS_S) - 2.0)
        assert len(times(overlay, "status")) == before, "newcomers cost the mesh no gossip"
        nursery.cancel_scope.cancel()
    queued = []
    while True:
        try:
            queued.append(svc.gossip._newcomers_receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert queued == ["12D3KooWnewcomer", "12D3KooWnewcomer2"]


async def test_demand_is_sent_while_there_is_some_then_a_few_empty_reports_then_nothing(autojump_clock: Any):
    rates: dict[str, float] = {}
    svc, overlay = service(local_demand=lambda: dict(rates))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(svc.gossip._gossip_demand)
        await trio.sleep(10.5 * DEMAND_INTERVAL_S)  # half an interval off the loop's ticks: no ties
        assert times(overlay, "demand") == [], "a node that never had demand sends none"
        rates["tiny"] = 6.0
        await trio.sleep(3 * DEMAND_INTERVAL_S)
        rates.clear()
        await trio.sleep(10 * DEMAND_INTERVAL_S)
        nursery.cancel_scope.cancel()
    bodies = [body["rates"] for _, kind, body in overlay.published if kind == "demand"]
    assert bodies == [{"tiny": 6.0}] * 3 + [{}] * DEMAND_EMPTY_REPEATS
