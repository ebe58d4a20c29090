#!/usr/bin/env python3
"""Churn soak: streams keep completing while serving nodes are SIGKILLed and restarted, and nothing leaks.

Starts, each with its own MESHP2P_HOME in a temp dir and only loopback addresses:
- `meshp2p bootstrap`;
- 4 serving nodes `meshp2p up --model M --mesh-name bench-churn-<id>`: two serve tiny model A, two serve tiny
  model B (random-weight GGUFs from tools/make_tiny_gguf.py, so the soak measures meshp2p, not a model);
- 2 `--client` nodes, which have no model and route every request through the mesh.
Once both clients list both models with two servers each, --clients (default 8) threads stream chat completions
through the client nodes (alternating node and model, a session key per request so requests spread over both
servers), while a chaos loop SIGKILLs a random serving node every 20–40 s (--kill-min/--kill-max) and starts it
again with the same MESHP2P_HOME (same identity, same ports). A probe per model sends a tiny non-streamed request
through a client node every 0.5 s; the longest run of failed probes is "longest time a model had no usable
server".

A stream counts as completed when it ends with `data: [DONE]` after a chunk with `finish_reason` set and carried
no error event; anything else (an error event, a non-200 answer, a broken connection) counts as failed.
Failovers are counted from the client nodes' log lines (each continuation and each retry is logged).

Leaks: after a 15 s warm-up of the load and at the end of the soak (every node ready again, 5 s after the last
restart, load still running: connection pools grow to the load's concurrency, so busy is compared with busy) it
counts, per node, open file descriptors and child processes, and RSS for the nodes that were never killed
(the clients and the bootstrap: a restarted node is a new process). It also counts every llama-server /
ggml-rpc-server on the machine whose command line points into this run's temp dir: after all restarts it must
equal the number of serving nodes (no orphan of a killed node survives), and 0 after everything stopped.

Targets: >= 99 % of streams complete, 0 leaked processes or descriptors, RSS growth <= 10 %.
Runtime: --duration (default 300 s, at most 600) plus ~1 min of start and stop.

usage: .venv/bin/python tools/bench/churn.py [--duration 300] [--clients 8] [--seed 0] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from idle_node import children, free_port, rss_mb
from idle_node import status as console_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_tiny_gguf import write_tiny_gguf

TARGET_COMPLETE = 0.99
TARGET_RSS_GROWTH = 0.10
MAX_DURATION_S = 600.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
SETTLE_S = 5.0
WARMUP_S = 15.0
PROBE_EVERY_S = 0.5
REQUEST_TIMEOUT_S = 60.0
MODELS = ("churn-a", "churn-b")
LLAMA_NAMES = ("llama-server", "ggml-rpc-server", "rpc-server")


@dataclass
class Node:
    label: str
    home: Path
    args: list[str]
    api_port: int = 0
    console_port: int = 0
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, env: dict[str, str]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        log = (self.home / f"output-{self.starts}.log").open("wb")
        cmd = [sys.executable, "-m", "meshp2p", *self.args]
        if self.args[0] == "up":
            cmd += ["--port", str(self.api_port), "--console", str(self.console_port), "--no-build"]
        self.popen = subprocess.Popen(cmd, env={**env, "MESHP2P_HOME": str(self.home)}, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v1"

    def status(self) -> dict[str, object] | None:
        return console_status(self.console_port)

    def ready(self) -> bool:
        data = self.status()
        models = data.get("models") if data else None
        return isinstance(models, list) and all(m.get("state") == "ready" for m in models)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{self.label} ignored SIGINT for {STOP_TIMEOUT_S:.0f} s: killed")
            self.kill()


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: int = 0
    completed: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        with self.lock:
            self.failed += 1
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


def bootstrap_addr(boot: Node) -> str:
    """The loopback multiaddr `meshp2p bootstrap` prints once its overlay runs."""
    log = boot.home / "output-0.log"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("/ip4/127.0.0.1/") and "/p2p/" in line:
                return line.strip()
        if boot.popen is not None and boot.popen.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"churn: meshp2p bootstrap printed no loopback address (see {log})")


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def llama_processes(root: Path) -> list[int]:
    """llama.cpp processes on this machine whose command line points into this run's temp dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and any(Path(argv[0].decode(errors="replace")).name == n for n in LLAMA_NAMES) \
                and str(root).encode() in b" ".join(argv):
            found.append(int(entry.name))
    return found


def post(url: str, body: dict[str, object]) -> urllib.request.Request:
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
                                  method="POST")


def stream_once(node: Node, model: str, session: str, tally: Tally) -> None:
    body = {"model": model, "stream": True, "max_tokens": 24, "temperature": 0, "user": session,
            "messages": [{"role": "user", "content": "Tell me about meshes."}]}
    with tally.lock:
        tally.started += 1
    finished = done = False
    try:
        with urllib.request.urlopen(post(node.api + "/chat/completions", body),
                                    timeout=REQUEST_TIMEOUT_S) as reply:
            for raw in reply:
                line = raw.decode(errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                event = json.loads(data)
                if "error" in event:
                    tally.fail(f"error event: {str(event['error'].get('message', ''))[:60]}")
                    return
                if any(c.get("finish_reason") for c in event.get("choices", [])):
                    finished = True
    except urllib.error.HTTPError as exc:
        tally.fail(f"HTTP {exc.code}")
        return
    except (OSError, ValueError) as exc:
        tally.fail(type(exc).__name__)
        return
    if finished and done:
        with tally.lock:
            tally.completed += 1
    else:
        tally.fail("ended early" if not done else "no finish_reason")


def load_loop(index: int, clients: list[Node], stop: threading.Event, tally: Tally) -> None:
    n = 0
    while not stop.is_set():
        node = clients[(index + n) % len(clients)]
        stream_once(node, MODELS[(index + n // 2) % len(MODELS)], f"soak-{index}-{n}", tally)
        n += 1


@dataclass
class Outage:
    longest_s: float = 0.0


def probe_loop(model: str, client: Node, stop: threading.Event, outage: Outage) -> None:
    """A tiny request every PROBE_EVERY_S; an outage runs from the last success before failures to the next one."""
    body = {"model": model, "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}
    last_ok, failing = time.monotonic(), False
    while not stop.is_set():
        try:
            with urllib.request.urlopen(post(client.api + "/chat/completions", body), timeout=10) as reply:
                reply.read()
            now = time.monotonic()
            if failing:
                outage.longest_s = max(outage.longest_s, now - last_ok)
            last_ok, failing = now, False
        except (OSError, ValueError):
            failing = True
        stop.wait(PROBE_EVERY_S)
    if failing:
        outage.longest_s = max(outage.longest_s, time.monotonic() - last_ok)


def wait_until(what: str, predicate: object, timeout_s: float = READY_TIMEOUT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if callable(predicate) and predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"churn: timed out after {timeout_s:.0f} s waiting for {what}")


def servers_of(client: Node) -> dict[str, int]:
    try:
        with urllib.request.urlopen(client.api + "/models", timeout=3) as reply:
            data = json.loads(reply.read())["data"]
    except (OSError, ValueError, KeyError):
        return {}
    return {m["id"]: len(m.get("meshp2p", {}).get("nodes", [])) for m in data}


def failovers(client: Node) -> tuple[int, int]:
    """(mid-stream continuations, retries before the first byte), from the client node's log lines
    (meshp2p/api/remote.py logs each one)."""
    text = "".join(p.read_text(errors="replace") for p in client.home.glob("output-*.log"))
    return text.count("continuing elsewhere"), text.count("failed before answering")


def snapshot(nodes: list[Node]) -> dict[str, tuple[int, int, float]]:
    """Per node: open descriptors, child processes, RSS in MB."""
    return {n.label: (fd_count(n.pid), len(children(n.pid)), rss_mb(n.pid)) for n in nodes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="soak seconds (default 300, at most 600)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent streaming clients (default 8)")
    parser.add_argument("--kill-min", type=float, default=20.0, help="shortest gap between kills, s (default 20)")
    parser.add_argument("--kill-max", type=float, default=40.0, help="longest gap between kills, s (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the chaos loop's choices (default 0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="keep the nodes' homes and logs")
    args = parser.parse_args()
    duration = min(args.duration, MAX_DURATION_S)
    chaos = random.Random(args.seed)

    print(f"churn: load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="meshp2p-churn-"))
    env = {k: v for k, v in os.environ.items() if k != "MESHP2P_BOOTSTRAP"}
    models = [write_tiny_gguf(root / f"{m}.gguf", "dense", seed=i + 1) for i, m in enumerate(MODELS)]
    mesh = f"bench-churn-{os.getpid()}"
    boot = Node("bootstrap", root / "bootstrap", ["bootstrap"])
    servers = [Node(f"server{i}", root / f"server{i}", ["up", "--model", str(models[i // 2])])
               for i in range(4)]
    clients = [Node(f"client{i}", root / f"client{i}", ["up", "--client"]) for i in range(2)]
    everyone = [boot, *servers, *clients]
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        boot.start(env)
        addr = bootstrap_addr(boot)
        for node in [*servers, *clients]:
            node.args += ["--mesh-name", mesh, "--bootstrap", addr, "--threads", "1"]
            node.api_port, node.console_port = free_port(), free_port()
            node.start(env)
        wait_until("every node ready", lambda: all(n.ready() for n in [*servers, *clients]))
        wait_until("both clients to see two servers of each model",
                   lambda: all(servers_of(c).get(m) == 2 for c in clients for m in MODELS))
        time.sleep(SETTLE_S)
        print(f"mesh of {len(servers)} servers and {len(clients)} clients ready; llama.cpp processes: "
              f"{len(llama_processes(root))}; soaking {duration:.0f} s with {args.clients} streaming clients")

        tally = Tally()
        outages = {m: Outage() for m in MODELS}
        threads = [threading.Thread(target=load_loop, args=(i, clients, stop, tally), daemon=True)
                   for i in range(args.clients)]
        threads += [threading.Thread(target=probe_loop, args=(m, clients[i % 2], stop, outages[m]), daemon=True)
                    for i, m in enumerate(MODELS)]
        for thread in threads:
            thread.start()
        # Connection pools (to llama-server, tunnel streams) grow to the load's concurrency: compare descriptors
        # under the same load, after a warm-up and at the end, not idle against busy.
        time.sleep(WARMUP_S)
        before = snapshot([boot, *servers, *clients])

        kills, orphans_seen = 0, 0
        end_at = time.monotonic() + duration - WARMUP_S
        while True:
            gap = chaos.uniform(args.kill_min, args.kill_max)
            if time.monotonic() + gap > end_at:
                break
            time.sleep(gap)
            victim = chaos.choice(servers)
            victim.kill()
            kills += 1
            victim.start(env)
            took = wait_until(f"{victim.label} ready again", victim.ready)
            orphans_seen = max(orphans_seen, len(llama_processes(root)) - len(servers))
            print(f"  t={duration - (end_at - time.monotonic()):5.0f} s  killed and restarted {victim.label} "
                  f"(ready in {took:.1f} s); streams {tally.completed}/{tally.started} complete")
        time.sleep(max(0.0, end_at - time.monotonic()))
        wait_until("every node ready at the end of the soak", lambda: all(n.ready() for n in [*servers, *clients]))
        time.sleep(SETTLE_S)
        after = snapshot([boot, *servers, *clients])
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S)

        live_llama = len(llama_processes(root))
        fo = [failovers(c) for c in clients]

        done = tally.completed + tally.failed
        share = tally.completed / done if done else 0.0
        print(f"streams: started {tally.started}, completed {tally.completed}, failed {tally.failed} "
              f"({100 * share:.2f} % complete); kills {kills}")
        for reason, count in sorted(tally.reasons.items(), key=lambda kv: -kv[1]):
            print(f"  failed: {count} x {reason}")
        print(f"failovers seen by the client nodes: {sum(f[0] for f in fo)} streams continued on another server "
              f"mid-answer, {sum(f[1] for f in fo)} requests retried elsewhere before their first byte")
        for m, outage in outages.items():
            print(f"longest time {m} had no usable server (probe every {PROBE_EVERY_S} s): {outage.longest_s:.1f} s")
        print("node        fds start/end   children start/end   RSS start/end MB")
        leaked_fds = 0
        rss_growth = 0.0
        for label in before:
            (f0, c0, r0), (f1, c1, r1) = before[label], after[label]
            restarted = any(n.label == label and n.starts > 1 for n in servers)
            note = "  (restarted: a new process)" if restarted else ""
            print(f"  {label:<10} {f0:4d} / {f1:4d}      {c0:3d} / {c1:3d}            {r0:6.1f} / {r1:6.1f}{note}")
            if not restarted:
                leaked_fds += max(0, f1 - f0)
                rss_growth = max(rss_growth, (r1 - r0) / r0)
        print(f"llama.cpp processes after the soak: {live_llama} for {len(servers)} serving nodes "
              f"(most extra seen right after a restart: {orphans_seen})")
    finally:
        stop.set()
        for node in reversed(everyone):
            node.stop()
        left = llama_processes(root)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if args.verbose:
            print(f"homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    # The same orphans show in both counts: those alive after the soak are still there after the stop.
    leaked_procs = max(live_llama - len(servers), len(left), 0)
    print(f"llama.cpp processes left after everything stopped: {len(left)}")
    print(f"complete {100 * share:.2f} %   target >= {100 * TARGET_COMPLETE:.0f} %: "
          f"{'MET' if share >= TARGET_COMPLETE else 'MISSED'}")
    print(f"leaked processes {leaked_procs}, descriptors {leaked_fds}   target 0: "
          f"{'MET' if leaked_procs == 0 and leaked_fds == 0 else 'MISSED'}")
    print(f"RSS growth of long-lived nodes {100 * rss_growth:.1f} %   target <= {100 * TARGET_RSS_GROWTH:.0f} %: "
          f"{'MET' if rss_growth <= TARGET_RSS_GROWTH else 'MISSED'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
