"""The throughput floor (p2p/throughput.py) with plain numbers: bytes and times in, a verdict out."""

from __future__ import annotations

import pytest

from meshp2p.p2p.throughput import ThroughputFloor


def test_no_verdict_before_the_grace_and_a_whole_window() -> None:
    floor = ThroughputFloor(1000, start=0.0, grace_s=5, window_s=5)
    floor.observe(10, 4.9)
    assert floor.too_slow(4.9) is None
    assert floor.too_slow(5.0) == pytest.approx(2.0)  # 10 bytes over the first 5 s


def test_the_rate_is_the_last_windows_not_the_average_since_the_start() -> None:
    floor = ThroughputFloor(1000, start=0.0, grace_s=5, window_s=5)
    floor.observe(100_000, 1.0)  # a burst at the start
    for t in range(2, 12):
        floor.observe(100_000 + 100 * (t - 1), float(t))  # then 100 B/s
    assert floor.too_slow(11.0) == pytest.approx(100.0)


def test_a_fetch_at_the_floor_goes_on() -> None:
    floor = ThroughputFloor(1000, start=0.0, grace_s=5, window_s=5)
    for t in range(1, 30):
        floor.observe(1000 * t, float(t))
        assert floor.too_slow(float(t)) is None


def test_a_stall_is_seen_even_with_no_new_sample() -> None:
    floor = ThroughputFloor(1000, start=0.0, grace_s=5, window_s=5)
    for t in range(1, 10):
        floor.observe(2000 * t, float(t))
    assert floor.too_slow(9.0) is None
    assert floor.too_slow(15.0) == pytest.approx(0.0), "nothing arrived in the last 5 s"


def test_next_check_waits_for_the_grace_then_a_second() -> None:
    floor = ThroughputFloor(1000, start=10.0, grace_s=5, window_s=5)
    assert floor.next_check_at(10.0) == 15.0
    assert floor.next_check_at(20.0) == 21.0


def test_bad_settings_are_refused() -> None:
    for args in ((0.0, 5.0, 5.0), (1.0, -1.0, 5.0), (1.0, 5.0, 0.0)):
        with pytest.raises(ValueError):
            ThroughputFloor(args[0], start=0.0, grace_s=args[1], window_s=args[2])
