#!/usr/bin/env python3
"""Idle node cost: RSS and CPU of one `meshp2p up --client` process sitting in a quiet mesh.

Starts, each with its own MESHP2P_HOME in a temp dir and only loopback addresses:
- `meshp2p bootstrap` (a DHT-only node; its printed multiaddr is the others' --bootstrap),
- the measured node: `meshp2p up --client --mesh-name bench-idle-<id> --bootstrap ADDR --port P --console C`,
- --others (default 1) more clients of the same mesh, so there is status/demand gossip to receive, RTTs to
  measure, etc.; more of them show how the idle cost grows with the mesh.
(`--client` runs no llama-server, so the meshp2p process is the whole node.) Once the measured node's
view holds every other client (its console /api/status), it settles for --settle s, then over a --window s
window: CPU = (utime + stime) delta from /proc/PID/stat over wall time, RSS = VmRSS from /proc/PID/status
sampled every second (mean and max). The other two processes are reported too, for context. With
--profile S, py-spy then samples the measured node for S seconds (after the window, so it cannot disturb
it) and prints where its idle CPU goes. Everything is stopped with SIGINT (then SIGKILL if one hangs).

Targets: RSS <= 150 MB, CPU <= 1 % (of one core). Runtime: ~1 min (+ --profile).

With --console-tab, the measured node is then measured in --rounds pairs of windows, interleaved: without a
browser, and with one headless Chromium tab (Playwright on the system's chromium, as the tests use it) open on
its console page, which follows the node over /api/events. Only the node's CPU is counted, not the browser's.
Target: the node's CPU with a tab <= 1.5 x without.

usage: python tools/bench/idle_node.py [--others 1] [--settle 20] [--window 30] [--profile 20] [--console-tab
       [--rounds 2]] [-v]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TARGET_RSS_MB = 150.0
TARGET_CPU_PCT = 1.0
TARGET_TAB_RATIO = 1.5
#: Seconds between opening the tab and measuring: the page's first fetches are not its idle cost.
TAB_SETTLE_S = 5.0
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
POLL_S = 0.25
RSS_SAMPLE_S = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROFILE_HZ = 200
EPOLL_WAIT_FRAME = "EpollIOManager.get_events"
_ADDR = re.compile(r"^/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat, after the comm field)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """Child pids (a --client node should have none: no llama-server)."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == pid]


def _parent(proc_dir: Path) -> int:
    try:
        stat = (proc_dir / "stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rindex(")") + 2:].split()[1])


@dataclass
class Proc:
    label: str
    popen: subprocess.Popen[bytes]
    home: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


class Processes:
    """The processes this bench started; `stop_all` stops every one of them (SIGINT, then SIGKILL)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[Proc] = []
        self.env = {k: v for k, v in os.environ.items() if k != "MESHP2P_BOOTSTRAP"}

    def start(self, label: str, args: list[str], *, stdout: int | None = subprocess.DEVNULL) -> Proc:
        home = self.root / label
        home.mkdir()
        log = (home / "stderr.log").open("wb")
        popen = subprocess.Popen([sys.executable, "-m", "meshp2p", *args], env={**self.env, "MESHP2P_HOME": str(home)},
                                 stdout=stdout, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        proc = Proc(label, popen, home)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                tail = (proc.home / "stderr.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"{proc.label} exited with {proc.popen.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGINT)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"{proc.label} ignored SIGINT for {STOP_TIMEOUT_S:.0f} s: killed")
                proc.popen.kill()
                proc.popen.wait()
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()


def bootstrap_addr(proc: Proc) -> str:
    """The loopback multiaddr `meshp2p bootstrap` prints once its overlay runs."""
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.popen.stdout.readline().decode(errors="replace").strip()
        if _ADDR.match(line):
            return line
        if not line and proc.popen.poll() is not None:
            break
    raise SystemExit(f"meshp2p bootstrap printed no loopback address (see {proc.home / 'stderr.log'})")


def status(console_port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{console_port}/api/status", timeout=2) as response:
            data: dict[str, object] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for_peers(processes: Processes, console_port: int, count: int) -> float:
    """Seconds until the measured node's mesh view holds `count` other members."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        processes.check_alive()
        data = status(console_port)
        mesh = data.get("mesh") if data else None
        if isinstance(mesh, dict) and len(mesh.get("peers", [])) >= count + 1:
            return time.monotonic() - started
        time.sleep(POLL_S)
    raise SystemExit(f"the measured node's mesh view never held all {count} other clients")


@dataclass
class Usage:
    cpu_pct: float
    rss_mean_mb: float
    rss_max_mb: float


def measure(pids: dict[str, int], window_s: float) -> dict[str, Usage]:
    """CPU % over the window and RSS sampled every RSS_SAMPLE_S, for each pid."""
    rss: dict[str, list[float]] = {label: [] for label in pids}
    cpu0 = {label: cpu_seconds(pid) for label, pid in pids.items()}
    t0 = time.monotonic()
    next_sample = t0
    while True:
        now = time.monotonic()
        if now >= next_sample:
            for label, pid in pids.items():
                rss[label].append(rss_mb(pid))
            next_sample += RSS_SAMPLE_S
        if now - t0 >= window_s:
            break
        time.sleep(max(0.0, min(next_sample, t0 + window_s) - time.monotonic()))
    wall = time.monotonic() - t0
    return {label: Usage(100 * (cpu_seconds(pid) - cpu0[label]) / wall, statistics.mean(rss[label]),
                         max(rss[label])) for label, pid in pids.items()}


def console_tab_rounds(pid: int, console_port: int, window_s: float, rounds: int) -> None:
    """The node's CPU without and with one console tab open, `rounds` interleaved pairs of windows."""
    from playwright.sync_api import sync_playwright  # a test dependency (tools/setup.sh --test)

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--console-tab needs Debian's chromium (tools/setup.sh --test installs it)")
    without: list[float] = []
    with_tab: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            for _ in range(rounds):
                without.append(measure({"node": pid}, window_s)["node"].cpu_pct)
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{console_port}/", wait_until="networkidle")
                time.sleep(TAB_SETTLE_S)
                with_tab.append(measure({"node": pid}, window_s)["node"].cpu_pct)
                page.close()
        finally:
            browser.close()
    base, tab = statistics.median(without), statistics.median(with_tab)
    ratio = tab / base if base > 0 else float("inf")
    print(f"console tab: node CPU without {', '.join(f'{c:.2f}' for c in without)} %, with one tab "
          f"{', '.join(f'{c:.2f}' for c in with_tab)} % ({window_s:.0f} s windows)")
    print(f"with / without = {ratio:.2f} (medians {tab:.2f} / {base:.2f} %)   target <= {TARGET_TAB_RATIO}: "
          f"{'MET' if ratio <= TARGET_TAB_RATIO else 'MISSED'}")


def profile(pid: int, seconds: int, out: Path) -> None:
    """Sample the process with py-spy and print the share of samples per hot function (self and inclusive)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found: no profile")
        return
    result = subprocess.run([spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(PROFILE_HZ),
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.exists():
        print(f"py-spy failed ({result.returncode}): {result.stderr.strip()[-500:]}")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = waiting = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if frames[-1].startswith(EPOLL_WAIT_FRAME):  # trio blocked in epoll: py-spy does not call that idle
            waiting += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"py-spy, {seconds} s at {PROFILE_HZ} Hz: {total} samples running Python (+{waiting} in trio's epoll wait); "
          "shares below are of the running samples (py-spy's own sampling inflates the total: trust /proc for "
          "the CPU figure)")
    print("  hottest (inclusive), meshp2p / libp2p frames:")
    shown = 0
    for frame, count in inclusive.most_common():
        if ("meshp2p" in frame or "libp2p" in frame) and shown < 25:
            print(f"    {100 * count / max(total, 1):5.1f} %  {frame}")
            shown += 1
    print("  hottest (self):")
    for frame, count in own.most_common(12):
        print(f"    {100 * count / max(total, 1):5.1f} %  {frame}")


def _short(frame: str) -> str:
    """`func (path/to/site-packages/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    match = re.match(r"(.*) \((.*?):\d+\)$", frame.strip())
    if not match:
        return frame.strip()
    func, path = match.groups()
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", type=int, default=1, help="other clients in the mesh (default 1)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after joining before the window")
    parser.add_argument("--window", type=float, default=30.0, help="measurement window in seconds (default 30)")
    parser.add_argument("--profile", type=int, default=0, metavar="S",
                        help="after the window, py-spy the measured node for S seconds")
    parser.add_argument("--console-tab", action="store_true",
                        help="then compare the node's CPU with and without a headless console tab open")
    parser.add_argument("--rounds", type=int, default=2, help="--console-tab: pairs of windows (default 2)")
    parser.add_argument("-v", "--verbose", action="store_true", help="keep the nodes' logs and print where")
    args = parser.parse_args()

    mesh = f"bench-idle-{os.getpid()}"
    print(f"idle_node: load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="meshp2p-idle-"))
    processes = Processes(root)
    try:
        boot = processes.start("bootstrap", ["bootstrap"], stdout=subprocess.PIPE)
        addr = bootstrap_addr(boot)
        console = free_port()
        node = processes.start("node", ["up", "--client", "--mesh-name", mesh, "--bootstrap", addr,
                                        "--port", str(free_port()), "--console", str(console)])
        others = [processes.start(f"other{i}", ["up", "--client", "--mesh-name", mesh, "--bootstrap", addr,
                                                "--port", str(free_port()), "--console", str(free_port())])
                  for i in range(args.others)]
        joined = wait_for_peers(processes, console, args.others)
        print(f"bootstrap {addr}; the measured node (pid {node.pid}) saw all {args.others} other client(s) after "
              f"{joined:.1f} s; settling {args.settle:.0f} s, then measuring {args.window:.0f} s")
        time.sleep(args.settle)
        processes.check_alive()
        kids = children(node.pid)
        usage = measure({"node": node.pid, "bootstrap": boot.pid, **{p.label: p.pid for p in others}}, args.window)
        processes.check_alive()
        data = status(console)
        mesh_view = data.get("mesh") if data else None
        peers = len(mesh_view.get("peers", [])) if isinstance(mesh_view, dict) else 0
        for label, u in usage.items():
            print(f"  {label:<10} CPU {u.cpu_pct:5.2f} %   RSS mean {u.rss_mean_mb:6.1f} MB  max {u.rss_max_mb:6.1f} MB"
                  + ("   <- measured" if label == "node" else ""))
        u = usage["node"]
        print(f"measured node: child processes {len(kids)}, peers in view at the end {peers}")
        print(f"RSS max {u.rss_max_mb:.1f} MB   target <= {TARGET_RSS_MB:.0f} MB: "
              f"{'MET' if u.rss_max_mb <= TARGET_RSS_MB else 'MISSED'}")
        print(f"CPU {u.cpu_pct:.2f} % over {args.window:.0f} s   target <= {TARGET_CPU_PCT:.0f} %: "
              f"{'MET' if u.cpu_pct <= TARGET_CPU_PCT else 'MISSED'}")
        if args.console_tab:
            console_tab_rounds(node.pid, console, args.window, args.rounds)
            processes.check_alive()
        if args.profile:
            profile(node.pid, args.profile, root / "node.pyspy.txt")
    finally:
        processes.stop_all()
        if args.verbose:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} (other processes on the machine can inflate CPU figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
