"""How `--auto` picks a mesh from DHT listings (meshp2p/mesh/discovery.py), one rule at a time on plain values."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from meshp2p.mesh.discovery import (
    CAPACITY_CAP,
    CAPACITY_PER_DOUBLING,
    FULLNESS_PENALTY,
    LAST_JOINED_BONUS,
    MODEL_SERVED,
    MODEL_WANTED,
    REGION_MATCH,
    REGION_MISMATCH,
    Candidate,
    is_joinable,
    rank,
    score,
)
from meshp2p.wire.records import MeshListing

#: 1 GiB: the capacity term is zero, so the other terms show alone.
NO_CAPACITY_MB = 1024


def candidate(mesh_id: str = "a" * 32, **fields: object) -> Candidate:
    listing = MeshListing(name="m", region=None, public=True, nodes=1, clients=0, max_clients=None, served=(),
                          wanted=(), capacity_mb=NO_CAPACITY_MB, addrs=(), version="test")
    return Candidate(mesh_id, dataclasses.replace(listing, **fields))


def ids(ranked: list[tuple[float, Candidate]]) -> list[str]:
    return [c.mesh_id for _, c in ranked]


def test_a_plain_listing_scores_zero():
    assert score(candidate()) == 0.0
    assert score(candidate(region="AU", served=("m",))) == 0.0  # nothing wanted, nothing scored


@pytest.mark.parametrize(("wanted", "listed", "expected"), [
    ("AU", "AU", REGION_MATCH),
    ("au", "AU", REGION_MATCH),
    ("eu-west", "EU-WEST", REGION_MATCH),
    ("AU", "EU", REGION_MISMATCH),
    ("AU", None, 0.0),
    (None, "AU", 0.0),
])
def test_region(wanted, listed, expected):
    assert score(candidate(region=listed), region=wanted) == expected


def test_a_far_mesh_still_beats_none_but_loses_to_a_near_one():
    near, far = candidate("1" * 32, region="AU"), candidate("2" * 32, region="EU")
    assert ids(rank([far, near], region="AU")) == ["1" * 32, "2" * 32]
    assert ids(rank([far], region="AU")) == ["2" * 32]


@pytest.mark.parametrize(("served", "wanted", "expected"), [
    (("llama",), (), MODEL_SERVED),
    ((), ("llama",), MODEL_WANTED),
    (("llama",), ("llama",), MODEL_SERVED),  # served wins; not both
    (("other",), ("other2",), 0.0),
    (("Llama",), (), 0.0),  # model ids are case-sensitive
])
def test_model(served, wanted, expected):
    assert score(candidate(served=served, wanted=wanted), model="llama") == expected


def test_no_model_wanted_scores_no_model_term():
    assert score(candidate(served=("llama",)), model=None) == 0.0


@pytest.mark.parametrize(("capacity_mb", "expected"), [
    (0, 0.0),
    (512, 0.0),
    (1024, 0.0),
    (2048, CAPACITY_PER_DOUBLING),
    (8192, 3 * CAPACITY_PER_DOUBLING),
    (1024 * 2**6, CAPACITY_CAP),
    (1024 * 2**20, CAPACITY_CAP),
])
def test_capacity(capacity_mb, expected):
    assert score(candidate(capacity_mb=capacity_mb)) == pytest.approx(expected)


@pytest.mark.parametrize(("clients", "max_clients", "joinable"), [
    (0, None, True),
    (1000, None, True),
    (0, 4, True),
    (3, 4, True),
    (4, 4, False),
    (5, 4, False),
    (0, 0, False),
])
def test_a_full_listing_is_never_chosen(clients, max_clients, joinable):
    c = candidate(clients=clients, max_clients=max_clients)
    assert is_joinable(c.listing) is joinable
    assert ids(rank([c])) == ([c.mesh_id] if joinable else [])


def test_fullness_penalty_grows_with_clients():
    assert score(candidate(clients=0, max_clients=4)) == 0.0
    assert score(candidate(clients=1, max_clients=4)) == pytest.approx(-FULLNESS_PENALTY / 4)
    assert score(candidate(clients=3, max_clients=4)) == pytest.approx(-FULLNESS_PENALTY * 3 / 4)
    emptier, fuller = candidate("2" * 32, clients=1, max_clients=10), candidate("1" * 32, clients=9, max_clients=10)
    assert ids(rank([fuller, emptier])) == ["2" * 32, "1" * 32]


def test_private_listings_are_never_auto_joined():
    private = candidate("1" * 32, public=False, region="AU", served=("llama",), capacity_mb=10**6)
    public = candidate("2" * 32)
    assert ids(rank([private, public], region="AU", model="llama")) == ["2" * 32]
    assert rank([private]) == []


def test_last_joined_bonus():
    assert score(candidate("1" * 32), last_joined="1" * 32) == LAST_JOINED_BONUS
    assert score(candidate("1" * 32), last_joined="2" * 32) == 0.0
    # Enough to keep a node on its mesh against a slightly bigger one, not against a region match.
    mine, bigger = candidate("1" * 32, capacity_mb=4096), candidate("2" * 32, capacity_mb=8192)
    assert ids(rank([bigger, mine], last_joined="1" * 32)) == ["1" * 32, "2" * 32]
    near = candidate("3" * 32, region="AU")
    assert ids(rank([mine, near], region="AU", last_joined="1" * 32))[0] == "3" * 32


def test_terms_add_up():
    c = candidate(region="au", served=("llama",), capacity_mb=4096, clients=2, max_clients=8)
    expected = REGION_MATCH + MODEL_SERVED + 2 * CAPACITY_PER_DOUBLING - FULLNESS_PENALTY / 4 + LAST_JOINED_BONUS
    assert score(c, region="AU", model="llama", last_joined=c.mesh_id) == pytest.approx(expected)


def test_ties_break_on_node_count_then_mesh_id_whatever_the_input_order():
    listings = [
        candidate("c" * 32, nodes=2),
        candidate("a" * 32, nodes=2),
        candidate("b" * 32, nodes=5),
        candidate("d" * 32, nodes=1),
    ]
    expected = ["b" * 32, "a" * 32, "c" * 32, "d" * 32]
    for order in itertools.permutations(listings):
        ranked = rank(order)
        assert ids(ranked) == expected
        assert {s for s, _ in ranked} == {0.0}


def test_score_beats_tie_breaks():
    small_but_matching = candidate("z" * 32, nodes=1, region="AU")
    big_elsewhere = candidate("a" * 32, nodes=50)
    assert ids(rank([big_elsewhere, small_but_matching], region="AU")) == ["z" * 32, "a" * 32]
