"""Redials and DHT record work on plain numbers (mesh/liveness.py, mesh/records.py)."""

from __future__ import annotations

import itertools

from meshp2p.mesh.liveness import CONNECT_BACKOFF_MAX_S, CONNECT_CHECK_S, RedialSchedule
from meshp2p.mesh.records import HEAL_SPLIT_S, LISTING_REFRESH_S, REPUBLISH_S, RecordSchedule


def test_a_member_that_keeps_failing_is_dialed_less_and_less_often_up_to_the_cap():
    schedule, dialed = RedialSchedule(0.0), []
    now = schedule.next_at()
    while now < 600:
        for peer in schedule.due({"a", "b"}, lambda p: p == "b", now):  # b is connected: never dialed
            dialed.append((round(now, 3), peer))
            schedule.failed(peer, now)
        now = schedule.next_at()
    times = [t for t, peer in dialed if peer == "a"]
    assert {peer for _, peer in dialed} == {"a"}
    assert times[:4] == [CONNECT_CHECK_S, 2 * CONNECT_CHECK_S, 4 * CONNECT_CHECK_S, 8 * CONNECT_CHECK_S]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= CONNECT_BACKOFF_MAX_S + CONNECT_CHECK_S and gaps == sorted(gaps)
    assert schedule.backoff_s("a") == CONNECT_BACKOFF_MAX_S


def test_a_member_reached_or_no_longer_wanted_starts_over():
    schedule = RedialSchedule(0.0)
    schedule.failed("a", 2.0)
    schedule.failed("a", 4.0)
    assert schedule.due({"a"}, lambda p: False, 5.0) == []  # still backing off
    schedule.reached("a")
    assert schedule.due({"a"}, lambda p: False, 6.0) == ["a"]
    schedule.failed("a", 6.0)
    schedule.due(set(), lambda p: False, 7.0)  # left the view and the lost list: forgotten
    assert schedule.backoff_s("a") is None


def test_records_are_republished_and_split_meshes_looked_for_on_their_own_clocks():
    schedule = RecordSchedule(1000.0, listed=True, named=True)
    now, republished, healed, checks = 1000.0, [], [], 0
    while now < 1000.0 + 2 * REPUBLISH_S + 1:
        work = schedule.due(now, leader=now >= 1000.0 + HEAL_SPLIT_S)  # leader only after a while
        checks += 1
        assert work.check_listing
        if work.republish:
            republished.append(now - 1000.0)
        if work.heal:
            healed.append(now - 1000.0)
        now = schedule.next_at()
    assert republished == [0.0, REPUBLISH_S, 2 * REPUBLISH_S]
    assert healed[0] == HEAL_SPLIT_S and all(b - a == HEAL_SPLIT_S for a, b in itertools.pairwise(healed))
    assert checks == int(2 * REPUBLISH_S / LISTING_REFRESH_S) + 1


def test_an_unlisted_private_mesh_writes_nothing_and_never_heals():
    schedule = RecordSchedule(0.0, listed=False, named=False)
    work = schedule.due(0.0, leader=True)
    assert (work.republish, work.check_listing, work.heal) == (False, False, False)
    assert schedule.listing_stale(0.0, REPUBLISH_S) and not schedule.listing_stale(0.0, REPUBLISH_S - 1)
