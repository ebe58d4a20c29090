"""The demand map on plain numbers: counting windows, eviction, TTL, merging and the gossip body."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshp2p.mesh.demand import (
    DEMAND_BUCKET_S,
    DEMAND_TTL_S,
    DEMAND_WINDOW_S,
    MAX_DEMAND_PEERS,
    MAX_MODELS_TRACKED,
    DemandCounter,
    DemandMap,
)
from meshp2p.wire.demand import (
    MAX_MODEL_ID_CHARS,
    MAX_MODELS_PER_REPORT,
    MAX_REQ_PER_MIN,
    clean_rates,
    demand_from_body,
    demand_to_body,
)
from meshp2p.wire.errors import WireError

T0 = 1_750_000_000.0


# -- DemandCounter ------------------------------------------------------------------------------------


def test_counts_requests_per_minute() -> None:
    counter = DemandCounter()
    for i in range(30):
        counter.record("a", T0 + i)
    counter.record("b", T0 + 10)
    assert counter.rates(T0 + 30) == {"a": 30.0, "b": 1.0}


def test_rate_is_per_minute_over_the_window() -> None:
    assert DEMAND_WINDOW_S == 60
    counter = DemandCounter()
    for i in range(120):  # 2 requests a second for a minute
        counter.record("a", T0 + i / 2)
    assert counter.rates(T0 + 59.9)["a"] == pytest.approx(120.0)


def test_requests_leave_the_window_between_55_and_60_s() -> None:
    counter = DemandCounter()
    counter.record("a", T0)
    assert counter.rates(T0 + DEMAND_WINDOW_S - DEMAND_BUCKET_S - 0.01) == {"a": 1.0}
    assert counter.rates(T0 + DEMAND_WINDOW_S) == {}


def test_models_without_requests_in_the_window_drop_out_and_are_forgotten() -> None:
    counter = DemandCounter()
    counter.record("old", T0)
    counter.record("new", T0 + 50)
    assert set(counter.rates(T0 + 70)) == {"new"}
    counter.record("new", T0 + 200)
    assert counter.rates(T0 + 200) == {"new": 1.0}


def test_tracks_at_most_256_models_evicting_the_least_recently_requested() -> None:
    counter = DemandCounter()
    counter.record("first", T0)
    for i in range(MAX_MODELS_TRACKED - 1):
        counter.record(f"m{i}", T0 + 1)
    counter.record("first", T0 + 2)  # now the most recent: m0 is the least recently requested
    counter.record("newcomer", T0 + 3)
    rates = counter.rates(T0 + 3)
    assert len(rates) == MAX_MODELS_TRACKED
    assert "m0" not in rates
    assert rates["first"] == 2.0
    assert "newcomer" in rates


def test_memory_per_model_is_bounded_by_the_buckets() -> None:
    counter = DemandCounter()
    for i in range(10_000):
        counter.record("a", T0 + i)
    buckets = counter._models["a"]
    assert len(buckets) <= DEMAND_WINDOW_S / DEMAND_BUCKET_S


def test_ids_that_cannot_be_gossiped_are_not_counted() -> None:
    counter = DemandCounter()
    assert not counter.record("", T0)
    assert not counter.record("x" * (MAX_MODEL_ID_CHARS + 1), T0)
    assert counter.record("x" * MAX_MODEL_ID_CHARS, T0)
    assert list(counter.rates(T0)) == ["x" * MAX_MODEL_ID_CHARS]


def test_a_clock_stepping_back_still_counts() -> None:
    counter = DemandCounter()
    counter.record("a", T0 + 30)
    counter.record("a", T0 + 10)
    assert counter.rates(T0 + 30) == {"a": 2.0}


# -- DemandMap ----------------------------------------------------------------------------------------


def test_total_sums_peers_and_self() -> None:
    demand = DemandMap()
    demand.apply("self", {"a": 5.0}, T0)
    demand.apply("p1", {"a": 2.5, "b": 1.0}, T0 + 1)
    assert demand.total(T0 + 2) == {"a": 7.5, "b": 1.0}


def test_a_newer_report_replaces_the_older_one() -> None:
    demand = DemandMap()
    demand.apply("p1", {"a": 5.0, "b": 1.0}, T0)
    assert demand.apply("p1", {"a": 1.0}, T0 + 10)
    assert demand.total(T0 + 10) == {"a": 1.0}


def test_an_older_report_arriving_late_is_ignored() -> None:
    demand = DemandMap()
    demand.apply("p1", {"a": 1.0}, T0 + 10)
    assert not demand.apply("p1", {"a": 9.0}, T0 + 5)
    assert demand.total(T0 + 10) == {"a": 1.0}


def test_reports_expire_after_the_ttl() -> None:
    demand = DemandMap()
    demand.apply("p1", {"a": 1.0}, T0)
    demand.apply("p2", {"a": 2.0}, T0 + 60)
    assert demand.total(T0 + DEMAND_TTL_S) == {"a": 3.0}
    assert demand.total(T0 + DEMAND_TTL_S + 0.1) == {"a": 2.0}
    assert demand.expire(T0 + DEMAND_TTL_S + 0.1) == ["p1"]
    assert demand.total(T0 + 60 + DEMAND_TTL_S + 0.1) == {}


def test_wanted_is_demanded_but_not_served_hottest_first() -> None:
    demand = DemandMap()
    demand.apply("p1", {"served": 50.0, "cold": 1.0, "hot": 20.0, "tie-b": 3.0, "tie-a": 3.0}, T0)
    assert demand.wanted(T0, served={"served"}) == ["hot", "tie-a", "tie-b", "cold"]
    assert demand.wanted(T0 + DEMAND_TTL_S + 1, served=set()) == []


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf, 0.0])
def test_unusable_rates_are_dropped(bad: float) -> None:
    demand = DemandMap()
    demand.apply("p1", {"bad": bad, "good": 1.0}, T0)
    assert demand.total(T0) == {"good": 1.0}


def test_long_or_empty_model_ids_are_dropped() -> None:
    demand = DemandMap()
    demand.apply("p1", {"x" * (MAX_MODEL_ID_CHARS + 1): 1.0, "": 1.0, "ok": 1.0}, T0)
    assert demand.total(T0) == {"ok": 1.0}


def test_a_report_keeps_its_64_hottest_models() -> None:
    rates = {f"m{i:03}": float(i + 1) for i in range(100)}
    kept = clean_rates(rates)
    assert len(kept) == MAX_MODELS_PER_REPORT
    assert set(kept) == {f"m{i:03}" for i in range(100 - MAX_MODELS_PER_REPORT, 100)}


def test_huge_rates_are_clamped_so_sums_stay_finite() -> None:
    demand = DemandMap()
    demand.apply("p1", {"a": 1e308}, T0)
    demand.apply("p2", {"a": 1e308}, T0)
    assert demand.total(T0) == {"a": 2 * MAX_REQ_PER_MIN}


def test_peers_held_are_bounded() -> None:
    demand = DemandMap()
    for i in range(MAX_DEMAND_PEERS + 10):
        demand.apply(f"p{i}", {"a": 1.0}, T0)
    assert demand.total(T0) == {"a": float(MAX_DEMAND_PEERS)}


rate_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6))
reports = st.dictionaries(st.text(max_size=MAX_MODEL_ID_CHARS + 4), rate_values, max_size=80)


@given(st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3", "self"]), reports, st.floats(0, 400)), max_size=12),
       st.floats(0, 600))
def test_totals_are_never_negative_nan_or_infinite(applied: list[tuple[str, dict[str, float], float]],
                                                   now: float) -> None:
    demand = DemandMap()
    for peer_id, rates, at in applied:
        demand.apply(peer_id, rates, T0 + at)
    totals = demand.total(T0 + now)
    assert all(math.isfinite(v) and v > 0 for v in totals.values())
    assert all(0 < len(m) <= MAX_MODEL_ID_CHARS for m in totals)
    wanted = demand.wanted(T0 + now, served=set())
    assert [totals[m] for m in wanted] == sorted(totals.values(), reverse=True)


# -- gossip body --------------------------------------------------------------------------------------


def test_body_round_trips() -> None:
    body = demand_to_body({"a": 2.5, "b": 3})
    assert body == {"rates": {"a": 2.5, "b": 3.0}}
    assert all(type(v) is float for v in body["rates"].values())
    assert demand_from_body(body) == {"a": 2.5, "b": 3.0}


def test_body_reader_accepts_the_protocol_vector() -> None:
    # protocols/vectors/generate.py DEMAND_BODY: unknown keys (ttl_s) are ignored, as in status bodies.
    body = {"rates": {"unsloth/gemma-3-270m-it-GGUF:Q4_K_M": 0.5}, "ttl_s": 60}
    assert demand_from_body(body) == {"unsloth/gemma-3-270m-it-GGUF:Q4_K_M": 0.5}


def test_body_writer_cleans_so_the_body_always_decodes() -> None:
    rates = {f"m{i}": float(i) for i in range(100)} | {"nan": math.nan, "x" * 200: 1.0}
    decoded = demand_from_body(demand_to_body(rates))
    assert len(decoded) == MAX_MODELS_PER_REPORT
    assert "nan" not in decoded


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {},
        {"rates": []},
        {"rates": None},
        {"rates": {"a": 1}},
        {"rates": {"a": True}},
        {"rates": {"a": "1.0"}},
        {"rates": {"a": -1.0}},
        {"rates": {"a": math.nan}},
        {"rates": {"a": math.inf}},
        {"rates": {"": 1.0}},
        {"rates": {7: 1.0}},
        {"rates": {"x" * (MAX_MODEL_ID_CHARS + 1): 1.0}},
        {"rates": {f"m{i}": 1.0 for i in range(MAX_MODELS_PER_REPORT + 1)}},
    ],
)
def test_body_reader_rejects_malformed(body: object) -> None:
    with pytest.raises(WireError, match="malformed"):
        demand_from_body(body)


@given(st.dictionaries(st.text(max_size=200), rate_values, max_size=100))
def test_any_rates_make_a_body_that_decodes(rates: dict[str, float]) -> None:
    decoded = demand_from_body(demand_to_body(rates))
    assert all(math.isfinite(v) and v > 0 for v in decoded.values())
