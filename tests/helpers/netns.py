"""Two network namespaces joined by a veth pair: a LAN of two machines that reaches nothing else.

For tests that must send what loopback cannot carry (mDNS multicast) or cut a link under a running node. Needs
root and `ip netns`; without them the tests skip with the reason, except in CI (the `CI` environment variable set):
there they fail, so a runner that lost its namespaces cannot pass by skipping them. Nodes run as real
`meshp2p up` processes inside the namespaces (`ip netns exec` execs the command, so a Popen's pid is the node's
own) and are stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The two namespaces' addresses on their veth pair.
VETH_IPS = ("10.77.0.1", "10.77.0.2")
#: Console port of each node, inside its own namespace.
CONSOLE_PORT = 3131
STOP_WAIT_S = 15.0


def in_ci() -> bool:
    """Whether we run in CI: `CI` set to anything but empty, 0 or false (GitHub Actions and GitLab set `true`)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def unavailable(reason: str) -> NoReturn:
    """No namespaces here: skip on a developer's machine, fail in CI, where these tests must run."""
    if in_ci():
        pytest.fail(f"CI is set, and network namespaces are unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=True)


@dataclass(frozen=True)
class Lan:
    namespaces: tuple[str, str]
    veths: tuple[str, str]

    def cut(self, side: int) -> None:
        """Take one machine's network down: its peer's packets to it go nowhere and nothing says goodbye."""
        ip("-n", self.namespaces[side], "link", "set", self.veths[side], "down")


@contextmanager
def two_namespace_lan() -> Iterator[Lan]:
    """Two namespaces on one veth 'LAN' with multicast on; deleted (and the veth with them) afterwards."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None:
        unavailable("needs Linux network namespaces (`ip netns`)")
    if os.geteuid() != 0:
        unavailable("needs root to create network namespaces")
    tag = f"{os.getpid() % 100000}"
    names = (f"mp-lan-{tag}-a", f"mp-lan-{tag}-b")
    veths = (f"mpl{tag}a", f"mpl{tag}b")
    created: list[str] = []
    try:
        for name in names:
            try:
                ip("netns", "add", name)
            except subprocess.CalledProcessError as exc:
                unavailable(f"`ip netns add` failed ({exc.stderr.strip()}): no namespaces to run in")
            created.append(name)
        ip("link", "add", veths[0], "type", "veth", "peer", "name", veths[1])
        for i, (name, veth) in enumerate(zip(names, veths, strict=True)):
            ip("link", "set", veth, "netns", name)
            ip("-n", name, "addr", "add", f"{VETH_IPS[i]}/24", "dev", veth)
            ip("-n", name, "link", "set", "lo", "up")
            ip("-n", name, "link", "set", veth, "multicast", "on", "up")
            # Multicast leaves by the veth (there is no default route to carry it).
            ip("-n", name, "route", "add", "224.0.0.0/4", "dev", veth)
        yield Lan(names, veths)
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@contextmanager
def nodes_on(lan: Lan, tmp_path: Path, *up_args: str) -> Iterator[list[subprocess.Popen[str]]]:
    """`meshp2p up --listen-all --console CONSOLE_PORT *up_args` in each namespace, no bootstrap peers;
    terminated (killed after STOP_WAIT_S) on the way out."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MESHP2P_BOOTSTRAP": "", "COLUMNS": "200"}
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    try:
        for i, namespace in enumerate(lan.namespaces):
            home = tmp_path / f"home{i}"
            home.mkdir()
            logs.append((tmp_path / f"node{i}.log").open("w"))
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", namespace, sys.executable, "-m", "meshp2p", "up", "--listen-all",
                 "--port", "9337", "--console", str(CONSOLE_PORT), *up_args],
                env={**env, "MESHP2P_HOME": str(home)}, stdout=logs[-1], stderr=subprocess.STDOUT, text=True))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_WAIT_S)
        for log in logs:
            log.close()


def node_logs(tmp_path: Path, count: int = 2) -> str:
    return "\n".join((tmp_path / f"node{i}.log").read_text()[-2000:] for i in range(count))


def status_in(namespace: str) -> dict[str, object] | None:
    """The node's /api/status, fetched from inside its namespace; None while it is not answering."""
    fetch = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{CONSOLE_PORT}/api/status', "
             "timeout=5).read().decode())")
    r = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", fetch],
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else None


def mesh_peers(status: dict[str, object] | None) -> set[str]:
    """PeerIDs of the other members in a node's view."""
    mesh = status.get("mesh") if status else None
    peers = mesh.get("peers", []) if isinstance(mesh, dict) else []
    return {p["peer_id"] for p in peers if not p["self"]}


def wait_for_two_node_mesh(lan: Lan, procs: list[subprocess.Popen[str]], tmp_path: Path,
                           timeout_s: float) -> list[dict[str, object] | None]:
    """Poll both nodes until each holds the other in its mesh view; their statuses then."""
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = [status_in(namespace) for namespace in lan.namespaces]
        ids = [own_id(s) for s in statuses]
        if all(ids) and mesh_peers(statuses[0]) == {ids[1]} and mesh_peers(statuses[1]) == {ids[0]}:
            return statuses
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise AssertionError(f"the two nodes did not form a mesh: {ids}, {statuses}\n{node_logs(tmp_path)}")
        time.sleep(0.5)


def own_id(status: dict[str, object] | None) -> str | None:
    mesh = status.get("mesh") if status else None
    return mesh.get("peer_id") if isinstance(mesh, dict) else None
