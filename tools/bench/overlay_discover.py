#!/usr/bin/env python3
"""How long `discover` takes to find a newly created named mesh on a 20-node loopback DHT.

Setup: N (default 20) `Overlay` nodes, DHT servers with meshp2p's defaults. Node 0 starts first and every
other node bootstraps off it, one after another; then the nodes of this process refresh their routing tables
once (what `Overlay.run` does every DHT_REFRESH_S anyway).

Each trial: one node of this process (a different one each time) starts a real `MeshService` for a
brand-new named mesh (`MeshSettings(name=unique, publish=True, region=R)`): it looks the listing up, finds
none, creates the mesh and runs its own publish path (node record, provider records `meshes` and
`region:R`, then the listing). The moment the listing `put_value` returns is "published". Then a fresh
discovering client, what `discover_once` builds (new identity, an `Overlay` in DHT client mode
bootstrapped off one random node), starts and runs `discover_meshes(region=R)`; when the answer lacks the
mesh, another fresh client tries (for up to --deadline s). Measured: published -> an answer holding the
mesh, split into client start (dial + routing-table refresh) and the `discover_meshes` lookup: the provider
walk (`Overlay.find_providers`, p2p/providers.py: GET_PROVIDERS until two holders answered), then the
direct asks (`/meshp2p/listing/1.0.0` to every provider, for its node record and its mesh's listing), and the
DHT reads of the fallback (node record, then listing) for a provider that could not answer (none, when all is
well); also the creator's publish time, the KAD streams the client opened and the process's CPU use during the
lookup. A client is closed the way an exiting process closes it (its swarm shut, so peers see the sockets go),
then dropped.

Regions: by default each trial's mesh has a region of its own (the lookup for one new mesh); with
--shared-region all trials share one, so trial t also reads the t meshes created before it (a region
filling up). Records and provider entries of earlier trials stay in the DHT either way, as live meshes' do.

Processes: by default the nodes are split over two processes (this one: node 0, the creators and the
clients; a helper process started from this file: the other half, passive DHT servers), because one
process serialises every node's work on one core and a lookup here is CPU-bound (Noise handshakes and
Noise+yamux RPCs, both ends in Python; the creator's publish path makes a hundred or so); two processes use
both cores of the 2-core target machine. `--procs 1` runs everything in one trio run for comparison. Either
way the figures are an upper bound on what separate machines see: the client shares its core with ~10 DHT
servers answering it.

Background refresh: every node's `Overlay.run` refreshes its routing table every DHT_REFRESH_S (120 s): here
20 refreshes of ~20 KAD RPCs at ~10 ms of CPU each (both ends in these processes) per 30 s, landing on the
measuring cores, where separate machines would each pay only their own share. It stays on by default (it
is also what purges departed discover clients from the servers' routing tables, see below); --no-refresh
stretches DHT_REFRESH_S to an hour after the start-up refresh, to see the lookups without that load.
Nothing on the publish or discover path is changed either way.

Departed clients: a py-libp2p DHT server adds every peer that opens a KAD stream to it to its routing table,
DHT clients included (the inbound path skips the server-mode check), so each finished discover leaves an
entry in every server it asked; later lookups are handed it and dial it (#fail column; a refused dial and one
retry on loopback; on the internet p2p/_libp2p_patches.LOOKUP_DIAL_TIMEOUT_S bounds it) until the server's purge of DHT
clients (every DHT_CLIENT_PURGE_S) or a failed lookup drops it.

Target: published -> found, p95 <= 1 s. Runtime: ~1.5 min on a quiet 2-core machine.

usage: /work/venv/bin/python tools/bench/overlay_discover.py [--nodes 20] [--trials 15] [--procs 2]
       [--shared-region] [--no-refresh] [--alpha 3] [--holders 2] [--deadline 10] [--seed N] [-v]
"""

from __future__ import annotations

import argparse
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
from meshp2p.app import discovery as discovery_client
from meshp2p.app.discovery import discover_meshes
from meshp2p.app.mesh_service import MeshService, MeshSettings
from meshp2p.p2p import overlay as overlay_module
from meshp2p.p2p import providers
from meshp2p.p2p.listing import fetch_records
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity
from meshp2p.wire.mesh_id import named_mesh_id
from meshp2p.wire.records import mesh_key
from meshp2p.wire.status import StatusBody

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overlay_common import close_all, close_swarm, ms, percentile, quiet_logging, stop_processes  # a sibling module

TARGET_P95_S = 1.0
STARTUP_TIMEOUT_S = 90.0
SLOW_CLOSE_S = 5.0
KAD_PROTOCOL = "/ipfs/kad/1.0.0"
QUIET_REFRESH_S = 3600.0


@dataclass(frozen=True)
class Call:
    op: str
    key: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class TimedOverlay(Overlay):
    """An Overlay that records each DHT call's duration and counts the streams it opens, per protocol."""

    def __init__(self, identity: Identity, config: OverlayConfig) -> None:
        super().__init__(identity, config)
        self.calls: list[Call] = []
        self.providers_found = 0
        self.streams: Counter[str] = Counter()
        self.failed_streams: Counter[str] = Counter()
        self._put_done: dict[str, trio.Event] = {}
        opener = self.host.new_stream

        async def counting_new_stream(peer_id: Any, protocols: Sequence[Any]) -> Any:
            self.streams[str(protocols[0])] += 1
            try:
                return await opener(peer_id, protocols)
            except Exception:
                self.failed_streams[str(protocols[0])] += 1
                raise

        self.host.new_stream = counting_new_stream  # type: ignore[method-assign,assignment]

    def _log(self, op: str, key: str, start: float) -> None:
        self.calls.append(Call(op, key, start, trio.current_time()))

    def put_event(self, key: str) -> trio.Event:
        return self._put_done.setdefault(key, trio.Event())

    async def put_record(self, key: str, value: bytes) -> bool:
        start = trio.current_time()
        stored = await super().put_record(key, value)
        self._log("put", key, start)
        self.put_event(key).set()
        return stored

    async def get_record(self, key: str) -> bytes | None:
        start = trio.current_time()
        value = await super().get_record(key)
        self._log("get", key, start)
        return value

    async def provide(self, content_key: bytes) -> None:
        start = trio.current_time()
        await super().provide(content_key)
        self._log("provide", content_key.hex(), start)

    async def find_providers(self, content_key: bytes) -> list[Any]:
        start = trio.current_time()
        found = await super().find_providers(content_key)
        self._log("find_providers", content_key.hex(), start)
        self.providers_found += len(found)
        return found


async def timed_fetch_records(overlay: Any, provider: Any, **kwargs: Any) -> Any:
    """app/discovery.py's direct ask, logged as an `ask` call (`ask+` when it brought a listing back)."""
    start = trio.current_time()
    answer = await fetch_records(overlay, provider, **kwargs)
    if isinstance(overlay, TimedOverlay):
        got = answer is not None and answer.listing_value is not None
        overlay._log("ask+" if got else "ask", str(provider.peer_id), start)
    return answer


@dataclass
class Trial:
    index: int
    region: str
    creator_total_s: float = 0.0
    creator_lookup_s: float = 0.0
    creator_node_put_s: float = 0.0
    creator_provides_s: float = 0.0
    creator_listing_put_s: float = 0.0
    found: bool = False
    attempts: int = 0
    total_s: float = math.nan
    client_start_s: float = 0.0
    lookup_s: float = 0.0
    find_providers_s: float = 0.0
    asks_s: float = 0.0
    dht_reads_s: float = 0.0
    providers: int = 0
    answered: int = 0
    kad_streams: int = 0
    kad_failed: int = 0
    cpu_share: float = 0.0
    notes: list[str] = field(default_factory=list)


def host_status() -> StatusBody:
    return StatusBody(role="host", ram_mb=16384, vram_mb=0, gpu=None, loaded=(), available=(), load=0.0,
                      api_port=None, version=__version__, region=None, rtt_ms={})


async def start_nodes(nursery: trio.Nursery, count: int, bootstrap: tuple[str, ...]) -> list[TimedOverlay]:
    """`count` DHT servers, one after another (each bootstrapped off `bootstrap`, or the first of them)."""
    nodes: list[TimedOverlay] = []
    for _ in range(count):
        node = TimedOverlay(Identity.generate(), OverlayConfig(bootstrap=bootstrap, dht_server=True))
        await nursery.start(node.run)
        nodes.append(node)
        bootstrap = bootstrap or (node.addrs()[0],)
    return nodes


# -- helper process: passive DHT servers ---------------------------------------------------------------------


async def serve_nodes(count: int, bootstrap: str) -> None:
    """Run `count` DHT servers until SIGINT/SIGTERM or stdin closes (the parent died); print their addresses as
    one JSON line when up."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nodes = await start_nodes(nursery, count, (bootstrap,))
            print(json.dumps([node.addrs()[0] for node in nodes]), flush=True)
            async with trio.open_nursery() as waiting:

                async def until_signal() -> None:
                    async for _ in signals:
                        break
                    waiting.cancel_scope.cancel()

                async def until_stdin_closes() -> None:
                    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
                        while await stdin.receive_some():
                            pass
                    waiting.cancel_scope.cancel()

                waiting.start_soon(until_signal)
                waiting.start_soon(until_stdin_closes)
            await close_all(nodes)
            nursery.cancel_scope.cancel()


class Helper:
    """A helper process holding some of the DHT servers; stopped with SIGINT (killed if it hangs)."""

    def __init__(self, count: int, bootstrap: str, *, verbose: bool, no_refresh: bool) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-nodes", str(count), "--bootstrap", bootstrap]
        cmd += (["-v"] if verbose else []) + (["--no-refresh"] if no_refresh else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def addrs(self) -> list[str]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"helper process exited with {self.proc.wait()} before its nodes were up")
        addrs: list[str] = json.loads(line)
        return addrs

    def stop(self) -> None:
        stop_processes([self.proc])


# -- the measurement ---------------------------------------------------------------------------------------


async def create_mesh(nursery: trio.Nursery, node: TimedOverlay, name: str, region: str, trial: Trial) -> float:
    """Start a MeshService creating `name`; returns the moment its listing put returned (published)."""
    mesh_id = named_mesh_id(name)
    settings = MeshSettings(mesh_id=mesh_id, secret=b"", name=name, publish=True, region=region, role="host")
    base = len(node.calls)
    listing_stored = node.put_event(mesh_key(mesh_id))
    start = trio.current_time()
    service = MeshService(node, settings, host_status)
    await nursery.start(service.run)
    await listing_stored.wait()
    published = trio.current_time()
    if not service.created:
        trial.notes.append("the creator joined an existing mesh")
    calls = node.calls[base:]
    trial.creator_total_s = published - start
    trial.creator_lookup_s = next((c.seconds for c in calls if c.op == "get"), 0.0)
    trial.creator_node_put_s = sum(c.seconds for c in calls if c.op == "put" and "/node/" in c.key)
    trial.creator_provides_s = sum(c.seconds for c in calls if c.op == "provide")
    trial.creator_listing_put_s = sum(c.seconds for c in calls if c.op == "put" and "/mesh/" in c.key)
    return published


async def discover_until_found(addrs: Sequence[str], mesh_hex: str, region: str, published: float,
                               deadline_s: float, rng: random.Random, trial: Trial) -> None:
    """Fresh DHT clients (as `discover_once` builds them) until one's answer holds the mesh."""
    while True:
        trial.attempts += 1
        client = TimedOverlay(Identity.generate(), OverlayConfig(bootstrap=(rng.choice(addrs),), dht_server=False))
        async with trio.open_nursery() as nursery:
            t0 = trio.current_time()
            await nursery.start(client.run)
            t1 = trio.current_time()
            cpu0 = time.process_time()
            found = await discover_meshes(client, region=region)
            t2 = trio.current_time()
            cpu = time.process_time() - cpu0
            t3 = trio.current_time()
            await close_swarm(client)
            if trio.current_time() - t3 > SLOW_CLOSE_S:
                trial.notes.append(f"client close took {trio.current_time() - t3:.1f} s")
            nursery.cancel_scope.cancel()
        trial.client_start_s, trial.lookup_s = t1 - t0, t2 - t1
        trial.cpu_share = cpu / max(t2 - t1, 1e-9)
        asks = [c for c in client.calls if c.op.startswith("ask")]
        trial.find_providers_s = sum(c.seconds for c in client.calls if c.op == "find_providers")
        trial.asks_s = _span(asks)
        trial.dht_reads_s = _span([c for c in client.calls if c.op == "get"])
        trial.providers = client.providers_found
        trial.answered = sum(c.op == "ask+" for c in asks)
        trial.kad_streams = client.streams[KAD_PROTOCOL]
        trial.kad_failed = client.failed_streams[KAD_PROTOCOL]
        if any(c.mesh_id == mesh_hex for c in found):
            trial.found = True
            trial.total_s = t2 - published
            return
        if trio.current_time() - published > deadline_s:
            trial.notes.append(f"not found by {trial.attempts} clients ({len(found)} other meshes listed)")
            return


def _span(calls: Sequence[Call]) -> float:
    """Wall time covered by concurrent calls (first start to last end)."""
    return max(c.end for c in calls) - min(c.start for c in calls) if calls else 0.0


async def measure(args: argparse.Namespace) -> list[Trial]:
    rng = random.Random(args.seed)
    run_id = f"{rng.getrandbits(32):08x}"
    remote = args.nodes // 2 if args.procs == 2 else 0
    helper: Helper | None = None
    trials: list[Trial] = []
    try:
        async with trio.open_nursery() as nursery:
            setup_start = trio.current_time()
            with trio.fail_after(STARTUP_TIMEOUT_S):
                nodes = await start_nodes(nursery, 1, ())
                addrs = [nodes[0].addrs()[0]]
                if remote:
                    helper = Helper(remote, addrs[0], verbose=args.verbose, no_refresh=args.no_refresh)
                    addrs += await trio.to_thread.run_sync(helper.addrs)
                nodes += await start_nodes(nursery, args.nodes - remote - 1, (addrs[0],))
                addrs += [node.addrs()[0] for node in nodes[1:]]
                for node in nodes:  # what Overlay.run does every DHT_REFRESH_S: by then every table has settled
                    await node.dht.refresh_routing_table()
            sizes = sorted(n.dht.get_routing_table_size() for n in nodes)
            print(f"{args.nodes} DHT servers ({len(nodes)} here, {remote} in a helper process) up in "
                  f"{trio.current_time() - setup_start:.1f} s; routing tables here min/median/max "
                  f"{sizes[0]}/{statistics.median(sizes):.0f}/{sizes[-1]} peers")
            print("columns: creator = MeshService start -> listing stored; total = published -> found; start = client "
                  "dial + refresh; lookup = discover_meshes (provs = find_providers, asks = direct asks of the "
                  "providers, dht = fallback DHT reads); #prov = providers found; #ans = providers that answered "
                  "with a listing; #kad/#fail = KAD streams the client opened / failed to open; cpu = this "
                  "process's CPU use during the lookup")
            print(f"{'trial':>5} {'creator ms':>10} {'found':>5} {'tries':>5} {'total ms':>9} {'start ms':>9} "
                  f"{'lookup ms':>9} {'provs ms':>9} {'asks ms':>9} {'dht ms':>9} {'#prov':>5} {'#ans':>5} "
                  f"{'#kad':>5} {'#fail':>5} {'cpu':>5}")
            for t in range(args.trials):
                region = f"B{run_id}" + ("" if args.shared_region else f"-{t}")
                trial = Trial(t, region.upper())
                creator = nodes[1 + t % (len(nodes) - 1)]
                name = f"bench-discover-{run_id}-{t}"
                async with trio.open_nursery() as service_nursery:
                    published = await create_mesh(service_nursery, creator, name, trial.region, trial)
                    await discover_until_found(addrs, named_mesh_id(name).hex(), trial.region, published,
                                               args.deadline, rng, trial)
                    service_nursery.cancel_scope.cancel()
                trials.append(trial)
                print(f"{t:>5} {ms(trial.creator_total_s):>10} {'yes' if trial.found else 'NO':>5} "
                      f"{trial.attempts:>5} {ms(trial.total_s):>9} {ms(trial.client_start_s):>9} "
                      f"{ms(trial.lookup_s):>9} {ms(trial.find_providers_s):>9} {ms(trial.asks_s):>9} "
                      f"{ms(trial.dht_reads_s):>9} {trial.providers:>5} {trial.answered:>5} {trial.kad_streams:>5} "
                      f"{trial.kad_failed:>5} {trial.cpu_share:>5.0%} {' '.join(trial.notes)}", flush=True)
            summarise(trials)
            await close_all(nodes)
            nursery.cancel_scope.cancel()
    except* OSError as group:
        if len(trials) < args.trials:
            raise
        # py-libp2p race: a node's background task reads its listener's address just after close_all closed it
        print(f"(teardown: {group.exceptions[0]!r} from a stopping node; the results above are complete)")
    finally:
        if helper is not None:
            helper.stop()
    return trials


def summarise(trials: Sequence[Trial]) -> bool:
    found = [t for t in trials if t.found]
    print()
    print(f"found {len(found)}/{len(trials)} new meshes")
    if not found:
        print(f"published -> found: never   target p95 <= {TARGET_P95_S * 1000:.0f} ms: MISSED")
        return False

    def row(label: str, values: Sequence[float]) -> None:
        print(f"  {label:<46} p50 {ms(percentile(values, 0.5)):>6}  p95 {ms(percentile(values, 0.95)):>6}  "
              f"max {ms(max(values)):>6} ms")

    row("published -> found (fresh clients, all tries)", [t.total_s for t in found])
    row("  client start (dial + routing-table refresh)", [t.client_start_s for t in found])
    row("  discover_meshes lookup (the finding try)", [t.lookup_s for t in found])
    row("    find_providers(region)", [t.find_providers_s for t in found])
    row("    direct asks of the providers (concurrent)", [t.asks_s for t in found])
    row("    fallback DHT reads (concurrent)", [t.dht_reads_s for t in found])
    row("creator: MeshService start -> listing stored", [t.creator_total_s for t in trials])
    row("  listing lookup (a miss: new mesh)", [t.creator_lookup_s for t in trials])
    row("  node record put", [t.creator_node_put_s for t in trials])
    row("  provides (meshes, region), one after another", [t.creator_provides_s for t in trials])
    row("  listing put", [t.creator_listing_put_s for t in trials])
    print(f"  KAD streams opened per client: median {statistics.median(t.kad_streams for t in found):.0f}, "
          f"max {max(t.kad_streams for t in found)}, of which failed (dials to departed peers): median "
          f"{statistics.median(t.kad_failed for t in found):.0f}; this process's CPU during the lookup: median "
          f"{statistics.median(t.cpu_share for t in found):.0%} of a core; clients needed: max "
          f"{max(t.attempts for t in trials)}")
    p95 = percentile([t.total_s if t.found else math.inf for t in trials], 0.95)
    met = p95 <= TARGET_P95_S
    print(f"published -> found p95 {ms(p95)} ms   target p95 <= {TARGET_P95_S * 1000:.0f} ms: "
          f"{'MET' if met else 'MISSED'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=20, help="DHT server nodes (default 20)")
    parser.add_argument("--trials", type=int, default=15, help="meshes created and discovered (default 15)")
    parser.add_argument("--procs", type=int, choices=(1, 2), default=2,
                        help="processes the nodes are spread over (default 2)")
    parser.add_argument("--shared-region", action="store_true", help="one region for every trial's mesh")
    parser.add_argument("--no-refresh", action="store_true",
                        help="stretch Overlay's 30 s routing-table refresh to an hour in every node (see above)")
    parser.add_argument("--alpha", type=int, default=None,
                        help=f"provider walk: queries in flight at most (default {providers.LOOKUP_ALPHA})")
    parser.add_argument("--holders", type=int, default=None,
                        help=f"provider walk: stop after this many holders answered "
                             f"(default {providers.PROVIDER_HOLDERS})")
    parser.add_argument("--deadline", type=float, default=10.0, help="give up on a mesh after this many seconds")
    parser.add_argument("--seed", type=int, default=None, help="seed for names and bootstrap choices")
    parser.add_argument("-v", "--verbose", action="store_true", help="show libp2p warnings")
    parser.add_argument("--serve-nodes", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logging(args.verbose)
    if args.no_refresh:
        overlay_module.DHT_REFRESH_S = QUIET_REFRESH_S
    if args.alpha is not None:
        providers.LOOKUP_ALPHA = args.alpha
    if args.holders is not None:
        providers.PROVIDER_HOLDERS = args.holders
    if args.serve_nodes:
        trio.run(serve_nodes, args.serve_nodes, args.bootstrap)
        return 0
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    print(f"overlay_discover: {args.nodes} nodes over {args.procs} process(es), {args.trials} trials, "
          f"{'one region shared by all trials' if args.shared_region else 'a region per trial'}, "
          f"routing-table refresh every {overlay_module.DHT_REFRESH_S:.0f} s, provider walk alpha "
          f"{providers.LOOKUP_ALPHA} / {providers.PROVIDER_HOLDERS} holders; "
          f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    started = time.monotonic()
    discovery_client.fetch_records = timed_fetch_records
    trio.run(measure, args)
    print(f"ran {time.monotonic() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f} (other processes "
          "on the machine inflate every figure: compare runs on a quiet machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
