"""Routing one request among a model's servers: session affinity, local preference, cost, failover."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshp2p.mesh.routing import (
    RTT_MS_PER_REQUEST,
    UNKNOWN_RTT_MS,
    ServerCandidate,
    choose_server,
    cost,
    failover_order,
)

LOCAL = "local"


def remote(peer_id: str, in_flight: float = 0.0, rtt_ms: float | None = 10.0) -> ServerCandidate:
    return ServerCandidate(peer_id, in_flight, rtt_ms, local=False)


def local(in_flight: float = 0.0) -> ServerCandidate:
    return ServerCandidate(LOCAL, in_flight, None, local=True)


def pick(*candidates: ServerCandidate, session_key: str | None = None) -> str:
    return choose_server(candidates, session_key=session_key, local_id=LOCAL).peer_id


def test_no_candidates_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose_server([], session_key=None, local_id=LOCAL)


def test_local_preferred_within_one_request_of_the_best_remote() -> None:
    assert pick(local(3), remote("r1", 2), remote("r2", 5)) == LOCAL
    assert pick(local(4), remote("r1", 2, rtt_ms=0.0), remote("r2", 5)) == "r1"


def test_local_by_peer_id_even_without_the_flag() -> None:
    me = ServerCandidate(LOCAL, 1.0, 30.0, local=False)
    assert pick(me, remote("r1", 0, rtt_ms=0.0)) == LOCAL


def test_remotes_by_cost_rtt_weighs_like_queued_requests() -> None:
    assert RTT_MS_PER_REQUEST == 50
    # r1: 1 + 100/50 = 3; r2: 2 + 25/50 = 2.5
    assert pick(remote("r1", 1, 100.0), remote("r2", 2, 25.0)) == "r2"
    assert cost(remote("r1", 1, 100.0), local_id=LOCAL) == 3.0


def test_unknown_rtt_counts_as_20_ms() -> None:
    assert cost(remote("r", 1, None), local_id=LOCAL) == 1 + UNKNOWN_RTT_MS / RTT_MS_PER_REQUEST
    assert pick(remote("known", 0, 30.0), remote("unknown", 0, None)) == "unknown"
    assert pick(remote("known", 0, 10.0), remote("unknown", 0, None)) == "known"


def test_ties_break_on_peer_id() -> None:
    assert pick(remote("b"), remote("a"), remote("c")) == "a"


def test_busy_local_competes_on_cost() -> None:
    # local 5 vs best remote 3: not within 1; cost local 5, r1 3 + 0.2.
    assert pick(local(5), remote("r1", 3)) == "r1"


def test_sessions_stick_regardless_of_load_and_locality() -> None:
    servers = [local(0), *(remote(f"r{i}", i) for i in range(6))]
    chosen = pick(*servers, session_key="conversation-1")
    busy = [ServerCandidate(s.peer_id, 100.0 if s.peer_id == chosen else 0.0, s.rtt_ms, s.local) for s in servers]
    assert pick(*busy, session_key="conversation-1") == chosen


def test_sessions_spread_over_servers() -> None:
    servers = [remote(f"r{i}") for i in range(4)]
    assert len({pick(*servers, session_key=f"user-{i}") for i in range(200)}) == 4


def test_removing_an_unrelated_server_does_not_move_a_session() -> None:
    servers = [remote(f"r{i}") for i in range(8)]
    for i in range(50):
        key = f"user-{i}"
        chosen = pick(*servers, session_key=key)
        for gone in servers:
            if gone.peer_id != chosen:
                assert pick(*(s for s in servers if s is not gone), session_key=key) == chosen
        # adding a server moves the session only to the newcomer
        assert pick(*servers, remote("new"), session_key=key) in (chosen, "new")


def test_a_session_moves_to_its_second_choice_when_its_server_leaves() -> None:
    servers = [remote(f"r{i}") for i in range(8)]
    order = failover_order(servers, failed=set(), session_key="s", local_id=LOCAL)
    assert order[0].peer_id == pick(*servers, session_key="s")
    assert pick(*(s for s in servers if s is not order[0]), session_key="s") == order[1].peer_id


def test_failover_skips_failed_servers_in_preference_order() -> None:
    servers = [local(4), remote("r1", 2, 50.0), remote("r2", 0, 10.0), remote("r3", 1, 0.0)]
    order = failover_order(servers, failed={"r2"}, session_key=None, local_id=LOCAL)
    assert [c.peer_id for c in order] == ["r3", "r1", LOCAL]
    assert failover_order(servers, failed={s.peer_id for s in servers}, session_key=None, local_id=LOCAL) == []


def test_failover_first_is_what_choose_server_would_pick() -> None:
    servers = [local(1), remote("r1", 0, 10.0), remote("r2", 3, 10.0)]
    order = failover_order(servers, failed=set(), session_key=None, local_id=LOCAL)
    assert order[0] == choose_server(servers, session_key=None, local_id=LOCAL) == servers[0]
    assert [c.peer_id for c in order] == [LOCAL, "r1", "r2"]


def test_nonsense_numbers_do_not_win() -> None:
    assert pick(remote("nan", math.nan, 1.0), remote("ok", 3, 1.0)) == "ok"
    assert pick(remote("neg-rtt", 0, -5.0), remote("ok", 0, 10.0)) == "ok"


candidates = st.lists(
    st.builds(ServerCandidate, st.text(min_size=1, max_size=8), st.floats(allow_nan=True),
              st.one_of(st.none(), st.floats(allow_nan=True)), st.booleans()),
    min_size=1, max_size=10,
)


@given(candidates, st.one_of(st.none(), st.text(max_size=10)), st.sampled_from(["", "a", LOCAL]))
def test_always_returns_one_of_the_candidates(servers: list[ServerCandidate], session_key: str | None,
                                              local_id: str) -> None:
    chosen = choose_server(servers, session_key=session_key, local_id=local_id)
    assert any(chosen is s for s in servers)
    order = failover_order(servers, failed=set(), session_key=session_key, local_id=local_id)
    assert order[0] == chosen
    assert sorted(map(id, order)) == sorted(map(id, servers))


@given(candidates, st.one_of(st.none(), st.text(min_size=1, max_size=10)))
def test_choice_does_not_depend_on_candidate_order(servers: list[ServerCandidate], session_key: str | None) -> None:
    servers = list({s.peer_id: s for s in servers}.values())  # peer ids are unique in practice
    assert (choose_server(servers, session_key=session_key, local_id=LOCAL)
            == choose_server(servers[::-1], session_key=session_key, local_id=LOCAL))
