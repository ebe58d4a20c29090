"""The gossip timing rules on plain numbers (mesh/cadence.py): when a status and a demand report go out.

Each case plays a node's life against a clock it sets itself and records the send times the machine allows,
stepping from one `next_at` to the next as the service's loop does."""

from __future__ import annotations

import itertools

from meshp2p.mesh.cadence import (
    DEMAND_EMPTY_REPEATS,
    DEMAND_INTERVAL_S,
    STATUS_CHECK_S,
    STATUS_REPEAT_GAPS_S,
    YOUNG_S,
    DemandCadence,
    StatusCadence,
)
from meshp2p.mesh.view import STATUS_INTERVAL_S


def status_sends(until: float, keys: dict[float, str], announces: tuple[float, ...] = ()) -> list[float]:
    """Send times up to `until`; our status key becomes keys[t] from time t on, `announces` call announce_now."""
    cadence, now, sent = StatusCadence(0.0), 0.0, []
    pending_announces = sorted(announces)
    while now <= until:
        key = keys[max(t for t in keys if t <= now)]
        cadence.observe(key, now)
        if cadence.due(now):
            sent.append(round(now, 6))
            cadence.sent(key, now)
        step = cadence.next_at(now)
        if pending_announces and pending_announces[0] <= step:
            now = pending_announces.pop(0)
            cadence.announce(now)
        else:
            now = step
    return sent


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_a_start_is_repeated_then_only_the_keepalive():
    sent = status_sends(3 * STATUS_INTERVAL_S, {0.0: "a"})
    repeats = len(STATUS_REPEAT_GAPS_S)
    assert sent[0] == 0.0
    assert gaps(sent[: repeats + 1]) == list(STATUS_REPEAT_GAPS_S)
    assert set(gaps(sent[repeats:])) == {STATUS_INTERVAL_S}


def test_a_change_while_young_goes_out_within_a_check_and_is_repeated():
    changed_at = sum(STATUS_REPEAT_GAPS_S) + 2.5
    sent = status_sends(changed_at + 10, {0.0: "a", changed_at: "b"})
    after = [t for t in sent if t >= changed_at]
    assert after[0] - changed_at <= STATUS_CHECK_S
    assert gaps(after[: len(STATUS_REPEAT_GAPS_S) + 1]) == list(STATUS_REPEAT_GAPS_S)


def test_a_change_after_youth_goes_out_once_then_the_keepalive():
    changed_at = YOUNG_S + 5.5
    sent = status_sends(changed_at + STATUS_INTERVAL_S + 1, {0.0: "a", changed_at: "b"})
    after = [t for t in sent if t >= changed_at]
    assert len(after) == 2 and after[0] - changed_at <= STATUS_CHECK_S
    assert after[1] - after[0] == STATUS_INTERVAL_S


def test_an_announce_goes_out_at_once_even_unchanged():
    at = YOUNG_S + 3.25
    sent = status_sends(at + 1, {0.0: "a"}, announces=(at,))
    assert at in sent


def test_demand_is_reported_while_there_is_some_then_faded_out_then_silent():
    cadence, now, sent = DemandCadence(0.0), 0.0, []
    while now <= 20 * DEMAND_INTERVAL_S:
        if cadence.due(now) and cadence.report(now < 3 * DEMAND_INTERVAL_S, now):
            sent.append(now)
        now = cadence.next_at()
    assert sent == [i * DEMAND_INTERVAL_S for i in range(3 + DEMAND_EMPTY_REPEATS)]


def test_a_node_that_never_had_demand_reports_nothing():
    cadence = DemandCadence(0.0)
    assert not any(cadence.report(False, i * DEMAND_INTERVAL_S) for i in range(10))
