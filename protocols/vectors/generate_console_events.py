"""Write console-events.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

The vectors of protocols/console-events.md: the exact bytes of events, keepalives and the `retry` line; which
`Last-Event-ID`s parse; what the differ emits for a run of status documents; and the resume rule, as a scripted
ring (small, so eviction shows) followed by the answer to each `Last-Event-ID`. Reset reasons are under the key
`reset` (not `reason`: those name wire rejection reasons, tests/wire/test_wire_package.py).

    /work/venv/bin/python protocols/vectors/generate_console_events.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_console_events.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from meshp2p.wire import console_events as c

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import write_or_check

FILE_NAME = "console-events.json"
BOOT = "0badc0de"
OTHER_BOOT = "5eed1e55"
#: The scripted ring is this small so that the too-old rule shows after a few events.
SCRIPT_RING = 8


def peer(peer_id: str, *, last_seen_s: float, loaded: list[str]) -> dict[str, Any]:
    return {"peer_id": peer_id, "self": peer_id == "12D3KooWself", "role": "host", "loaded": loaded,
            "last_seen_s": last_seen_s, "rtt_ms": None}


def status(*, role: str = "host", peers: list[dict[str, Any]] | None = None, demand: dict[str, float] | None = None,
           wanted: list[str] | None = None, models: list[dict[str, Any]] | None = None,
           mesh: bool = True) -> dict[str, Any]:
    """A `/api/status` document cut down to what the differ reads (real ones carry many more keys)."""
    return {
        "node": {"version": "0.1.0", "pid": 4242, "role": role, "api_keys": False},
        "mesh": None if not mesh else {"mesh_id": "ab" * 16, "nodes": len(peers or []), "peers": peers or [],
                                       "demand": demand or {}, "wanted": wanted or []},
        "blackboard": None,
        "splits": [],
        "rpc_worker": None,
        "models": models or [],
    }


def event_json(event: c.Event) -> dict[str, Any]:
    return {"id": event.id, "event": event.type, "data": event.data}


def framing_vectors() -> dict[str, Any]:
    cases = []
    for name, event in (
        ("node", c.Event(BOOT, 1, "node", c.dump_data({"role": "host", "api_keys": False}))),
        ("log_with_newline_and_unicode", c.Event(BOOT, 42, "log", c.dump_data(
            {"time": 1764800000.125, "level": "INFO", "logger": "meshp2p.app",
             "message": "line one\nline two: caf\u00e9 \u2028 \ud83d\ude00"}))),
        ("view_outside_a_mesh", c.Event(BOOT, 7, "view", c.dump_data(None))),
        ("reset", c.Event(BOOT, 9, "reset", c.dump_data({"reason": c.TOO_OLD}))),
    ):
        frame = c.format_event(event)
        assert frame.count(b"\n") == 4 and frame.endswith(b"\n\n")
        cases.append({"name": name, **event_json(event), "text": frame.decode("ascii")})
    return {"events": cases, "keepalive": c.KEEPALIVE_FRAME.decode(), "retry": c.format_retry().decode()}


def event_id_vectors() -> dict[str, Any]:
    valid = [{"text": t, "boot": b, "seq": s} for t, (b, s) in (
        (f"{BOOT}.1", (BOOT, 1)), (f"{BOOT}.512", (BOOT, 512)), (f"{OTHER_BOOT}.9007199254740993",
                                                                 (OTHER_BOOT, 9007199254740993)))]
    for case in valid:
        assert c.parse_event_id(case["text"]) == (case["boot"], case["seq"])
    invalid = ["", "1", BOOT, f"{BOOT}.", f"{BOOT}.0", f"{BOOT}.01", f"{BOOT}.-1", f"{BOOT}.+1", f"{BOOT}.1.2",
               f"{BOOT.upper()}.1", f"{BOOT[:7]}.1", f"{BOOT}0.1", f" {BOOT}.1", f"{BOOT}.1 ", f"{BOOT}.1e3",
               f"{BOOT}.{'9' * 20}"]
    for text in invalid:
        assert c.parse_event_id(text) is None, text
    return {"valid": valid, "invalid": invalid}


def differ_vectors() -> list[dict[str, Any]]:
    """Documents fed in order; after each, the events (type, data) the differ emits."""
    a, b = "12D3KooWself", "12D3KooWpeer"
    docs = [
        ("first document primes", status(peers=[peer(a, last_seen_s=0.0, loaded=[])])),
        ("same document", status(peers=[peer(a, last_seen_s=0.0, loaded=[])])),
        ("only last_seen_s moved", status(peers=[peer(a, last_seen_s=3.5, loaded=[])])),
        ("a peer joined", status(peers=[peer(a, last_seen_s=0.1, loaded=[]), peer(b, last_seen_s=0.0, loaded=[])])),
        ("demand alone", status(peers=[peer(a, last_seen_s=0.1, loaded=[]), peer(b, last_seen_s=9.0, loaded=[])],
                                demand={"qwen": 3.0}, wanted=["qwen"])),
        ("model loading", status(peers=[peer(a, last_seen_s=0.1, loaded=[]), peer(b, last_seen_s=9.0, loaded=[])],
                                 demand={"qwen": 3.0}, wanted=["qwen"],
                                 models=[{"id": "qwen", "state": "loading", "load_progress": 0.5}])),
        ("model ready, role and view follow", status(
            role="host", peers=[peer(a, last_seen_s=0.2, loaded=["qwen"]), peer(b, last_seen_s=9.0, loaded=[])],
            demand={"qwen": 3.0}, wanted=[], models=[{"id": "qwen", "state": "ready", "load_progress": 1.0}])),
        ("keys turned on", status(
            peers=[peer(a, last_seen_s=0.2, loaded=["qwen"]), peer(b, last_seen_s=9.0, loaded=[])],
            demand={"qwen": 3.0}, wanted=[], models=[{"id": "qwen", "state": "ready", "load_progress": 1.0}])),
        ("left the mesh", status(mesh=False, models=[{"id": "qwen", "state": "ready", "load_progress": 1.0}])),
    ]
    for _, doc in docs[7:]:
        doc["node"]["api_keys"] = True
    differ = c.StatusDiffer()
    steps = []
    for name, doc in docs:
        emitted = [{"event": t, "data": c.dump_data(v)} for t, v in differ.changes(doc)]
        steps.append({"name": name, "status": doc, "emits": emitted})
    assert [len(s["emits"]) for s in steps] == [0, 0, 0, 1, 1, 1, 3, 1, 2], [len(s["emits"]) for s in steps]
    return steps


def resume_vectors() -> dict[str, Any]:
    """A scripted run of a ring of SCRIPT_RING events, then each Last-Event-ID's answer on that state."""
    doc = status(peers=[peer("12D3KooWself", last_seen_s=0.0, loaded=[])])
    log = c.EventLog(BOOT, capacity=SCRIPT_RING)
    script: list[dict[str, Any]] = []

    def run(op: dict[str, Any]) -> None:
        if op["op"] == "open":
            opened = log.open(op["last_event_id"], op["status"])
            op["sent"] = [event_json(e) for e in opened.events]
        elif op["op"] == "record":
            op["appended"] = event_json(log.record(op["event"], op["data"]))
        else:
            op["appended"] = [event_json(e) for e in log.observe_status(op["status"])]
        script.append(op)

    run({"op": "open", "last_event_id": None, "status": doc})                         # seq 1-5: a snapshot
    run({"op": "record", "event": "log", "data": {"message": "one"}})                 # 6
    run({"op": "record", "event": "blackboard", "data": {"id": "aa", "text": "hi"}})  # 7
    doc2 = copy.deepcopy(doc)
    doc2["models"] = [{"id": "qwen", "state": "ready"}]
    run({"op": "status", "status": doc2})                                             # 8: models
    run({"op": "open", "last_event_id": None, "status": doc2})                        # 9-13: a second snapshot
    run({"op": "record", "event": "log", "data": {"message": "two"}})                 # 14
    assert log.ring.dropped_through == 6 and log.last_seq == 14

    cases = []
    for name, last_id in (
        ("first_visit", None),
        ("empty_header_is_a_first_visit", ""),
        ("up_to_date", f"{BOOT}.14"),
        ("missed_one", f"{BOOT}.13"),
        ("inside_own_snapshot", f"{BOOT}.10"),
        ("before_another_snapshot", f"{BOOT}.8"),
        ("oldest_kept_boundary", f"{BOOT}.6"),
        ("too_old", f"{BOOT}.5"),
        ("another_boot", f"{OTHER_BOOT}.13"),
        ("future_seq", f"{BOOT}.15"),
        ("malformed", "garbage"),
    ):
        state = copy.deepcopy(log)
        opened = state.open(last_id, doc2)
        expect: dict[str, Any] = {"cursor": opened.cursor}
        if opened.replay:
            expect["replay"] = [e.id for e in opened.events]
        else:
            expect["reset"] = opened.reset
            expect["snapshot"] = [e.type for e in opened.events if e.type != c.RESET]
            expect["first_id"] = opened.events[0].id
        cases.append({"name": name, "last_event_id": last_id, "expect": expect})
    by_name = {case["name"]: case["expect"] for case in cases}
    assert by_name["missed_one"]["replay"] == [f"{BOOT}.14"]
    assert by_name["inside_own_snapshot"]["replay"] == [f"{BOOT}.{s}" for s in (11, 12, 13, 14)]
    assert by_name["before_another_snapshot"]["replay"] == [f"{BOOT}.14"]
    assert by_name["too_old"]["reset"] == c.TOO_OLD and by_name["future_seq"]["reset"] == c.UNKNOWN_BOOT
    return {"boot": BOOT, "ring": SCRIPT_RING, "script": script, "cases": cases}


def build() -> dict[str, Any]:
    return {
        "format": "console-events",
        "spec": "protocols/console-events.md",
        "constants": {"ring": c.RING_SIZE, "keepalive_s": c.KEEPALIVE_S, "retry_ms": c.RETRY_MS,
                      "max_streams": c.MAX_STREAMS, "max_backlog": c.MAX_BACKLOG,
                      "event_types": list(c.EVENT_TYPES), "snapshot_types": list(c.STATUS_TYPES)},
        "framing": framing_vectors(),
        "event_ids": event_id_vectors(),
        "differ": differ_vectors(),
        "resume": resume_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", lambda: {FILE_NAME: build()}, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
