"""The node's side of `/api/events` (app/console_events.py), without HTTP: what pokes a diff, that nothing is diffed
while no stream is open, history kept meanwhile, log lines from any thread, the cut of a stream that fell behind.
Timing runs on trio's autojump clock: no test waits in real time."""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import trio
import trio.testing

from meshp2p.app.console_events import (
    DIFF_GAP_S,
    LOG_LINES,
    MAX_LOG_MESSAGE_CHARS,
    SAFETY_POLL_S,
    SAMPLE_EVERY_S,
    ConsoleEvents,
)
from meshp2p.inference.llama_server import BackendState
from meshp2p.wire.console_events import MAX_BACKLOG

#: Under pytest the root logger stops INFO; `meshp2p up` sets it to INFO, and so does this logger.
LOG = logging.getLogger("meshp2p.test.console_events")
LOG.setLevel(logging.INFO)


class Node:
    """A status document that changes when the test says, counting how often it was built."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"node": {"role": "client", "api_keys": False}, "mesh": None, "splits": [],
                                    "rpc_worker": None, "models": []}
        self.builds = 0

    def status(self) -> dict[str, Any]:
        self.builds += 1
        return copy.deepcopy(self.doc)


class FakeServer:
    """What the watcher reads of a llama-server: its state, and a wait for another."""

    def __init__(self) -> None:
        self.state = BackendState.LOADING
        self._changed = trio.Event()

    def set(self, state: BackendState) -> None:
        self.state = state
        self._changed.set()
        self._changed = trio.Event()

    async def wait_state(self, *states: BackendState) -> BackendState:
        while self.state not in states:
            await self._changed.wait()
        return self.state


async def test_no_status_work_while_no_stream_is_open(autojump_clock: trio.testing.MockClock) -> None:
    node = Node()
    events = ConsoleEvents(node.status, boot="00000001")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        LOG.info("pokes nobody")
        await trio.sleep(10 * SAFETY_POLL_S)
        assert node.builds == 0
        sub = events.subscribe(None)
        assert [e.type for e in sub.first] == ["node", "view", "demand", "models", "splits"]
        await trio.sleep(3.5 * SAFETY_POLL_S)
        assert 3 <= node.builds <= 5  # the safety net, about once every SAFETY_POLL_S
        sub.close()
        built = node.builds
        await trio.sleep(10 * SAFETY_POLL_S)
        assert node.builds <= built + 1  # a diff already under way when it closed, at most
        nursery.cancel_scope.cancel()


async def test_a_logged_change_is_diffed_at_once(autojump_clock: trio.testing.MockClock) -> None:
    node = Node()
    events = ConsoleEvents(node.status, boot="00000002")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        sub = events.subscribe(None)
        await trio.sleep(SAFETY_POLL_S / 2)  # mid-way between two safety-net diffs
        node.doc["node"]["role"] = "host"
        start = trio.current_time()
        LOG.info("started serving tiny")
        got = await sub.next_events()
        assert [e.type for e in got] == ["log"]
        got = await sub.next_events()
        assert [(e.type, json.loads(e.data)["role"]) for e in got] == [("node", "host")]
        assert trio.current_time() - start <= 2 * DIFF_GAP_S
        nursery.cancel_scope.cancel()


async def test_a_model_changing_state_is_diffed_at_once(autojump_clock: trio.testing.MockClock) -> None:
    node = Node()
    server = FakeServer()
    events = ConsoleEvents(node.status, boot="00000003", servers={"tiny": server})  # type: ignore[dict-item]
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        sub = events.subscribe(None)
        await trio.sleep(SAFETY_POLL_S / 2)
        node.doc["models"] = [{"id": "tiny", "state": "ready"}]
        start = trio.current_time()
        server.set(BackendState.READY)
        got = await sub.next_events()
        assert [e.type for e in got] == ["models"]
        assert trio.current_time() - start <= 2 * DIFF_GAP_S
        nursery.cancel_scope.cancel()


async def test_history_is_kept_while_nobody_watches_and_replayed(autojump_clock: trio.testing.MockClock) -> None:
    node = Node()
    events = ConsoleEvents(node.status, boot="00000004")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        sub = events.subscribe(None)
        last = sub.first[-1].id
        sub.close()
        LOG.warning("while away")
        node.doc["node"]["api_keys"] = True  # diffed only when someone comes back
        await trio.sleep(5 * SAFETY_POLL_S)
        back = events.subscribe(last)
        assert [e.type for e in back.first] == ["log", "node"]
        assert json.loads(back.first[0].data)["message"] == "while away"
        assert events.recent_logs(1)[0]["message"] == "while away"
        nursery.cancel_scope.cancel()


async def test_log_lines_from_other_threads_reach_the_loop() -> None:
    events = ConsoleEvents(Node().status, boot="00000005")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        sub = events.subscribe(None)
        await trio.to_thread.run_sync(lambda: LOG.error("from a worker thread"))
        with trio.fail_after(5):
            got = await sub.next_events()
        assert json.loads(got[0].data)["level"] == "ERROR"
        LOG.debug("below INFO: not kept")
        assert [line["message"] for line in events.recent_logs(LOG_LINES)] == ["from a worker thread"]
        nursery.cancel_scope.cancel()
    assert events.logs not in logging.getLogger().handlers


async def test_a_stream_that_falls_behind_is_cut_and_resumes(autojump_clock: trio.testing.MockClock) -> None:
    events = ConsoleEvents(Node().status, boot="00000006")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        sub = events.subscribe(None)
        cancelled = []
        sub.on_cut(lambda: cancelled.append(True))
        for i in range(MAX_BACKLOG + 1):  # a burst faster than the stream can send
            LOG.info("line %d", i)
        assert sub.cut and cancelled == [True] and await sub.next_events() == []
        assert events.streams == 0  # its slot is free at once
        back = events.subscribe(sub.first[-1].id)
        assert [json.loads(e.data)["message"] for e in back.first] == [f"line {i}" for i in range(MAX_BACKLOG + 1)]
        back.close()
        nursery.cancel_scope.cancel()


async def test_a_line_logged_while_the_status_is_built_pokes_no_other_diff(
        autojump_clock: trio.testing.MockClock) -> None:
    node = Node()

    def complaining() -> dict[str, Any]:
        LOG.error("cannot stat the API keys file")  # what KeysFile.current() says of an unreadable file
        return node.status()

    events = ConsoleEvents(complaining, boot="00000007")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        sub = events.subscribe(None)
        await trio.sleep(5 * SAFETY_POLL_S)
        assert node.builds <= 7  # the subscribe, then the safety net once every SAFETY_POLL_S: no storm
        assert len(events.recent_logs(LOG_LINES)) == node.builds
        sub.close()
        nursery.cancel_scope.cancel()


async def test_a_huge_log_message_is_cut() -> None:
    events = ConsoleEvents(Node().status, boot="00000008")
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        LOG.info("%s", "x" * (MAX_LOG_MESSAGE_CHARS * 3))
        assert events.recent_logs(1)[0]["message"] == "x" * MAX_LOG_MESSAGE_CHARS + "…"
        nursery.cancel_scope.cancel()


async def test_hardware_is_sampled_only_while_a_stream_is_open_and_followed_live(autojump_clock: Any) -> None:
    """The sampler runs while a console watches (every SAMPLE_EVERY_S) and a changed reading is a `hardware`
    event; with no stream open it is never called. The hardware part is in no snapshot."""
    readings = [0]
    document: dict[str, Any] = {"node": {"role": "host"}, "mesh": None, "splits": [], "rpc_worker": None,
                                "models": [], "hardware": {"cpu_percent": 0}}

    async def sample() -> object:
        readings[0] += 1
        document["hardware"] = {"cpu_percent": readings[0]}
        return document["hardware"]

    events = ConsoleEvents(lambda: document, boot="0a0b0c0d", sample=sample)
    async with trio.open_nursery() as nursery:
        await nursery.start(events.run)
        await trio.sleep(10 * SAMPLE_EVERY_S)
        assert readings[0] == 0, "no console open: no sampling"
        stream = events.subscribe(None)
        assert "hardware" not in [e.type for e in stream.first]
        got: list[Any] = []
        with trio.move_on_after(3 * SAMPLE_EVERY_S):
            while len(got) < 2:
                got += [e for e in await stream.next_events() if e.type == "hardware"]
        assert len(got) >= 2 and readings[0] >= 2
        stream.close()
        sampled = readings[0]
        await trio.sleep(10 * SAMPLE_EVERY_S)
        assert readings[0] <= sampled + 1, "the last stream closed: sampling stops"
        nursery.cancel_scope.cancel()
