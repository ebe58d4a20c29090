"""The settle rule of a `--moe shard` group (mesh/moe_settle.py), with plain numbers for keys and times."""

from __future__ import annotations

from meshp2p.mesh.moe_settle import MAX_SETTLE_WAIT_S, SETTLE_S, GroupSettle


def test_the_first_plan_waits_until_the_group_has_been_the_same_for_the_settle_time() -> None:
    settle = GroupSettle()
    assert not settle.observe({"a"}, 100.0)
    assert settle.next_at() == 100.0 + SETTLE_S
    assert not settle.observe({"a"}, 101.0)
    assert not settle.observe({"a", "b"}, 102.0)  # a member arrives: the wait starts again
    assert settle.next_at() == 102.0 + SETTLE_S
    assert not settle.observe({"a", "b"}, 102.0 + SETTLE_S - 0.1)
    assert settle.observe({"a", "b"}, 102.0 + SETTLE_S)
    assert settle.next_at() is None


def test_once_formed_every_change_plans_at_once() -> None:
    settle = GroupSettle(settle_s=3.0)
    settle.observe(("t", 2), 0.0)
    assert settle.observe(("t", 2), 3.0)
    assert settle.observe(("t", 1), 3.5)  # a member left: re-plan now, not 3 s later
    assert settle.observe(("t", 3), 3.6)
    assert settle.observe(("u", 3), 3.7)  # the usage changed
    assert settle.next_at() is None


def test_arrivals_that_never_stop_get_a_plan_after_the_maximum_wait() -> None:
    settle = GroupSettle()
    t = 50.0
    members: set[int] = set()
    while t < 50.0 + MAX_SETTLE_WAIT_S:
        members.add(int(t))
        assert not settle.observe(frozenset(members), t)
        assert settle.next_at() == min(t + SETTLE_S, 50.0 + MAX_SETTLE_WAIT_S)
        t += SETTLE_S / 2
    members.add(int(t))
    assert settle.observe(frozenset(members), t)


def test_no_settle_time_plans_at_the_first_look() -> None:
    settle = GroupSettle(settle_s=0.0)
    assert settle.next_at() is None
    assert settle.observe("x", 7.0)
