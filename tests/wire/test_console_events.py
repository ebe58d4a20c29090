"""Console events (protocols/console-events.md): the framing, ids, differ and resume vectors, and the promise the
resume rule makes: a client that follows, drops and resumes sees every live event once, in order, or a reset."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from helpers.wire import generator_check, ids, load_vectors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import console_events as c

V = load_vectors("console-events.json")


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_console_events.py") == 0


def test_constants() -> None:
    k = V["constants"]
    assert (k["ring"], k["keepalive_s"], k["retry_ms"]) == (512, 15.0, 1000)
    assert (k["max_streams"], k["max_backlog"]) == (32, 256)
    assert k["event_types"] == ["node", "view", "demand", "models", "splits", "hardware", "blackboard", "log", "reset"]
    assert tuple(k["snapshot_types"]) == c.STATUS_TYPES


@pytest.mark.parametrize("case", V["framing"]["events"], ids=ids(V["framing"]["events"]))
def test_event_framing(case: dict[str, Any]) -> None:
    boot, seq = case["id"].split(".")
    event = c.Event(boot, int(seq), case["event"], c.dump_data(json.loads(case["data"])))
    assert event.data == case["data"] and event.id == case["id"]
    frame = c.format_event(event)
    assert frame == case["text"].encode("ascii")
    # One `data:` line whatever the value held (newlines, U+2028, astral characters), and it reads back.
    lines = frame.decode().split("\n")
    assert lines[2].startswith("data: ") and lines[3:] == ["", ""]
    assert json.loads(lines[2][6:]) == json.loads(case["data"])


def test_keepalive_and_retry_frames() -> None:
    assert c.KEEPALIVE_FRAME.decode() == V["framing"]["keepalive"] == ": keepalive\n\n"
    assert c.format_retry().decode() == V["framing"]["retry"] == "retry: 1000\n\n"


def test_event_ids() -> None:
    for case in V["event_ids"]["valid"]:
        assert c.parse_event_id(case["text"]) == (case["boot"], case["seq"])
    for text in V["event_ids"]["invalid"]:
        assert c.parse_event_id(text) is None, text


def test_differ_vectors() -> None:
    differ = c.StatusDiffer()
    for step in V["differ"]:
        emitted = [{"event": t, "data": c.dump_data(v)} for t, v in differ.changes(step["status"])]
        assert emitted == step["emits"], step["name"]


def test_resume_vectors() -> None:
    r = V["resume"]
    log = c.EventLog(r["boot"], capacity=r["ring"])
    for op in r["script"]:
        if op["op"] == "open":
            opened = log.open(op["last_event_id"], op["status"])
            assert [{"id": e.id, "event": e.type, "data": e.data} for e in opened.events] == op["sent"]
        elif op["op"] == "record":
            e = log.record(op["event"], op["data"])
            assert {"id": e.id, "event": e.type, "data": e.data} == op["appended"]
        else:
            got = [{"id": e.id, "event": e.type, "data": e.data} for e in log.observe_status(op["status"])]
            assert got == op["appended"]
    status = r["script"][-2]["status"]
    for case in r["cases"]:
        state = copy.deepcopy(log)
        opened = state.open(case["last_event_id"], status)
        expect = case["expect"]
        assert opened.cursor == expect["cursor"], case["name"]
        if "replay" in expect:
            assert opened.replay and [e.id for e in opened.events] == expect["replay"], case["name"]
        else:
            assert not opened.replay and opened.reset == expect["reset"], case["name"]
            types = [e.type for e in opened.events]
            assert types == ([c.RESET] if expect["reset"] else []) + expect["snapshot"], case["name"]
            assert opened.events[0].id == expect["first_id"]
            if expect["reset"]:
                assert json.loads(opened.events[0].data) == {"reason": expect["reset"]}


def test_snapshot_is_the_status_now_and_reaches_no_live_stream() -> None:
    log = c.EventLog("00000001")
    doc = {"node": {"role": "host"}, "mesh": None, "splits": [], "rpc_worker": None, "models": []}
    first = log.open(None, doc)
    assert [json.loads(e.data) for e in first.events] == [
        {"role": "host"}, None, {"demand": {}, "wanted": []}, [], {"splits": [], "rpc_worker": None, "moe_shards": []}]
    second = log.open(None, doc)
    assert log.pending(first.cursor) == [] and second.cursor == log.last_seq == 10
    assert log.backlog(first.cursor) == 5


def test_the_ring_keeps_its_capacity_and_knows_what_left() -> None:
    ring = c.EventRing("00000002", capacity=3)
    for i in range(5):
        ring.append("log", c.dump_data(i))
    assert [e.seq for e in ring] == [3, 4, 5] and ring.dropped_through == 2
    assert ring.resume_reason("00000002.1") == c.TOO_OLD
    assert ring.resume_reason("00000002.2") is None
    with pytest.raises(ValueError):
        ring.append("weather", "null")
    with pytest.raises(ValueError):
        c.EventRing("NOTHEX00")


def test_keepalive_timer() -> None:
    timer = c.KeepaliveTimer(100.0, interval_s=15.0)
    assert timer.next_at() == 115.0 and not timer.due(114.9) and timer.due(115.0)
    timer.sent(110.0)
    assert timer.next_at() == 125.0


def test_boot_id() -> None:
    assert c.boot_id(bytes([0, 1, 0xab, 0xff])) == "0001abff"
    with pytest.raises(ValueError):
        c.boot_id(b"abc")


OPS = st.lists(st.one_of(st.just(("log",)), st.just(("status",)), st.just(("open",)), st.just(("drop",)),
                         st.just(("resume",))), min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(min_value=4, max_value=24))
def test_a_client_that_drops_and_resumes_sees_each_live_event_once_in_order(ops: list[tuple[str]],
                                                                            capacity: int) -> None:
    """Live events are logs and status changes made by the script; other clients' snapshots come and go. The
    followed client either gets exactly the live events in order (across any number of drops) or a reset."""
    log = c.EventLog("0000beef", capacity=capacity)
    doc: dict[str, Any] = {"node": {"n": 0}, "mesh": None, "splits": [], "rpc_worker": None, "models": []}
    opened = log.open(None, doc)
    last_id: str | None = opened.events[-1].id
    cursor: int | None = opened.cursor
    live: list[str] = []  # live events made after the client's first snapshot
    received: list[str] = []
    for (op,) in ops:
        if op == "log":
            live.append(log.record("log", {"m": len(live)}).id)
        elif op == "status":
            doc = copy.deepcopy(doc)
            doc["node"]["n"] += 1
            live += [e.id for e in log.observe_status(doc)]
        elif op == "open":  # another client arrives: its snapshot is no live event
            log.open(None, doc)
        elif op == "drop":
            cursor = None
        elif op == "resume" and cursor is None:
            opened = log.open(last_id, doc)
            if opened.reset is not None:
                assert opened.reset == c.TOO_OLD  # it fell out of the ring while away: a snapshot again
                assert received == live[:len(received)]
                return
            received += [e.id for e in opened.events]
            cursor = opened.cursor
        if cursor is not None:  # a connected client reads what it is due after each step
            got = log.pending(cursor)
            received += [e.id for e in got]
            cursor = log.last_seq
        if received:
            last_id = received[-1]
    if cursor is None:  # back at the end
        opened = log.open(last_id, doc)
        if opened.reset is not None:
            assert opened.reset == c.TOO_OLD and received == live[:len(received)]
            return
        received += [e.id for e in opened.events]
    assert received == live
