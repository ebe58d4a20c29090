"""Which member calibrates over the layer split (mesh/split_calibration.py), from plain tags and capacities."""

from __future__ import annotations

from meshp2p.mesh.split_calibration import Announced, split_calibrator

M, W = "imatrix:" + "1" * 16, "weight-norm:" + "0" * 16


def test_nobody_calibrates_once_a_member_has_measured_counts() -> None:
    assert split_calibrator("A", Announced(W, 100), {"B": Announced(M, 100), "C": Announced(W, 100)}) is None
    assert split_calibrator("A", Announced(M, 100), {"B": Announced(W, 100)}) is None


def test_the_member_with_the_most_capacity_calibrates() -> None:
    own = Announced(W, 100)
    assert split_calibrator("A", own, {"B": Announced(W, 300), "C": Announced(W, 200)}) == "B"
    assert split_calibrator("B", Announced(W, 300), {"A": own, "C": Announced(W, 200)}) == "B"


def test_ties_go_to_the_lowest_peer_id_and_every_member_agrees() -> None:
    members = {"C": Announced(W, 100), "A": Announced(W, 100), "B": Announced(W, 100)}
    names = {split_calibrator(p, a, {q: b for q, b in members.items() if q != p}) for p, a in members.items()}
    assert names == {"A"}


def test_an_unparsable_tag_is_not_measured_and_own_entry_wins_over_a_stale_one() -> None:
    assert split_calibrator("B", Announced(W, 50), {"A": Announced("imatrix", 10)}) == "B"
    # The view's stale entry for this node (it had announced less) is replaced by what it knows now.
    assert split_calibrator("B", Announced(W, 50), {"A": Announced(W, 40), "B": Announced(W, 1)}) == "B"


def test_alone_the_member_calibrates() -> None:
    assert split_calibrator("A", Announced(W, 1), {}) == "A"
