#!/usr/bin/env python3
"""Gossip convergence: how long a status change takes to reach every member's MeshView, for 20 and 50 nodes.

Setup, all in one trio run: a DHT-only bootstrap node (what `meshp2p bootstrap` runs), then members, each
an `Overlay` (a DHT server, as `meshp2p up` makes every node) with a real `MeshService`
of one named mesh, joining the way `meshp2p up --mesh-name X --bootstrap B` does: member 0 finds no listing
and creates the mesh; then, one after another (--join-batch), each member dials the bootstrap node
(+ routing-table refresh), looks the listing up in the DHT, dials the addresses it lists (+ another
refresh) and runs the join handshake. The one mesh grows through --sizes (20, then 30 more for 50) and is
measured at each. Topology that results (printed): every member ends up connected to every other, through
its DHT lookups and py-libp2p's auto-connector (which dials every peer in the peerstore while below 100
connections), and to the listing's writer; gossipsub builds its mesh for the status topic (degree
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW..GOSSIP_DEGREE_HIGH in meshp2p/p2p/overlay.py) over those connections.

Each trial: one member (a different one each time) changes its status (a new model in `loaded`, as when a
model finishes loading) and calls `MeshService.announce_now()`, the real path: heartbeat task ->
`encode_gossip` -> `overlay.publish` -> gossipsub -> each receiver's validator (decode + signature check) ->
`_receive` -> `MeshView.update`. Measured per receiving member: announce_now() -> its MeshView holds the
new status (a MeshView subclass timestamps the update; trio's clock, one process). Repeated --trials times
per N; reported: p50/p99/max over all receipts, the time until the last member had it (per trial), and,
per status change, the copies pubsub sent and the CPU the whole mesh spent (per member: what each node of
a real mesh would spend). In one process the wall-clock figures are an upper bound: every member's
handling of every copy runs on one core, one after another.

Runtime: joins dominate (each member dials ~every other member, plus two routing-table refreshes and a
listing lookup; ~3.5 s of CPU per join at N=30, all on one core), so growing to 50 takes 3.5-5 min on a
quiet 2-core machine and the whole default run 5-7 min, over the ~3 min budget of these benches; `--sizes 20`
takes ~1 min.

Background (--background): N nodes share this process's core, so background work that each node of a real
mesh does on its own machine lands here N times over. `quiet` (default) stretches, to an hour, the module
constants that pace it: meshp2p.mesh_service STATUS_INTERVAL_S (status is then sent once at start and on
`announce_now`, which the trials use), DEMAND_INTERVAL_S, RTT_INTERVAL_S (every member pings every other:
N^2 pings), LISTING_REFRESH_S and HEAL_SPLIT_S (every member's listing lookup, ~30 KAD RPCs each) and
meshp2p.p2p.overlay DHT_REFRESH_S, and members other than the creator skip `_keep_records` (their own DHT
records: ~150 KAD RPCs each at start, no part of the gossip path; the creator's listing is what joiners
need). `real` keeps them all: 3 s status keepalives of every member (each checked by every member, ~D copies
each), demand messages while there is demand, 30 s listing lookups, RTT probes: the load a real mesh carries,
which in one process cost ~4-5 % of a core per member before the idle-cost work (at N=8: 38 % for 9 nodes,
against 1 % in `quiet`; with 2 s keepalives, degree 6 and 5 s demand/listing loops), so by N ~10
the core is saturated, DHT lookups hit their 15 s timeout and joiners split off: use `real` with --sizes 8.
The printed idle share says how loaded the process is. Nothing on the measured path is changed either way.

Target: p99 <= 1 s.

usage: /work/venv/bin/python tools/bench/gossip_convergence.py [--sizes 20,50] [--trials 15]
       [--background quiet|real] [--join-batch 1] [--timeout 5] [--seed N] [-v]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import math
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from meshp2p import __version__
from meshp2p.mesh.view import MeshView
from meshp2p.mesh_service import MeshService, MeshSettings
from meshp2p.p2p import overlay as overlay_module
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.gossip import StatusBody
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id

TARGET_P99_S = 1.0
QUIET_S = 3600.0
#: Module constants pacing background work, stretched to QUIET_S by `--background quiet` (see the docstring).
QUIET_KNOBS = {
    "meshp2p.mesh_service": ("STATUS_INTERVAL_S", "DEMAND_INTERVAL_S", "RTT_INTERVAL_S", "LISTING_REFRESH_S",
                             "HEAL_SPLIT_S"),
    "meshp2p.p2p.overlay": ("DHT_REFRESH_S",),
}
JOIN_TIMEOUT_S = 60.0
MESH_FORM_TIMEOUT_S = 15.0
MESH_FORM_POLL_S = 0.1
#: gossipsub's degree_low in Overlay: the mesh is "formed" when every member has this many mesh peers (or N-1).
MESH_DEGREE_LOW = overlay_module.GOSSIP_DEGREE_LOW
CLOSE_TIMEOUT_S = 30.0
MARKER_PREFIX = "bench-model-"
IDLE_WINDOW_S = 3.0
SETTLE_S = 5.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least a fraction q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:.0f}"


def quiet_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING if verbose else logging.CRITICAL)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


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


class Receipts:
    """When each member's view first held each marker model; wakes the trial when all N-1 have it."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float]] = {}
        self._waiting: tuple[str, int, trio.Event] | None = None

    def expect(self, marker: str, count: int) -> trio.Event:
        self.seen[marker] = {}
        done = trio.Event()
        self._waiting = (marker, count, done)
        return done

    def record(self, marker: str, member: str) -> None:
        got = self.seen.setdefault(marker, {})
        if member not in got:
            got[member] = trio.current_time()
            if self._waiting is not None and self._waiting[0] == marker and len(got) >= self._waiting[1]:
                self._waiting[2].set()


class TimedView(MeshView):
    """A MeshView that reports the first time it holds a status carrying a bench marker model."""

    def __init__(self, mesh_id: bytes, self_id: str, receipts: Receipts) -> None:
        super().__init__(mesh_id, self_id)
        self._receipts = receipts

    def update(self, peer_id: str, status: StatusBody, now: float) -> bool:
        is_new = super().update(peer_id, status, now)
        if peer_id != self.self_id:
            for model in status.loaded:
                if model.startswith(MARKER_PREFIX):
                    self._receipts.record(model, self.self_id)
        return is_new


class QuietMeshService(MeshService):
    """`--background quiet`: only the creator keeps DHT records (the listing joiners need); the others skip
    `_keep_records` (node record, provider records, listing writes and a listing lookup at start and every few
    seconds: ~150 KAD RPCs per member at start, ~10 ms of CPU each here), which is no part of the gossip path."""

    async def _keep_records(self) -> None:
        if self.created:
            await super()._keep_records()
        else:
            await trio.sleep_forever()


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


@dataclass
class SizeResult:
    size: int
    join_s: float
    mesh_form_s: float
    receipts_s: list[float] = field(default_factory=list)
    last_member_s: list[float] = field(default_factory=list)
    missed: int = 0
    missed_by: Counter[str] = field(default_factory=Counter)
    cpu_per_change_s: list[float] = field(default_factory=list)
    idle_share: float = 0.0
    gossip_repair: str = ""
    copies: list[int] = field(default_factory=list)
    cpu_share: list[float] = field(default_factory=list)


def base_status() -> StatusBody:
    return StatusBody(role="host", ram_mb=16384, vram_mb=0, gpu=None, loaded=("gemma-3-270m",),
                      available=("gemma-3-270m",), load=0.0, api_port=9337, version=__version__, region=None,
                      rtt_ms={})


async def close_swarm(overlay: Overlay) -> None:
    """Close connections too, not only listeners, before cancelling `Overlay.run` (see overlay_discover.py)."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
        await overlay.host.get_network().close()


def topology(members: Sequence[Member], bootstrap: Overlay) -> str:
    conns = sorted(len(m.overlay.connected_peers()) for m in members)
    topic = members[0].service.status_topic
    degree = sorted(len(m.overlay.gossipsub.mesh.get(topic, ())) for m in members)
    joined = sorted(len(m.service.membership.members) for m in members)
    writers = sum(1 for m in members if m.overlay.listing_puts)
    return (f"connections per member min/median/max {conns[0]}/{statistics.median(conns):.0f}/{conns[-1]} "
            f"(bootstrap node: {len(bootstrap.connected_peers())}); gossipsub mesh degree on the status topic "
            f"{degree[0]}/{statistics.median(degree):.0f}/{degree[-1]}; join-handshake partners "
            f"{joined[0]}/{statistics.median(joined):.0f}/{joined[-1]}; members that wrote the listing: {writers}\n"
            f"  {mesh_shape(members)}")


def mesh_shape(members: Sequence[Member]) -> str:
    """Components of the gossipsub mesh graph, and links only one side holds (a node forwards only to the peers
    in its own mesh, so a component never hears another's status, and a one-way link carries one direction)."""
    topic = members[0].service.status_topic
    index = {m.overlay.peer_id: i for i, m in enumerate(members)}
    links = {i: {index[p] for p in m.overlay.gossipsub.mesh.get(topic, ()) if p in index}
             for i, m in enumerate(members)}
    one_way = sum(1 for i, peers in links.items() for j in peers if i not in links[j])
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, peers in links.items():
        for j in peers:
            parent[root(i)] = root(j)
    sizes = sorted(Counter(root(i) for i in range(len(members))).values(), reverse=True)
    return (f"gossipsub mesh graph: {len(sizes)} component(s) {sizes}; one-way links {one_way} of "
            f"{sum(len(p) for p in links.values())}")


async def add_members(nursery: trio.Nursery, services: trio.Nursery, members: list[Member], count: int,
                      ctx: MeshContext) -> None:
    """Join `count` more members, `--join-batch` at a time (each: overlay start, then MeshService start)."""

    async def join_one(index: int) -> None:
        overlay = CountingOverlay(Identity.generate(), OverlayConfig(bootstrap=ctx.boot_addr, dht_server=True))
        source = StatusSource(base_status())
        service_class = QuietMeshService if ctx.args.background == "quiet" else MeshService
        member = Member(overlay, service_class(overlay, ctx.settings, source), source)
        member.service.view = TimedView(ctx.settings.mesh_id, str(overlay.peer_id), ctx.receipts)
        count_marker_copies(overlay, ctx)
        await nursery.start(overlay.run)
        await services.start(member.service.run)
        if index == 0:  # joiners need the creator's listing in the DHT
            await overlay.listing_stored.wait()
        elif member.service.created:
            print(f"  member {index} found no listing and created a mesh of its own (split)")
        members.append(member)

    target = len(members) + count
    if not members:
        await join_one(0)
    while len(members) < target:
        async with trio.open_nursery() as batch:
            for index in range(len(members), min(target, len(members) + ctx.args.join_batch)):
                batch.start_soon(join_one, index)


def count_marker_copies(overlay: Overlay, ctx: MeshContext) -> None:
    """Count, per marker, the copies of the status message this node's pubsub sends (publish + forwards)."""
    write = overlay.pubsub.write_msg

    async def counting_write(stream: Any, rpc: Any) -> bool:
        for msg in rpc.publish:
            if ctx.marker and ctx.marker.encode() in msg.data:
                ctx.copies += 1
        ctx.ihave += len(rpc.control.ihave)
        ctx.iwant += len(rpc.control.iwant)
        ok: bool = await write(stream, rpc)
        return ok

    overlay.pubsub.write_msg = counting_write  # type: ignore[method-assign,assignment]


@dataclass
class MeshContext:
    args: argparse.Namespace
    settings: MeshSettings
    receipts: Receipts
    boot_addr: tuple[str, ...] = ()
    marker: str = ""
    copies: int = 0
    #: IHAVE / IWANT control entries sent by every member: gossipsub's lazy repair for peers outside the mesh.
    ihave: int = 0
    iwant: int = 0


async def wait_mesh_formed(members: Sequence[Member]) -> float:
    """Seconds until every member has MESH_DEGREE_LOW gossipsub mesh peers on the status topic (or N-1)."""
    started = trio.current_time()
    wanted = min(MESH_DEGREE_LOW, len(members) - 1)
    with trio.move_on_after(MESH_FORM_TIMEOUT_S):
        # gossipsub grafts on its 1 s heartbeat and offers no event to wait on: poll the condition
        while any(len(m.overlay.gossipsub.mesh.get(m.service.status_topic, ())) < wanted  # noqa: ASYNC110
                  for m in members):
            await trio.sleep(MESH_FORM_POLL_S)
    return trio.current_time() - started


async def trials(members: Sequence[Member], ctx: MeshContext, rng: random.Random, result: SizeResult) -> None:
    size = len(members)
    ctx.ihave = ctx.iwant = 0
    started = trio.current_time()
    order = list(range(size))
    rng.shuffle(order)
    for trial in range(ctx.args.trials):
        publisher = members[order[trial % size]]
        ctx.marker = f"{MARKER_PREFIX}{size}-{trial}"
        ctx.copies = 0
        done = ctx.receipts.expect(ctx.marker, size - 1)
        publisher.source.status = dataclasses.replace(base_status(), loaded=(*base_status().loaded, ctx.marker))
        cpu0 = time.process_time()
        sent = trio.current_time()
        publisher.service.announce_now()
        with trio.move_on_after(ctx.args.timeout):
            await done.wait()
        wall = trio.current_time() - sent
        cpu = time.process_time() - cpu0
        result.cpu_share.append(cpu / wall)
        cpu = max(0.0, cpu - result.idle_share * wall)  # the status change's own work, background taken out
        got = [at - sent for at in ctx.receipts.seen[ctx.marker].values()]
        missed = size - 1 - len(got)
        for m in members:
            if m is not publisher and str(m.overlay.peer_id) not in ctx.receipts.seen[ctx.marker]:
                degree = len(m.overlay.gossipsub.mesh.get(m.service.status_topic, ()))
                result.missed_by[f"member {members.index(m)} (gossip mesh degree {degree})"] += 1
        result.missed += missed
        result.receipts_s += got + [math.inf] * missed
        result.last_member_s.append(max(got) if not missed else math.inf)
        if not missed:  # copies still in flight after a miss would be counted short
            result.cpu_per_change_s.append(cpu)
            result.copies.append(ctx.copies)
    result.gossip_repair = (f"IHAVE/IWANT entries sent by all members during the trials: {ctx.ihave}/{ctx.iwant} "
                            f"in {trio.current_time() - started:.0f} s")
    if result.missed:
        result.gossip_repair += f"; after the trials: {mesh_shape(members)}"


async def run(args: argparse.Namespace) -> list[SizeResult]:
    """One mesh, grown to each size in turn (20 members, then 30 more for 50), measured at each size."""
    rng = random.Random(args.seed)
    name = f"bench-gossip-{rng.getrandbits(32):08x}"
    settings = MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name, publish=True, role="host")
    ctx = MeshContext(args, settings, Receipts())
    members: list[Member] = []
    results = []
    try:
        async with trio.open_nursery() as nursery:
            bootstrap = Overlay(Identity.generate(), OverlayConfig(dht_server=True))
            await nursery.start(bootstrap.run)
            ctx.boot_addr = (bootstrap.addrs()[0],)
            async with trio.open_nursery() as services:
                for size in args.sizes:
                    started = trio.current_time()
                    grow = size - len(members)
                    with trio.fail_after(JOIN_TIMEOUT_S * grow):
                        await add_members(nursery, services, members, grow, ctx)
                    join_s = trio.current_time() - started
                    result = SizeResult(size, join_s, await wait_mesh_formed(members))
                    print(f"N={size}: {grow} members joined in {join_s:.1f} s ({args.join_batch} at a time), "
                          f"gossip mesh formed in {result.mesh_form_s:.1f} s")
                    print(f"  {topology(members, bootstrap)}")
                    await trio.sleep(SETTLE_S)  # let the last joins' dials, identify and grafts finish
                    cpu0, t0 = time.process_time(), trio.current_time()
                    await trio.sleep(IDLE_WINDOW_S)  # a measurement window, not a wait for anything
                    result.idle_share = (time.process_time() - cpu0) / (trio.current_time() - t0)
                    print(f"  idle (no status change in flight): this process uses {result.idle_share:.0%} of a "
                          f"core for {size + 1} nodes")
                    await trials(members, ctx, rng, result)
                    report(result)
                    results.append(result)
                services.cancel_scope.cancel()  # no more DHT calls from MeshService while the swarms close
            overlays: list[Overlay] = [bootstrap, *(m.overlay for m in members)]
            async with trio.open_nursery() as closing:
                for overlay in overlays:
                    closing.start_soon(close_swarm, overlay)
            nursery.cancel_scope.cancel()
    except* OSError as group:
        if len(results) < len(args.sizes):
            raise
        # py-libp2p race: a node's background task reads its listener's address just after it was closed
        print(f"(teardown: {group.exceptions[0]!r} from a stopping node; the results above are complete)")
    return results


def report(result: SizeResult) -> bool:
    r = result.receipts_s
    p99 = percentile(r, 0.99)
    met = p99 <= TARGET_P99_S
    print(f"  receipts ({len(r)}: {len(r) // max(1, result.size - 1)} trials x {result.size - 1} members): "
          f"p50 {ms(percentile(r, 0.5))}  p99 {ms(p99)}  max {ms(max(r))} ms; missed {result.missed}"
          + (f" ({', '.join(f'{who}: {n}' for who, n in result.missed_by.most_common(5))})" if result.missed else ""))
    last = result.last_member_s
    print(f"  last member of a trial: p50 {ms(percentile(last, 0.5))}  p99 {ms(percentile(last, 0.99))}  "
          f"max {ms(max(last))} ms; process CPU during trials: median {statistics.median(result.cpu_share):.0%} "
          "of a core")
    print(f"  {result.gossip_repair}")
    if result.copies:
        cpu, copies = statistics.median(result.cpu_per_change_s), statistics.median(result.copies)
        print(f"  per status change (median): {copies:.0f} copies sent by pubsub (publish + forwards) = "
              f"{copies / result.size:.1f} per member; {cpu * 1000:.0f} ms of CPU in this process beyond the idle "
              f"rate = {cpu * 1000 / result.size:.1f} ms per member (what each node of a real mesh would spend)")
    print(f"  N={result.size}: p99 {ms(p99)} ms   target p99 <= {TARGET_P99_S * 1000:.0f} ms: "
          f"{'MET' if met else 'MISSED'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=lambda s: sorted(int(x) for x in s.split(",")), default=[20, 50],
                        help="mesh sizes, comma separated (default 20,50): the mesh grows through them")
    parser.add_argument("--trials", type=int, default=15, help="status changes per size (default 15)")
    parser.add_argument("--background", choices=("quiet", "real"), default="quiet",
                        help="background pacing (see above; default quiet)")
    parser.add_argument("--join-batch", type=int, default=1,
                        help="members joining at the same time (default 1: one after another)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for every member per trial")
    parser.add_argument("--seed", type=int, default=None, help="seed for names and publisher order")
    parser.add_argument("-v", "--verbose", action="store_true", help="show libp2p warnings")
    args = parser.parse_args()
    if min(args.sizes) < 2:
        parser.error("every size must be at least 2")
    quiet_logging(args.verbose)
    if not hasattr(MeshService, "_keep_records"):
        raise SystemExit(f"MeshService._keep_records no longer exists: update QuietMeshService in {__file__}")
    stretched = stretch_background() if args.background == "quiet" else []
    print(f"gossip_convergence: sizes {args.sizes}, {args.trials} trials each, background {args.background}"
          + (f" ({', '.join(stretched)} = {QUIET_S:.0f} s)" if stretched else "")
          + f"; load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    started = time.monotonic()
    trio.run(run, args)
    print(f"ran {time.monotonic() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f} (other processes "
          "on the machine inflate every figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
