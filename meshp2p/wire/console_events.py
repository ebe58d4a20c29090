"""Console events (protocols/console-events.md): the ids, the ring, the resume rule, the framing and the differ
behind `GET /api/events` on the console port.

Sans-IO like the rest of `wire/`: the node's status document (plain JSON values) and `now` go in, `Event`s and
bytes come out; the trio code that owns the HTTP stream (api/console_events.py) and the code that watches the node
(app/console_events.py) only move them.

- `EventLog` is the whole machine: `observe_status` diffs a status document and appends what changed, `record`
  appends a history event (`blackboard`, `log`), `open` is the resume rule for a new stream (replay, or
  reset and snapshot), `pending` is what a live stream has not been sent yet.
- The ring is one for all streams: a live stream is only a cursor into it (the seq of the last event it was sent),
  so a slow or stalled client costs no memory of its own; its backlog is how far the ring ran past its cursor.
- Snapshot events take ids from the same sequence and stay in the ring, so a client that drops halfway through its
  snapshot resumes it; they are sent live to nobody (other streams already hold those values) and replayed only to
  the client whose snapshot they were (it resumes from an id inside it).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Events kept for resumes, shared by every stream.
RING_SIZE = 512
#: A comment line after this long without anything sent.
KEEPALIVE_S = 15.0
#: The `retry:` a stream opens with: how long a browser waits before it reconnects.
RETRY_MS = 1000
#: Event streams one node serves at once; one more is answered 503.
MAX_STREAMS = 32
#: Events a stream may be behind by; one more and it is cut (it reconnects and resumes).
MAX_BACKLOG = 256

#: The parts of `/api/status` each followed by an event type, in the order a snapshot sends them.
STATUS_TYPES = ("node", "view", "demand", "models", "splits")
#: Parts of `/api/status` followed like the others but in no snapshot: readings that change all the time, which a
#: page reads once from `/api/status` and then follows (the hardware sample, every 2 s while a stream is open).
LIVE_TYPES = ("hardware",)
#: History: sent as it happens and replayed on resume, never part of a snapshot.
HISTORY_TYPES = ("blackboard", "log")
RESET = "reset"
EVENT_TYPES = (*STATUS_TYPES, *LIVE_TYPES, *HISTORY_TYPES, RESET)
#: Why a resume could not be served: the id is not one this run gave (another run's, malformed, or in the
#: future), or events after it have left the ring.
UNKNOWN_BOOT = "unknown_boot"
TOO_OLD = "too_old"

KEEPALIVE_FRAME = b": keepalive\n\n"
_EVENT_ID = re.compile(r"([0-9a-f]{8})\.([1-9][0-9]{0,18})")
_BOOT = re.compile(r"[0-9a-f]{8}")


def boot_id(random4: bytes) -> str:
    """A run's boot id from 4 random bytes (the caller draws them: nothing here reads a random source)."""
    if len(random4) != 4:
        raise ValueError("a boot id is made of 4 random bytes")
    return random4.hex()


def parse_event_id(text: str) -> tuple[str, int] | None:
    """`<boot>.<seq>` as (boot, seq); None for anything else (then the resume is a reset)."""
    match = _EVENT_ID.fullmatch(text)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


def dump_data(value: Any) -> str:
    """An event's `data`: compact JSON, ASCII only, so it is always one line and valid UTF-8 whatever a log message
    or a post holds (lone surrogates included)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class Event:
    boot: str
    seq: int
    type: str
    #: One line of JSON (`dump_data`).
    data: str
    #: The seq of the first event of the snapshot this event belongs to; None for a live event.
    snapshot: int | None = None

    @property
    def id(self) -> str:
        return f"{self.boot}.{self.seq}"


def format_event(event: Event) -> bytes:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.data}\n\n".encode()


def format_events(events: Iterable[Event]) -> bytes:
    return b"".join(format_event(e) for e in events)


def format_retry(retry_ms: int = RETRY_MS) -> bytes:
    """What a stream opens with: the reconnection delay a browser uses."""
    return f"retry: {retry_ms}\n\n".encode()


def status_parts(status: Mapping[str, Any]) -> dict[str, Any]:
    """Each status event type's `data`, from a `/api/status` document (the table in the spec)."""
    mesh = status.get("mesh")
    view = None if mesh is None else {k: v for k, v in mesh.items() if k not in ("demand", "wanted")}
    return {
        "node": status["node"],
        "view": view,
        "demand": {"demand": {} if mesh is None else mesh["demand"], "wanted": [] if mesh is None else mesh["wanted"]},
        "models": status["models"],
        "splits": {"splits": status["splits"], "rpc_worker": status["rpc_worker"],
                   "moe_shards": status.get("moe_shards", [])},
        # Absent from a document without a sampler (idle mode's): null.
        "hardware": status.get("hardware"),
    }


def comparison_key(event_type: str, value: Any) -> str:
    """What two values of one type are compared by: their JSON, keys sorted, less what changes without news
    (a peer's `last_seen_s` grows every second)."""
    if event_type == "view" and isinstance(value, dict) and isinstance(value.get("peers"), list):
        value = {**value, "peers": [{k: v for k, v in p.items() if k != "last_seen_s"} if isinstance(p, dict) else p
                                    for p in value["peers"]]}
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


class StatusDiffer:
    """The last value sent of each status type, and which types a new document changes."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def changes(self, status: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """(type, data) of each part that differs from the last one seen, in `STATUS_TYPES` then `LIVE_TYPES`
        order. The first document only primes the differ: a stream opened before it starts with a snapshot, never
        with changes."""
        changed = []
        for event_type, value in status_parts(status).items():
            key = comparison_key(event_type, value)
            previous = self._last.get(event_type)
            self._last[event_type] = key
            if previous is not None and previous != key:
                changed.append((event_type, value))
        return changed


@dataclass(frozen=True)
class Opened:
    """What a new stream is sent first, and its cursor after that."""

    events: tuple[Event, ...]
    cursor: int
    #: The reset reason when the resume asked could not be served; None for a replay or a first visit.
    reset: str | None = None
    #: Whether `events` is a replay (a resume served), not a snapshot.
    replay: bool = False


class EventRing:
    """The last `capacity` events of one run, ids `<boot>.<seq>` with seq 1, 2, 3..."""

    def __init__(self, boot: str, capacity: int = RING_SIZE) -> None:
        if _BOOT.fullmatch(boot) is None:
            raise ValueError(f"a boot id is 8 lowercase hex digits, not {boot!r}")
        self.boot = boot
        self.capacity = capacity
        self.last_seq = 0
        #: The highest seq that has left the ring (0: none yet); a resume from below it is too old.
        self.dropped_through = 0
        self._events: deque[Event] = deque()

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def append(self, event_type: str, data: str, *, snapshot: int | None = None) -> Event:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        self.last_seq += 1
        event = Event(self.boot, self.last_seq, event_type, data, snapshot)
        self._events.append(event)
        if len(self._events) > self.capacity:
            self.dropped_through = self._events.popleft().seq
        return event

    def append_snapshot(self, values: Sequence[tuple[str, Any]], *, reset: str | None = None) -> list[Event]:
        """One snapshot, its ids consecutive: `reset` (if a reason is given), then each (type, data) given."""
        first = self.last_seq + 1
        events = []
        if reset is not None:
            events.append(self.append(RESET, dump_data({"reason": reset}), snapshot=first))
        events += [self.append(t, dump_data(v), snapshot=first) for t, v in values]
        return events

    def resume_reason(self, last_event_id: str) -> str | None:
        """None when every event after `last_event_id` is still here, else why not (the reset's reason)."""
        parsed = parse_event_id(last_event_id)
        if parsed is None or parsed[0] != self.boot or parsed[1] > self.last_seq:
            return UNKNOWN_BOOT
        if parsed[1] < self.dropped_through:
            return TOO_OLD
        return None

    def replay(self, seq: int) -> list[Event]:
        """The events after `seq` for a client that was sent `seq`: live ones, and the rest of its own snapshot."""
        return [e for e in self._events if e.seq > seq and (e.snapshot is None or e.snapshot <= seq)]

    def live_after(self, cursor: int) -> list[Event]:
        """The events after `cursor` a live stream is sent (no snapshot: it holds those values already)."""
        if cursor >= self.last_seq:
            return []
        return [e for e in self._events if e.seq > cursor and e.snapshot is None]


class EventLog:
    """The ring and the differ together: every change of the node in, what each stream is sent out."""

    def __init__(self, boot: str, capacity: int = RING_SIZE) -> None:
        self.ring = EventRing(boot, capacity)
        self.differ = StatusDiffer()

    @property
    def boot(self) -> str:
        return self.ring.boot

    @property
    def last_seq(self) -> int:
        return self.ring.last_seq

    def observe_status(self, status: Mapping[str, Any]) -> list[Event]:
        """Append an event for each status part that changed since the last document seen."""
        return [self.ring.append(t, dump_data(v)) for t, v in self.differ.changes(status)]

    def record(self, event_type: str, value: Any) -> Event:
        """Append a history event (`blackboard`, `log`)."""
        if event_type not in HISTORY_TYPES:
            raise ValueError(f"{event_type!r} is not a history event type")
        return self.ring.append(event_type, dump_data(value))

    def open(self, last_event_id: str | None, status: Mapping[str, Any]) -> Opened:
        """A new stream, asking to resume after `last_event_id` (None or empty: a first visit). `status` is the
        node's document now: what changed since the last one seen is appended first (so a resume replays it), and
        a snapshot is made of it."""
        self.observe_status(status)
        reason = None
        if last_event_id:
            reason = self.ring.resume_reason(last_event_id)
            parsed = parse_event_id(last_event_id)
            if reason is None and parsed is not None:
                return Opened(tuple(self.ring.replay(parsed[1])), self.ring.last_seq, replay=True)
        parts = status_parts(status)
        events = self.ring.append_snapshot([(t, parts[t]) for t in STATUS_TYPES], reset=reason)
        return Opened(tuple(events), self.ring.last_seq, reason)

    def pending(self, cursor: int) -> list[Event]:
        return self.ring.live_after(cursor)

    def backlog(self, cursor: int) -> int:
        """How far the ring ran past a stream's cursor (snapshot events of other streams count: they are few)."""
        return self.ring.last_seq - cursor

    def lost(self, cursor: int) -> bool:
        """Events after `cursor` have already left the ring: that stream cannot go on without a gap."""
        return cursor < self.ring.dropped_through


@dataclass
class KeepaliveTimer:
    """When a stream owes a keepalive comment: `interval_s` after anything was last sent."""

    last_sent_at: float
    interval_s: float = KEEPALIVE_S

    def sent(self, now: float) -> None:
        self.last_sent_at = now

    def next_at(self) -> float:
        return self.last_sent_at + self.interval_s

    def due(self, now: float) -> bool:
        return now >= self.next_at()
