"""Whose expert usage a `--moe shard` member plans with (mesh/moe_usage.py), from plain tags: the rules of its
docstring, and that a group converges on one measured set whatever each member measured or estimated."""

from __future__ import annotations

from meshp2p.mesh.moe_usage import HOLDER_RETRY_S, MEMBER_RETRY_S, AskBackoff, UsageAsk, usage_to_ask

M1, M2, W = "imatrix:" + "1" * 16, "imatrix:" + "2" * 16, "weight-norm:" + "0" * 16


def test_a_member_with_the_estimate_asks_the_members_that_measured() -> None:
    got = usage_to_ask("C", W, {"A": W, "B": M1, "D": M1})
    assert got == UsageAsk(("B", "D"), "1" * 16, MEMBER_RETRY_S)


def test_a_member_with_the_lowest_measured_tag_asks_nobody() -> None:
    assert usage_to_ask("A", M1, {"B": M2, "C": W}) is None
    assert usage_to_ask("B", M1, {"A": M1, "C": W}) is None


def test_different_measured_counts_converge_on_the_lowest_peer_ids() -> None:
    assert usage_to_ask("B", M2, {"A": M1}) == UsageAsk(("A",), "1" * 16, MEMBER_RETRY_S)
    # Once B took A's counts, nobody asks anything again.
    tags = {"A": M1, "B": M1, "C": M2}
    assert usage_to_ask("A", M1, tags) is None and usage_to_ask("B", M1, tags) is None
    assert usage_to_ask("C", M2, tags) == UsageAsk(("A", "B"), "1" * 16, MEMBER_RETRY_S)


def test_the_group_settles_on_one_tag_from_any_start() -> None:
    tags = {"E": W, "D": M2, "C": W, "B": "imatrix:" + "3" * 16, "A2": W}
    for _ in range(5):  # each round, every member that is told to ask takes the target's tag
        changes = {peer: own for peer in tags
                   if (ask := usage_to_ask(peer, tags[peer], tags)) is not None
                   and (own := f"imatrix:{ask.digest}")}
        if not changes:
            break
        tags.update(changes)
    assert set(tags.values()) == {"imatrix:" + "3" * 16}


def test_only_the_estimate_everywhere_asks_the_holders_once_none_announces_a_measured_tag() -> None:
    assert usage_to_ask("B", W, {"A": W}) is None
    got = usage_to_ask("B", W, {"A": W}, holders=["Z", "A", "B", "H"])
    assert got == UsageAsk(("H", "Z"), None, HOLDER_RETRY_S)  # not itself, not a member announcing the estimate
    assert usage_to_ask("B", W, {"A": M1}, holders=["H"]) == UsageAsk(("A",), "1" * 16, MEMBER_RETRY_S)


def test_unparsable_tags_are_ignored() -> None:
    assert usage_to_ask("B", W, {"A": "imatrix:nothex", "C": "something-else"}) is None


def test_a_failed_peer_waits_for_its_retry_time() -> None:
    backoff = AskBackoff()
    assert backoff.ready("A", 100.0)
    backoff.failed("A", 100.0, MEMBER_RETRY_S)
    assert not backoff.ready("A", 105.0) and backoff.ready("B", 105.0)
    assert backoff.ready("A", 100.0 + MEMBER_RETRY_S)
