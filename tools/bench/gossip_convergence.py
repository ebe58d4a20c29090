#!/usr/bin/env python3
"""Gossip convergence: how long a status change takes to reach every member's MeshView, for 20 and 50 nodes.

Processes: this process (the coordinator) runs a DHT-only bootstrap node (what `meshp2p bootstrap` runs) and
nothing else; the members live in --procs worker processes (default 5) started from this file (`--worker`),
member i in worker i % procs, so at N=50 each holds 10 and the cores' load can be told from lost messages.
The coordinator drives the workers over their stdin/stdout, one JSON line per request and one per reply. They
are stopped by PID when the run ends, fails or is interrupted (SIGINT: their nodes close their swarms; then
SIGTERM, then SIGKILL), and a worker whose stdin closes (the coordinator died) stops too. `--procs 1` puts every
member in one worker: the old all-in-one mode, less the bootstrap node (dropped as a mode of its own).

Setup: each member is an `Overlay` (a DHT server, as `meshp2p up` makes every node) with a real `MeshService`
of one named mesh, joining the way `meshp2p up --mesh-name X --bootstrap B` does: member 0 finds no listing
and creates the mesh; then the workers join their members at the same time, each one after another
(--join-batch): dial the bootstrap node (+ routing-table refresh), look the listing up in the DHT, dial the
addresses it lists (+ another refresh), run the join handshake. The one mesh grows through --sizes (20, then 30
more for 50) and is measured at each. Topology that results (printed): every member ends up connected to ~every
other, through its DHT lookups and py-libp2p's auto-connector (which dials every peer in the peerstore while
below 100 connections); gossipsub builds its mesh for the status topic (degree GOSSIP_DEGREE,
GOSSIP_DEGREE_LOW..GOSSIP_DEGREE_HIGH in meshp2p/p2p/overlay.py) over those connections. Before the trials the
coordinator waits until every member has GOSSIP_DEGREE_LOW mesh peers, lets the joins' backlog drain (idle
windows until the CPU is down to ~0.5 % of a core per member), waits until every member's view holds all N
members (with `quiet` a status goes out once at start, before the member has mesh peers, so the members some
view lacks announce again, two at a time: a "roll call"), and lets that drain too.

Each trial: one member (a different one each time) changes its status (a new model in `loaded`, as when a
model finishes loading) and calls `MeshService.announce_now()`, the real path: heartbeat task ->
`encode_gossip` -> `overlay.publish` -> gossipsub -> each receiver's validator (decode + signature check) ->
`_receive` -> `MeshView.update` (a MeshView subclass timestamps the update). Measured per receiving member:
announce_now() -> its MeshView holds the new status, both ends timed with `time.monotonic()`: CLOCK_MONOTONIC,
one clock for every process of a Linux machine, so the publisher's process takes the send time and each
receiver's process its receipt time. Repeated --trials times per N; reported: p50/p99/max over all receipts
(a receipt later than --timeout counts as missed), the time until the last member had it (per trial), and, per
status change, the copies pubsub sent and the CPU all processes spent beyond their idle rate (per member: what
each node of a real mesh would spend); copies the validators refused; and per process its CPU share of a core
and the share it was runnable but waited for a core (Linux schedstat): a process short of CPU waits (load), an
idle one does not, so misses while the processes sit idle would be losses.

Runtime: joins dominate (each member dials ~every other member, plus two routing-table refreshes and a
listing lookup); at N=50 a status change costs ~0.5-0.7 s of CPU in all (~300 copies plus gossipsub's lazy
repair). On the 2-core machine shared with other runs the default run takes 4-5.5 min (joins 20-45 s for 20
members, 100-130 s for 30 more); `--sizes 20` takes ~1 min.

Background (--background): N nodes share two cores, so background work that each node of a real mesh does on
its own machine lands here N times over. `quiet` (default) stretches, to an hour, the module constants that
pace it, in every worker: meshp2p.mesh.view STATUS_INTERVAL_S (status is then sent once at start and on
`announce_now`, which the trials and the roll call use), DEMAND_INTERVAL_S, RTT_INTERVAL_S (every member pings
every other: N^2 pings), LISTING_REFRESH_S and HEAL_SPLIT_S (every member's listing lookup, ~30 KAD RPCs each),
meshp2p.mesh.view PEER_TIMEOUT_S (without keepalives every view would drop every member after it) and
meshp2p.p2p.overlay DHT_REFRESH_S, and members other than the creator skip `MeshRecords.run` (their own DHT
records: ~150 KAD RPCs each at start, no part of the gossip path; the creator's listing is what joiners need).
`real` keeps them all: 20 s status keepalives of every member (each checked by every member, ~D copies each),
demand messages while there is demand, listing lookups, RTT probes: the load a real mesh carries (with 3 s
keepalives it was ~6 % of a core per member at N=20, so `real` was run with --sizes 20 at most). The
printed idle share says how loaded the processes are. Nothing on the measured path is changed either way.

Target: p99 <= 1 s.

usage: /work/venv/bin/python tools/bench/gossip_convergence.py [--sizes 20,50] [--procs 5] [--trials 15]
       [--background quiet|real] [--join-batch 1] [--timeout 5] [--seed N] [-v]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from meshp2p import __version__
from meshp2p.app.mesh_records import MeshRecords
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import overlay as overlay_module
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.status import StatusBody

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overlay_common import close_all, close_swarm, ms, percentile, quiet_logging, stop_processes  # a sibling module

TARGET_P99_S = 1.0
QUIET_S = 3600.0
#: Module constants pacing background work, stretched to QUIET_S by `--background quiet` (see the docstring).
QUIET_KNOBS = {
    "meshp2p.app.mesh_rtt": ("RTT_INTERVAL_S",),
    "meshp2p.mesh.records": ("LISTING_REFRESH_S", "HEAL_SPLIT_S"),
    "meshp2p.mesh.cadence": ("DEMAND_INTERVAL_S",),
    "meshp2p.mesh.view": ("STATUS_INTERVAL_S", "PEER_TIMEOUT_S"),
    "meshp2p.p2p.overlay": ("DHT_REFRESH_S",),
}
JOIN_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
MESH_FORM_TIMEOUT_S = 15.0
VIEWS_FULL_TIMEOUT_S = 90.0
POLL_S = 0.5
#: Members some view lacks announce again, this many at a time, each batch waited for up to ROLL_CALL_S (at N=50
#: one status change costs ~1 s of CPU in all: copies plus gossipsub's IHAVE gossip to non-mesh peers).
ROLL_CALL_BATCH = 2
ROLL_CALL_S = 5.0
#: gossipsub's degree_low in Overlay: the mesh is "formed" when every member has this many mesh peers (or N-1).
MESH_DEGREE_LOW = overlay_module.GOSSIP_DEGREE_LOW
MARKER_PREFIX = "bench-model-"
IDLE_WINDOW_S = 3.0
#: Before the trials: idle windows until the processes' CPU together is under SETTLED_SHARE_PER_MEMBER of a core
#: per member (quiet, drained: ~0.3 % each, gossipsub's 1 s heartbeat; `real`: until it no longer falls below
#: SETTLED_FALL of the window before), for at most SETTLE_TIMEOUT_S.
SETTLED_SHARE_PER_MEMBER = 0.005
SETTLED_FALL = 0.8
SETTLE_TIMEOUT_S = 45.0
#: A worker answers a trial request at most --timeout after it arrived; this covers the pipe and a busy loop.
REPLY_MARGIN_S = 10.0


def stretch_background() -> list[str]:
    """Set every QUIET_KNOBS constant to QUIET_S; fails loudly if one was renamed (the bench must follow)."""
    changed = []
    for module_name, names in QUIET_KNOBS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if not hasattr(module, name):
                raise SystemExit(f"{module_name}.{name} no longer exists: update QUIET_KNOBS in {__file__}")
            setattr(module, name, QUIET_S)
            changed.append(f"{module_name.rsplit('.', 1)[-1]}.{name}")
    return changed


class LineReader:
    """JSON lines from a byte stream (a worker's stdin, or its stdout seen from the coordinator)."""

    def __init__(self, stream: trio.lowlevel.FdStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None at end of stream."""
        while b"\n" not in self._buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        return message


def encode_line(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


#: A process's use of the machine over a window: CPU seconds, seconds it was runnable but waited for a core (a
#: busy machine: load), and the window's wall seconds. Shares of a core are cpu/wall and wait/wall.
Usage = dict[str, float]


@dataclass(frozen=True)
class UsageMark:
    """This process's CPU time and run-queue wait at one moment (the wait from Linux's per-thread schedstat)."""

    cpu_s: float
    wait_s: float
    at: float

    @classmethod
    def now(cls) -> UsageMark:
        wait_ns = 0
        for path in Path("/proc/self/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                wait_ns += int(path.read_text().split()[1])
        return cls(time.process_time(), wait_ns / 1e9, time.monotonic())

    def since(self) -> Usage:
        end = UsageMark.now()
        return {"cpu": end.cpu_s - self.cpu_s, "wait": end.wait_s - self.wait_s, "wall": end.at - self.at}


# -- worker process: some of the members ---------------------------------------------------------------------


class Receipts:
    """When each member of this process first held each marker model in its view, by `time.monotonic()`
    (CLOCK_MONOTONIC: one clock for every process of the machine, so the coordinator can subtract the
    publisher's send time, taken in another process); wakes the trial when every expected member has it."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[int, float]] = {}
        self._waiting: tuple[str, set[int], trio.Event] | None = None

    def expect(self, marker: str, members: set[int]) -> trio.Event:
        """An event set once every one of `members` holds `marker` (a copy may have come before the request)."""
        self._waiting = (marker, members, trio.Event())
        self._check()
        return self._waiting[2]

    def record(self, marker: str, member: int) -> None:
        got = self.seen.setdefault(marker, {})
        if member not in got:
            got[member] = time.monotonic()
            self._check()

    def _check(self) -> None:
        if self._waiting is not None:
            marker, members, done = self._waiting
            if members <= self.seen.get(marker, {}).keys():
                done.set()


class TimedView(MeshView):
    """A MeshView that reports the first time it holds a status carrying a bench marker model."""

    def __init__(self, mesh_id: bytes, self_id: str, receipts: Receipts, index: int) -> None:
        super().__init__(mesh_id, self_id)
        self._receipts = receipts
        self._index = index

    def update(self, peer_id: str, status: StatusBody, now: float) -> bool:
        is_new = super().update(peer_id, status, now)
        if peer_id != self.self_id:
            for model in status.loaded:
                if model.startswith(MARKER_PREFIX):
                    self._receipts.record(model, self._index)
        return is_new


class QuietMeshService(MeshService):
    """`--background quiet`: only the creator keeps DHT records (the listing joiners need); the others skip
    `MeshRecords.run` (node record, provider records, listing writes and a listing lookup at start and every few
    seconds: ~150 KAD RPCs per member at start, ~10 ms of CPU each here), which is no part of the gossip path."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        keep_records = self.records.run

        async def creator_only(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            if self.created:
                await keep_records(task_status=task_status)
            else:
                task_status.started()
                await trio.sleep_forever()

        self.records.run = creator_only  # type: ignore[method-assign]


class CountingOverlay(Overlay):
    """An Overlay that counts its mesh-listing writes (who believed it was the listing's writer)."""

    def __init__(self, identity: Identity, config: OverlayConfig) -> None:
        super().__init__(identity, config)
        self.listing_puts = 0
        self.listing_stored = trio.Event()

    async def put_record(self, key: str, value: bytes) -> bool:
        stored = await super().put_record(key, value)
        if key.startswith("/meshp2p/mesh/"):
            self.listing_puts += 1
            self.listing_stored.set()
        return stored


@dataclass
class StatusSource:
    """What a member's MeshService gossips about it; the trials change `status`."""

    status: StatusBody

    def __call__(self) -> StatusBody:
        return self.status


@dataclass
class Member:
    overlay: CountingOverlay
    service: MeshService
    source: StatusSource

    def degree(self) -> int:
        """Gossipsub mesh peers on the status topic: the peers this member forwards status to."""
        return len(self.overlay.gossipsub.mesh.get(self.service.status_topic, ()))


def base_status() -> StatusBody:
    return StatusBody(role="host", ram_mb=16384, vram_mb=0, gpu=None, loaded=("gemma-3-270m",),
                      available=("gemma-3-270m",), load=0.0, api_port=9337, version=__version__, region=None,
                      rtt_ms={})


class Worker:
    """The members of one worker process, driven by the coordinator: each request (a JSON line on stdin, `op`
    naming an `op_` method) gets one JSON line back on the protocol pipe, in order."""

    def __init__(self, args: argparse.Namespace, nursery: trio.Nursery, services: trio.Nursery) -> None:
        self.args = args
        self.settings = MeshSettings(mesh_id=named_mesh_id(args.mesh_name), secret=b"", name=args.mesh_name,
                                     publish=True, role="host")
        self.nursery = nursery
        self.services = services
        self.members: dict[int, Member] = {}
        self.receipts = Receipts()
        self.roster: list[str] = []
        self.stopping = False
        #: The marker of the trial in flight and what this process spent on it (see op_tally).
        self.marker = ""
        self.copies = self.ihave = self.iwant = 0
        self.trial_start = UsageMark.now()
        self.trial_rejects: Counter[str] = Counter()

    async def serve(self, requests: LineReader, replies: trio.lowlevel.FdStream) -> None:
        """Answer requests until stdin closes (the coordinator stopped us, or died)."""
        while (request := await requests.next()) is not None:
            handler = getattr(self, f"op_{request.pop('op')}")
            reply: dict[str, Any] = await handler(**request)
            await replies.send_all(encode_line(reply))

    async def op_join(self, indices: list[int]) -> dict[str, Any]:
        """Start these members, --join-batch at a time, each the way `meshp2p up --mesh-name X --bootstrap B`
        does (member 0 finds no listing and creates the mesh)."""
        splits: list[int] = []
        for start in range(0, len(indices), self.args.join_batch):
            async with trio.open_nursery() as batch:
                for index in indices[start:start + self.args.join_batch]:
                    batch.start_soon(self._join_one, index, splits)
        return {"peers": [[i, str(self.members[i].overlay.peer_id)] for i in indices], "splits": splits}

    async def _join_one(self, index: int, splits: list[int]) -> None:
        overlay = CountingOverlay(Identity.generate(),
                                  OverlayConfig(bootstrap=(self.args.bootstrap,), dht_server=True))
        source = StatusSource(base_status())
        service_class = QuietMeshService if self.args.background == "quiet" else MeshService
        service = service_class(overlay, self.settings, source,
                                view=TimedView(self.settings.mesh_id, str(overlay.peer_id), self.receipts, index))
        self._count_marker_copies(overlay)
        await self.nursery.start(overlay.run)
        await self.services.start(service.run)
        if index == 0:  # joiners need the creator's listing in the DHT
            await overlay.listing_stored.wait()
        elif service.created:
            splits.append(index)
        self.members[index] = Member(overlay, service, source)

    def _count_marker_copies(self, overlay: Overlay) -> None:
        """Count the copies of the trial's status message this node's pubsub sends (publish + forwards), and the
        IHAVE / IWANT entries (gossipsub's lazy repair for peers outside the mesh)."""
        write = overlay.pubsub.write_msg

        async def counting_write(stream: Any, rpc: Any) -> bool:
            for msg in rpc.publish:
                if self.marker and self.marker.encode() in msg.data:
                    self.copies += 1
            self.ihave += len(rpc.control.ihave)
            self.iwant += len(rpc.control.iwant)
            ok: bool = await write(stream, rpc)
            return ok

        overlay.pubsub.write_msg = counting_write  # type: ignore[method-assign,assignment]

    async def op_roster(self, peers: list[str]) -> dict[str, Any]:
        """Every member's peer id, by index: what `op_stats` checks each view against."""
        self.roster = peers
        return {}

    async def op_stats(self) -> dict[str, Any]:
        members = []
        for index, m in sorted(self.members.items()):
            held = m.service.view.peers
            members.append({
                "index": index, "peer_id": str(m.overlay.peer_id),
                "connections": len(m.overlay.connected_peers()),
                "mesh": [str(p) for p in m.overlay.gossipsub.mesh.get(m.service.status_topic, ())],
                "partners": len(m.service.membership.members), "listing_puts": m.overlay.listing_puts,
                "unseen": [i for i, peer in enumerate(self.roster) if peer not in held],
            })
        return {"members": members}

    async def op_announce(self, indices: list[int]) -> dict[str, Any]:
        for index in indices:
            if index in self.members:
                self.members[index].service.announce_now()
        return {}

    async def op_idle(self, seconds: float) -> dict[str, Any]:
        start = UsageMark.now()
        await trio.sleep(seconds)  # a measurement window, not a wait for anything
        return start.since()

    async def op_trial(self, marker: str, publisher: int, wait_s: float) -> dict[str, Any]:
        """The publisher (if it lives here) changes its status and announces it; every other member here is
        waited for, up to `wait_s`. Times are `time.monotonic()`, comparable across the processes."""
        self.marker, self.copies, self.ihave, self.iwant = marker, 0, 0, 0
        self.trial_start, self.trial_rejects = UsageMark.now(), self.rejects()
        receivers = set(self.members) - {publisher}
        done = self.receipts.expect(marker, receivers)
        sent = None
        if publisher in self.members:
            member = self.members[publisher]
            member.source.status = dataclasses.replace(base_status(), loaded=(*base_status().loaded, marker))
            sent = time.monotonic()
            member.service.announce_now()
        with trio.move_on_after(wait_s):
            await done.wait()
        got = self.receipts.seen.get(marker, {})
        return {"sent": sent, "receipts": [[i, got[i]] for i in sorted(receivers) if i in got],
                "missed": [[i, self.members[i].degree()] for i in sorted(receivers) if i not in got]}

    async def op_tally(self) -> dict[str, Any]:
        """What this process spent since the trial request (CPU, run-queue wait), the copies its members sent,
        their IHAVE/IWANT entries, and what their validators refused (a refused copy is a lost one)."""
        self.marker = ""
        return {"usage": self.trial_start.since(), "copies": self.copies, "ihave": self.ihave, "iwant": self.iwant,
                "rejects": self.rejects() - self.trial_rejects}

    def rejects(self) -> Counter[str]:
        return sum((m.overlay.rejects.counts for m in self.members.values()), Counter())


async def serve_worker(args: argparse.Namespace, replies_fd: int) -> None:
    """Run one worker until stdin closes or SIGINT/SIGTERM, then close every member's swarm (peers see the
    sockets go, as when a real node exits)."""
    worker: Worker | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                async with trio.open_nursery() as services:
                    worker = Worker(args, nursery, services)
                    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin, \
                            trio.lowlevel.FdStream(replies_fd) as replies, trio.open_nursery() as control:

                        async def until_signal() -> None:
                            async for _ in signals:
                                break
                            control.cancel_scope.cancel()

                        async def until_stdin_closes() -> None:
                            await worker.serve(LineReader(stdin), replies)
                            control.cancel_scope.cancel()

                        control.start_soon(until_signal)
                        control.start_soon(until_stdin_closes)
                    worker.stopping = True
                    services.cancel_scope.cancel()  # no more DHT calls from MeshService while the swarms close
                await close_all([m.overlay for m in worker.members.values()])
                nursery.cancel_scope.cancel()
        except* OSError:
            if worker is None or not worker.stopping:
                raise
            # py-libp2p race: a node's background task reads its listener's address just after it was closed


# -- coordinator ---------------------------------------------------------------------------------------------


class WorkerLink:
    """The coordinator's end of one worker process: requests down its stdin, replies up its stdout."""

    def __init__(self, number: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.number = number
        self.proc = proc
        self.replies = LineReader(trio.lowlevel.FdStream(os.dup(proc.stdout.fileno())))

    def send(self, op: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise SystemExit(f"worker {self.number} (pid {self.proc.pid}) exited with {self.proc.wait()}; "
                             "its error is above") from None

    async def receive(self, timeout_s: float) -> dict[str, Any]:
        with trio.fail_after(timeout_s):
            reply = await self.replies.next()
        if reply is None:
            raise SystemExit(f"worker {self.number} (pid {self.proc.pid}) exited with {self.proc.wait()}; "
                             "its error is above")
        return reply


def spawn_workers(args: argparse.Namespace, mesh_name: str, bootstrap: str,
                  procs: list[subprocess.Popen[str]]) -> list[WorkerLink]:
    """Start --procs worker processes from this file; each Popen goes into `procs` at once, so `main` stops it
    whatever happens next."""
    links = []
    for number in range(args.procs):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--mesh-name", mesh_name,
               "--bootstrap", bootstrap, "--background", args.background, "--join-batch", str(args.join_batch)]
        procs.append(subprocess.Popen(cmd + (["-v"] if args.verbose else []), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True))
        links.append(WorkerLink(number, procs[-1]))
    return links


async def ask_each(requests: Sequence[tuple[WorkerLink, dict[str, Any]]], op: str,
                   timeout_s: float) -> list[dict[str, Any]]:
    """Send every request first (so a trial starts in every process at once), then gather the replies. Shielded
    from the caller's cancellation (only `timeout_s` ends the wait): a reply left unread would be taken for the
    answer to the next request."""
    for link, fields in requests:
        link.send(op, **fields)
    replies: list[dict[str, Any]] = [{} for _ in requests]

    async def one(i: int, link: WorkerLink) -> None:
        replies[i] = await link.receive(timeout_s)

    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            for i, (link, _) in enumerate(requests):
                nursery.start_soon(one, i, link)
    return replies


async def ask_all(links: Sequence[WorkerLink], op: str, timeout_s: float = REQUEST_TIMEOUT_S,
                  **fields: Any) -> list[dict[str, Any]]:
    return await ask_each([(link, fields) for link in links], op, timeout_s)


@dataclass(frozen=True)
class MemberStats:
    """One member as its worker last reported it (see Worker.op_stats)."""

    index: int
    peer_id: str
    connections: int
    mesh: list[str]
    partners: int
    listing_puts: int
    unseen: list[int]


async def member_stats(links: Sequence[WorkerLink]) -> list[MemberStats]:
    replies = await ask_all(links, "stats")
    return sorted((MemberStats(**m) for reply in replies for m in reply["members"]), key=lambda m: m.index)


@dataclass
class SizeResult:
    size: int
    procs: int
    join_s: float
    mesh_form_s: float = 0.0
    views_full_s: float = 0.0
    roll_calls: int = 0
    receipts_s: list[float] = field(default_factory=list)
    last_member_s: list[float] = field(default_factory=list)
    missed: int = 0
    missed_by: Counter[str] = field(default_factory=Counter)
    cpu_per_change_s: list[float] = field(default_factory=list)
    copies: list[int] = field(default_factory=list)
    #: Per process (the coordinator first: it runs only the bootstrap node), share of a core.
    idle: list[Usage] = field(default_factory=list)
    trial_usage: list[list[Usage]] = field(default_factory=list)
    rejects: Counter[str] = field(default_factory=Counter)
    ihave: int = 0
    iwant: int = 0
    trials_s: float = 0.0
    shape_after_misses: str = ""


def topology(stats: Sequence[MemberStats], bootstrap: Overlay) -> str:
    conns = sorted(m.connections for m in stats)
    degree = sorted(len(m.mesh) for m in stats)
    joined = sorted(m.partners for m in stats)
    writers = sum(1 for m in stats if m.listing_puts)
    return (f"connections per member min/median/max {conns[0]}/{statistics.median(conns):.0f}/{conns[-1]} "
            f"(bootstrap node: {len(bootstrap.connected_peers())}); gossipsub mesh degree on the status topic "
            f"{degree[0]}/{statistics.median(degree):.0f}/{degree[-1]}; join-handshake partners "
            f"{joined[0]}/{statistics.median(joined):.0f}/{joined[-1]}; members that wrote the listing: {writers}\n"
            f"  {mesh_shape(stats)}")


def mesh_shape(stats: Sequence[MemberStats]) -> str:
    """Components of the gossipsub mesh graph, and links only one side holds (a node forwards only to the peers
    in its own mesh, so a component never hears another's status, and a one-way link carries one direction)."""
    index = {m.peer_id: i for i, m in enumerate(stats)}
    links = {i: {index[p] for p in m.mesh if p in index} for i, m in enumerate(stats)}
    one_way = sum(1 for i, peers in links.items() for j in peers if i not in links[j])
    parent = list(range(len(stats)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, peers in links.items():
        for j in peers:
            parent[root(i)] = root(j)
    sizes = sorted(Counter(root(i) for i in range(len(stats))).values(), reverse=True)
    return (f"gossipsub mesh graph: {len(sizes)} component(s) {sizes}; one-way links {one_way} of "
            f"{sum(len(p) for p in links.values())}")


async def grow(links: Sequence[WorkerLink], roster: list[str], size: int) -> list[int]:
    """Join members up to `size` (member i lives in worker i % --procs; the workers join theirs at the same
    time); returns the members that found no listing and created a mesh of their own (splits)."""
    if not roster:
        links[0].send("join", indices=[0])
        roster.append((await links[0].receive(JOIN_TIMEOUT_S))["peers"][0][1])
    new = range(len(roster), size)
    shares = [[i for i in new if i % len(links) == link.number] for link in links]
    replies = await ask_each([(link, {"indices": share}) for link, share in zip(links, shares, strict=True)],
                             "join", JOIN_TIMEOUT_S * max(1, *map(len, shares)))
    peers = dict(pair for reply in replies for pair in reply["peers"])
    roster += [peers[i] for i in new]
    await ask_all(links, "roster", peers=roster)
    return sorted(i for reply in replies for i in reply["splits"])


async def wait_mesh_formed(links: Sequence[WorkerLink], size: int) -> float:
    """Seconds until every member has MESH_DEGREE_LOW gossipsub mesh peers on the status topic (or N-1)."""
    started = time.monotonic()
    wanted = min(MESH_DEGREE_LOW, size - 1)
    with trio.move_on_after(MESH_FORM_TIMEOUT_S):
        # gossipsub grafts on its 1 s heartbeat and offers no event to wait on: poll the condition
        while any(len(m.mesh) < wanted for m in await member_stats(links)):  # noqa: ASYNC110
            await trio.sleep(POLL_S)
    return time.monotonic() - started


async def wait_views_full(links: Sequence[WorkerLink], result: SizeResult) -> list[MemberStats]:
    """Until every member's view holds all N members. With `quiet` background a member's status goes out once
    at start (often before its gossipsub mesh exists) and on announce_now, so the members some view lacks
    announce again (a roll call), ROLL_CALL_BATCH at a time, each batch waited for (up to ROLL_CALL_S): all of
    them at once would be a flood (at N=50 a status change costs ~0.4 s of CPU in all) that saturates the
    cores for a minute and, through gossipsub's IHAVE/IWANT repair, feeds itself. With `real` the 3 s
    keepalives fill the views."""
    started = time.monotonic()
    stats = await member_stats(links)
    with trio.move_on_after(VIEWS_FULL_TIMEOUT_S):
        while unseen := sorted({i for m in stats for i in m.unseen}):
            batch = set(unseen[:ROLL_CALL_BATCH])
            await ask_all(links, "announce", indices=sorted(batch))
            result.roll_calls += len(batch)
            with trio.move_on_after(ROLL_CALL_S):
                while batch & {i for m in stats for i in m.unseen}:
                    await trio.sleep(POLL_S)
                    stats = await member_stats(links)
            stats = await member_stats(links)
    result.views_full_s = time.monotonic() - started
    if unseen:
        print(f"  views still lack members {unseen} after {VIEWS_FULL_TIMEOUT_S:.0f} s; measuring anyway")
    return stats


async def wait_idle(links: Sequence[WorkerLink], size: int, background: str) -> tuple[list[float], list[Usage]]:
    """IDLE_WINDOW_S windows until what the joins and the roll call left (dials, grafts, gossip copies and
    IHAVE/IWANT repair still queued) has drained: with `quiet` until the processes' CPU together is under
    SETTLED_SHARE_PER_MEMBER of a core per member (or SETTLE_TIMEOUT_S passed: then it is not draining), with
    `real` until it stops
    falling (the keepalives are the background). Returns each window's CPU sum, and the last window's usage."""
    started = time.monotonic()
    usage = await measure_idle(links)
    sums = [cpu_sum(usage)]
    while time.monotonic() - started < SETTLE_TIMEOUT_S and sums[-1] >= SETTLED_SHARE_PER_MEMBER * size:
        usage = await measure_idle(links)
        sums.append(cpu_sum(usage))
        if background == "real" and sums[-1] > SETTLED_FALL * sums[-2]:
            break
    return sums, usage


async def measure_idle(links: Sequence[WorkerLink]) -> list[Usage]:
    """Each process's usage over IDLE_WINDOW_S with no status change in flight, this one first."""
    start = UsageMark.now()
    replies = await ask_all(links, "idle", seconds=IDLE_WINDOW_S)
    return [start.since(), *replies]


def cpu_sum(usages: Sequence[Usage]) -> float:
    """The processes' CPU together, in cores."""
    return sum(u["cpu"] / u["wall"] for u in usages)


async def trials(links: Sequence[WorkerLink], args: argparse.Namespace, rng: random.Random,
                 result: SizeResult) -> None:
    size = result.size
    started, own = time.monotonic(), UsageMark.now()
    order = list(range(size))
    rng.shuffle(order)
    result.trial_usage = [[] for _ in range(len(links))]
    for trial in range(args.trials):
        publisher = order[trial % size]
        marker = f"{MARKER_PREFIX}{size}-{trial}"
        replies = await ask_all(links, "trial", args.timeout + REPLY_MARGIN_S, marker=marker, publisher=publisher,
                                wait_s=args.timeout)
        tallies = await ask_all(links, "tally")
        sent = next(r["sent"] for r in replies if r["sent"] is not None)
        got = [at - sent for r in replies for _, at in r["receipts"]]
        missed = [(i, degree) for r in replies for i, degree in r["missed"]]
        for i, degree in missed:
            result.missed_by[f"member {i} (gossip mesh degree {degree})"] += 1
        result.missed += len(missed)
        result.receipts_s += got + [math.inf] * len(missed)
        result.last_member_s.append(max(got) if not missed else math.inf)
        for usages, tally in zip(result.trial_usage, tallies, strict=True):
            usages.append(tally["usage"])
        result.rejects += sum((Counter(t["rejects"]) for t in tallies), Counter())
        result.ihave += sum(t["ihave"] for t in tallies)
        result.iwant += sum(t["iwant"] for t in tallies)
        if not missed:  # copies still in flight after a miss would be counted short
            # the status change's own work: each process's CPU beyond its idle rate
            result.cpu_per_change_s.append(sum(
                max(0.0, t["usage"]["cpu"] - idle["cpu"] / idle["wall"] * t["usage"]["wall"])
                for t, idle in zip(tallies, result.idle[1:], strict=True)))
            result.copies.append(sum(t["copies"] for t in tallies))
    result.trials_s = time.monotonic() - started
    result.trial_usage.insert(0, [own.since()])
    if result.missed:
        result.shape_after_misses = f"after the trials: {mesh_shape(await member_stats(links))}"


async def coordinate(args: argparse.Namespace, procs: list[subprocess.Popen[str]]) -> list[SizeResult]:
    """One mesh over --procs worker processes, grown to each size in turn (20 members, then 30 more for 50)
    and measured at each; this process runs the bootstrap node and the control channel."""
    rng = random.Random(args.seed)
    mesh_name = f"bench-gossip-{rng.getrandbits(32):08x}"
    roster: list[str] = []
    results: list[SizeResult] = []
    links: list[WorkerLink] = []
    try:
        async with trio.open_nursery() as nursery:
            bootstrap = Overlay(Identity.generate(), OverlayConfig(dht_server=True))
            await nursery.start(bootstrap.run)
            try:
                links = spawn_workers(args, mesh_name, bootstrap.addrs()[0], procs)
                for size in args.sizes:
                    started = time.monotonic()
                    grown = size - len(roster)
                    splits = await grow(links, roster, size)
                    result = SizeResult(size, len(links), time.monotonic() - started)
                    result.mesh_form_s = await wait_mesh_formed(links, size)
                    # the joins' backlog first: a roll call into it is late, or refused as expired (> 30 s)
                    after_joins, _ = await wait_idle(links, size, args.background)
                    stats = await wait_views_full(links, result)
                    after_roll_call, result.idle = await wait_idle(links, size, args.background)
                    print(f"N={size}: {grown} members joined in {result.join_s:.1f} s ({len(links)} worker "
                          f"processes joining theirs at once, {args.join_batch} at a time each), gossip mesh "
                          f"formed in {result.mesh_form_s:.1f} s; once the joins had settled, every view held all "
                          f"{size} members {result.views_full_s:.1f} s later ({result.roll_calls} roll-call "
                          "announcement(s))"
                          + (f"; members {splits} found no listing and created a mesh of their own (split)"
                             if splits else ""))
                    print(f"  {topology(stats, bootstrap)}")
                    print(f"  settling, CPU of all processes per {IDLE_WINDOW_S:.0f} s window: after the joins "
                          f"{percents(after_joins)}, after the roll call {percents(after_roll_call)}; idle (no "
                          f"status change in flight), per process: {usage_line(result.idle)}")
                    await trials(links, args, rng, result)
                    report(result)
                    results.append(result)
                await trio.to_thread.run_sync(stop_processes, procs)  # their nodes close before the bootstrap's
            finally:
                for link in links:
                    await link.replies.stream.aclose()
                await close_swarm(bootstrap)
                nursery.cancel_scope.cancel()
    except* OSError as group:
        if len(results) < len(args.sizes):
            raise
        # py-libp2p race: a node's background task reads its listener's address just after it was closed
        print(f"(teardown: {group.exceptions[0]!r} from a stopping node; the results above are complete)")
    return results


def usage_line(usages: Sequence[Usage]) -> str:
    """CPU share of a core per process (the coordinator, which runs only the bootstrap node, first), with the
    share it waited for a core in brackets, then their sums: a process short of CPU waits; an idle one does not."""
    def share(key: str, u: Usage) -> str:
        return f"{u[key] / u['wall']:.0%}"

    workers = " ".join(f"{share('cpu', u)} ({share('wait', u)})" for u in usages[1:])
    waited = sum(u["wait"] / u["wall"] for u in usages)
    return (f"CPU (waited for a core) coordinator {share('cpu', usages[0])} ({share('wait', usages[0])}), workers "
            f"{workers}; sum {cpu_sum(usages):.0%} ({waited:.0%}) of {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.2f}")


def percents(shares: Sequence[float]) -> str:
    return " ".join(f"{share:.0%}" for share in shares)


def median_usage(windows: Sequence[Usage]) -> Usage:
    """The window of median CPU share (the trials' windows differ in length)."""
    return sorted(windows, key=lambda u: u["cpu"] / u["wall"])[len(windows) // 2]


def report(result: SizeResult) -> bool:
    r = result.receipts_s
    p99 = percentile(r, 0.99)
    met = p99 <= TARGET_P99_S
    print(f"  receipts ({len(r)}: {len(r) // max(1, result.size - 1)} trials x {result.size - 1} members): "
          f"p50 {ms(percentile(r, 0.5))}  p99 {ms(p99)}  max {ms(max(r))} ms; missed {result.missed}"
          + (f" ({', '.join(f'{who}: {n}' for who, n in result.missed_by.most_common(5))})" if result.missed else ""))
    last = result.last_member_s
    print(f"  last member of a trial: p50 {ms(percentile(last, 0.5))}  p99 {ms(percentile(last, 0.99))}  "
          f"max {ms(max(last))} ms")
    trial_usage = [median_usage(u) for u in result.trial_usage]
    print(f"  during the trials (median trial), per process: {usage_line(trial_usage)}")
    if result.rejects:
        print(f"  copies refused by the members' validators during the trials: {dict(result.rejects)}")
    print(f"  IHAVE/IWANT entries sent by all members during the trials: {result.ihave}/{result.iwant} in "
          f"{result.trials_s:.0f} s" + (f"; {result.shape_after_misses}" if result.shape_after_misses else ""))
    if result.copies:
        cpu, copies = statistics.median(result.cpu_per_change_s), statistics.median(result.copies)
        print(f"  per status change (median): {copies:.0f} copies sent by pubsub (publish + forwards) = "
              f"{copies / result.size:.1f} per member; {cpu * 1000:.0f} ms of CPU in all processes beyond their "
              f"idle rate = {cpu * 1000 / result.size:.1f} ms per member (what each node of a real mesh would spend)")
    print(f"  N={result.size}: p99 {ms(p99)} ms   target p99 <= {TARGET_P99_S * 1000:.0f} ms: "
          f"{'MET' if met else 'MISSED'}", flush=True)
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: sorted(int(x) for x in s.split(",")), default=[20, 50],
                        help="mesh sizes, comma separated (default 20,50): the mesh grows through them")
    parser.add_argument("--procs", type=int, default=5,
                        help="worker processes the members are spread over (default 5)")
    parser.add_argument("--trials", type=int, default=15, help="status changes per size (default 15)")
    parser.add_argument("--background", choices=("quiet", "real"), default="quiet",
                        help="background pacing (see above; default quiet)")
    parser.add_argument("--join-batch", type=int, default=1,
                        help="members each worker joins at the same time (default 1: one after another)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for every member per trial")
    parser.add_argument("--seed", type=int, default=None, help="seed for names and publisher order")
    parser.add_argument("-v", "--verbose", action="store_true", help="show libp2p warnings")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mesh-name", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.sizes) < 2 or args.procs < 1:
        parser.error("every size must be at least 2, --procs at least 1")
    quiet_logging(args.verbose)
    if not hasattr(MeshRecords, "run"):
        raise SystemExit(f"MeshRecords.run no longer exists: update QuietMeshService in {__file__}")
    stretched = stretch_background() if args.background == "quiet" else []
    if args.worker:
        replies_fd = os.dup(sys.stdout.fileno())
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt the replies
        # a SIGINT that came after the stop one (Ctrl-C reaches the whole process group, then the coordinator
        # sends its own) is redelivered as KeyboardInterrupt once the nodes are closed: nothing left to stop
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve_worker, args, replies_fd)
        return 0
    print(f"gossip_convergence: sizes {args.sizes} over {args.procs} worker process(es), {args.trials} trials each, "
          f"background {args.background}" + (f" ({', '.join(stretched)} = {QUIET_S:.0f} s)" if stretched else "")
          + f"; load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    started = time.monotonic()
    procs: list[subprocess.Popen[str]] = []
    interrupted = False
    try:
        trio.run(coordinate, args, procs)
    except* KeyboardInterrupt:
        interrupted = True
    finally:
        stop_processes(procs)
    if interrupted:
        print(f"interrupted after {time.monotonic() - started:.0f} s; worker processes stopped", file=sys.stderr)
        return 130
    print(f"ran {time.monotonic() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f} (other processes "
          "on the machine inflate every figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
