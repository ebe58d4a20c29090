"""The rate limits' numbers: a sliding 60 s window and an in-flight count, with `now` given."""

from __future__ import annotations

from meshp2p.access.limiter import WINDOW_S, InFlight, RequestWindow


def test_the_window_admits_the_limit_then_says_when_the_oldest_leaves() -> None:
    window = RequestWindow()
    assert [window.admit("a", 3, now) for now in (100.0, 110.0, 120.0)] == [None, None, None]
    assert window.admit("a", 3, 130.0) == 30  # 100 + 60 - 130
    assert window.admit("a", 3, 159.5) == 1  # never 0: Retry-After 0 would mean "at once"
    assert window.admit("a", 3, 160.0) is None  # the first one left
    assert window.admit("b", 3, 130.0) is None, "subjects are counted apart"


def test_refused_requests_do_not_push_the_retry_time_back() -> None:
    window = RequestWindow()
    assert window.admit("a", 1, 0.0) is None
    assert [window.admit("a", 1, t) for t in (10.0, 20.0, 30.0)] == [50, 40, 30]
    assert window.admit("a", 1, WINDOW_S) is None


def test_the_window_holds_over_every_minute_not_aligned_ones() -> None:
    window = RequestWindow()
    for t in (50.0, 55.0, 59.0):
        assert window.admit("a", 3, t) is None
    assert window.admit("a", 3, 61.0) is not None, "a fixed minute would have reset at 60"


def test_sweep_forgets_idle_subjects() -> None:
    window = RequestWindow()
    window.admit("old", 5, 0.0)
    window.admit("new", 5, 50.0)
    window.sweep(70.0)
    assert len(window) == 1
    assert window.admit("new", 1, 70.0) == 40


def test_in_flight_counts_each_subject_up_to_its_limit() -> None:
    flight = InFlight()
    assert flight.acquire("a", 2) and flight.acquire("a", 2)
    assert not flight.acquire("a", 2)
    assert flight.acquire("b", 2)
    flight.release("a")
    assert flight["a"] == 1 and flight.acquire("a", 2)
    for _ in range(3):
        flight.release("a")
    assert flight["a"] == 0, "never below zero"
