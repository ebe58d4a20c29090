"""What `GET /api/events` and `GET /api/logs` serve (protocols/console-events.md): the node watched for changes, its
log lines and blackboard posts kept in the event ring of wire/console_events.py.

The status document is built and diffed only while at least one event stream is open; with no console open the
node does no status work at all. While one is, a diff runs when a change point pokes (at most every
`DIFF_GAP_S`), plus a safety-net diff every `SAFETY_POLL_S` for what no poke covers (counters, load, RTTs):

- a log line at INFO or above (peers joining and leaving the view, models started and stopped, splits planned,
  promotions: the node logs its state changes), through `LogBuffer`, which also keeps the last `LOG_LINES`;
- a llama-server changing state (starting, loading, ready, restarting, stopped), watched with its own
  `wait_state`, so a model turning ready is on the console at once, whether or not anything logged it;
- a member's status or demand arriving by gossip (`poke`, given to the mesh service as its `on_change`).

History is kept whether or not a console is open, at the cost of appending one event to the ring as it happens
(no diff, no document): every blackboard post stored (`post_stored`, from the blackboard's listener) and every log
line, so a console that reconnects replays what it missed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from meshp2p.api.blackboard_routes import post_json
from meshp2p.inference.llama_server import BackendState, LlamaServer
from meshp2p.wire.blackboard import Post
from meshp2p.wire.console_events import MAX_BACKLOG, Event, EventLog, Opened

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

#: Log lines `GET /api/logs` can give.
LOG_LINES = 200
#: A longer message is cut to this (the ring keeps 512 events: a few huge lines must not hold megabytes).
MAX_LOG_MESSAGE_CHARS = 4000
#: While a stream is open, the status is diffed at least this often, for changes no poke announces. 3 s, not 1:
#: each diff builds the whole document, and one open tab must not cost a node more than half its idle CPU again
#: (tools/bench/idle_node.py --console-tab: 2.1x at 1 s with the hardware sampled and diffed every 2 s).
SAFETY_POLL_S = 3.0
#: Pokes closer together than this share one diff (a burst of log lines or of gossip costs one document, and a
#: busy mesh at most 20 documents a second while a console is open).
DIFF_GAP_S = 0.05
#: While a stream is open, the hardware is sampled this often; the safety-net diff then carries the new readings
#: (a sample pokes no diff of its own: it would double the documents built).
SAMPLE_EVERY_S = SAFETY_POLL_S


class LogBuffer(logging.Handler):
    """The node's last `LOG_LINES` at INFO and above, each also handed to `on_line` on the event loop.

    Records may come from any thread (a `trio.to_thread` worker, a library's own thread): those are handed to the
    event loop with the trio token, so `on_line` and the buffer are only ever touched there.
    """

    def __init__(self, on_line: Callable[[dict[str, Any]], None], capacity: int = LOG_LINES) -> None:
        super().__init__(level=logging.INFO)
        self.lines: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._on_line = on_line
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: int | None = None

    def bind(self) -> None:
        """Called on the event loop's thread, before records are wanted."""
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if len(message) > MAX_LOG_MESSAGE_CHARS:
                message = message[:MAX_LOG_MESSAGE_CHARS] + "…"
            line = {"time": round(record.created, 3), "level": record.levelname, "logger": record.name,
                    "message": message}
        except Exception:  # a record whose arguments do not fit its format: logging's own way out
            self.handleError(record)
            return
        if threading.get_ident() == self._thread:
            self._take(line)
        elif self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):  # the node's loop is gone: nobody to show it to
                self._token.run_sync_soon(self._take, line)

    def _take(self, line: dict[str, Any]) -> None:
        self.lines.append(line)
        self._on_line(line)


class Subscription:
    """One open event stream: what it is sent first, and its cursor into the shared ring."""

    def __init__(self, source: ConsoleEvents, opened: Opened) -> None:
        self._source = source
        self.first = opened.events
        self.reset = opened.reset
        self.cursor = opened.cursor
        #: Set when it fell more than MAX_BACKLOG events behind: the stream must end (the client resumes).
        self.cut = False
        self._new = trio.Event()
        self._cancel: Callable[[], None] | None = None

    def on_cut(self, cancel: Callable[[], None]) -> None:
        """How to end the stream's request at once when it is cut, even while it is blocked sending."""
        self._cancel = cancel

    async def next_events(self) -> list[Event]:
        """The events after the cursor, waiting for at least one; [] once cut."""
        log_ = self._source.log
        while not self.cut:
            events = log_.pending(self.cursor)
            self.cursor = log_.last_seq
            if events:
                return events
            await self._new.wait()
            self._new = trio.Event()
        return []

    def close(self) -> None:
        self._source._closed(self)

    def _wake(self) -> None:
        if self._source.log.backlog(self.cursor) > MAX_BACKLOG:
            self.cut = True
            self._new.set()
            if self._cancel is not None:
                self._cancel()
            self.close()
            log.debug("an event stream fell more than %d events behind; cut", MAX_BACKLOG)
        else:
            self._new.set()


class ConsoleEvents:
    """The node's event ring and its change points; the console's routes call `subscribe`, `recent_logs`."""

    def __init__(self, status: Callable[[], dict[str, Any]], *, boot: str,
                 servers: Mapping[str, LlamaServer] | None = None, safety_poll_s: float = SAFETY_POLL_S,
                 sample: Callable[[], Awaitable[object]] | None = None) -> None:
        """`status`: the `/api/status` document, built on each call; `servers`: the fleet's live mapping."""
        self.status = status
        self.log = EventLog(boot)
        self.logs = LogBuffer(self._on_log_line)
        self.servers: Mapping[str, LlamaServer] = servers if servers is not None else {}
        self.safety_poll_s = safety_poll_s
        #: Takes a fresh hardware sample (inference/hardware_usage.py, at most every SAMPLE_EVERY_S): run while
        #: watched, so the console's CPU, RAM and GPU readings move; never while no console is open.
        self.sample = sample
        self._streams: set[Subscription] = set()
        #: Set while at least one stream is open (a new Event once the last closes).
        self._watched = trio.Event()
        self._poked = trio.Event()
        #: True while the status document is built: a line it logs (an unreadable keys file) must not poke
        #: another diff, which would log it again, 20 times a second.
        self._diffing = False

    # -- what the console's routes call -----------------------------------------------------------

    @property
    def streams(self) -> int:
        return len(self._streams)

    @property
    def boot(self) -> str:
        return self.log.boot

    def subscribe(self, last_event_id: str | None) -> Subscription:
        """A new stream: the replay it asked for, or (reset and) a snapshot of the node now."""
        opened = self.log.open(last_event_id, self._status())
        self._fan_out()  # what changed since the last diff went into the ring for the other streams too
        sub = Subscription(self, opened)
        self._streams.add(sub)
        self._watched.set()
        return sub

    def recent_logs(self, limit: int) -> list[dict[str, Any]]:
        """The last `limit` log lines, newest last."""
        lines = list(self.logs.lines)
        return lines[-limit:] if limit > 0 else []

    # -- change points ----------------------------------------------------------------------------

    def poke(self) -> None:
        """Something may have changed: diff soon, if anyone is watching (free otherwise)."""
        if self._streams:
            self._poked.set()

    def post_stored(self, post: Post) -> None:
        """The blackboard's listener: every post stored, local or from the mesh."""
        self.log.record("blackboard", post_json(post))
        self._fan_out()

    def refresh(self) -> list[Event]:
        """Diff the status now; returns the events it appended."""
        events = self.log.observe_status(self._status())
        if events:
            self._fan_out()
        return events

    def _status(self) -> dict[str, Any]:
        self._diffing = True
        try:
            return self.status()
        finally:
            self._diffing = False

    def _on_log_line(self, line: dict[str, Any]) -> None:
        self.log.record("log", line)
        self._fan_out()
        if not self._diffing:
            self.poke()

    def _fan_out(self) -> None:
        for sub in list(self._streams):
            sub._wake()

    def _closed(self, sub: Subscription) -> None:
        self._streams.discard(sub)
        if not self._streams:
            self._watched = trio.Event()

    # -- running ----------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the log lines (from the root logger) and diff while watched, until cancelled."""
        root = logging.getLogger()
        self.logs.bind()
        root.addHandler(self.logs)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._diff_while_watched)
                nursery.start_soon(self._watch_models)
                if self.sample is not None:
                    nursery.start_soon(self._sample_while_watched, self.sample)
                task_status.started()
        finally:
            root.removeHandler(self.logs)

    async def _diff_while_watched(self) -> None:
        while True:
            if not self._streams:
                await self._watched.wait()
                continue
            with trio.move_on_after(self.safety_poll_s):
                await self._poked.wait()
            self._poked = trio.Event()
            if self._streams:
                self.refresh()
            await trio.sleep(DIFF_GAP_S)

    async def _sample_while_watched(self, sample: Callable[[], Awaitable[object]]) -> None:
        while True:
            if not self._streams:
                await self._watched.wait()
                continue
            await sample()
            await trio.sleep(SAMPLE_EVERY_S)

    async def _watch_models(self) -> None:
        """While watched, poke on any llama-server's change of state (the set of servers is looked at again at
        least every SAFETY_POLL_S, so a model started since is watched too)."""
        while True:
            if not self._streams:
                await self._watched.wait()
                continue
            changed = trio.Event()
            async with trio.open_nursery() as nursery:
                for server in list(self.servers.values()):
                    nursery.start_soon(_state_change, server, changed, nursery.cancel_scope)
                await trio.sleep(self.safety_poll_s)
                nursery.cancel_scope.cancel()
            if changed.is_set():  # a server changed (not the periodic look at the set)
                self.poke()


async def _state_change(server: LlamaServer, changed: trio.Event, done: trio.CancelScope) -> None:
    state = server.state
    await server.wait_state(*(s for s in BackendState if s is not state))
    changed.set()
    done.cancel()
