"""LAN discovery (`up --mdns`): two nodes with no bootstrap peer find each other and form a named mesh.

mDNS sends multicast, so the end-to-end test runs only inside two network namespaces of its own, joined by a
veth pair (10.77.0.0/24): nothing reaches the machine's real interfaces, and with no route out of the
namespaces no bootstrap peer could be reached even if one were configured. It needs root and `ip netns`,
and is skipped with the reason otherwise. The other tests here send nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from meshp2p.p2p.interfaces import is_loopback_host
from meshp2p.p2p.mdns import advertised_addrs
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity

REPO = Path(__file__).resolve().parents[2]
#: Generous for a loaded 2-core machine; measured: the mesh forms ~2 s after both nodes are up.
MESH_WAIT_S = 60.0
STOP_WAIT_S = 15.0
CONSOLE_PORT = 3131
#: The two namespaces' addresses on their veth pair.
VETH_IPS = ("10.77.0.1", "10.77.0.2")


def test_advertised_addresses_are_never_loopback():
    assert advertised_addrs("10.1.2.3", 4001) == ["/ip4/10.1.2.3/tcp/4001"]
    assert advertised_addrs("127.0.0.1", 4001) == []
    assert all(not a.startswith("/ip4/127.") for a in advertised_addrs("0.0.0.0", 4001))
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost") and not is_loopback_host("0.0.0.0")


def test_an_overlay_on_loopback_starts_no_mdns():
    """Announcing 127.0.0.1 to the LAN would help nobody: the overlay warns and leaves zeroconf closed."""
    overlay = Overlay(Identity.generate(), OverlayConfig(listen_host="127.0.0.1", mdns=True))
    assert overlay.mdns is None


def test_mdns_without_listen_all_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "meshp2p", "up", "--client", "--mdns", "--mesh-name", "lan"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MESHP2P_HOME": str(tmp_path), "COLUMNS": "200"})
    assert r.returncode == 1
    assert "--mdns" in r.stderr and "add --listen-all" in r.stderr


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=True)


@pytest.fixture
def lan() -> Iterator[tuple[str, str]]:
    """Two namespaces on one veth 'LAN' with multicast on; deleted (and the veth with them) afterwards."""
    if not sys.platform.startswith("linux") or shutil.which("ip") is None:
        pytest.skip("needs Linux network namespaces (`ip netns`)")
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces; mDNS multicast is only sent inside them")
    tag = f"{os.getpid() % 100000}"
    names = (f"mp-mdns-{tag}-a", f"mp-mdns-{tag}-b")
    created: list[str] = []
    try:
        for name in names:
            try:
                _ip("netns", "add", name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"`ip netns add` failed ({exc.stderr.strip()}): no namespaces to run mDNS in")
            created.append(name)
        veths = (f"mpm{tag}a", f"mpm{tag}b")
        _ip("link", "add", veths[0], "type", "veth", "peer", "name", veths[1])
        for i, (name, veth) in enumerate(zip(names, veths, strict=True)):
            _ip("link", "set", veth, "netns", name)
            _ip("-n", name, "addr", "add", f"{VETH_IPS[i]}/24", "dev", veth)
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "link", "set", veth, "multicast", "on", "up")
            # Multicast leaves by the veth (there is no default route to carry it).
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", veth)
        yield names
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _status(namespace: str) -> dict[str, object] | None:
    """The node's /api/status, fetched from inside its namespace; None while it is not answering."""
    fetch = (f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{CONSOLE_PORT}/api/status', "
             "timeout=5).read().decode())")
    r = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", fetch],
                       capture_output=True, text=True, timeout=30)
    return json.loads(r.stdout) if r.returncode == 0 else None


def _mesh_peers(status: dict[str, object] | None) -> set[str]:
    mesh = status.get("mesh") if status else None
    peers = mesh.get("peers", []) if isinstance(mesh, dict) else []
    return {p["peer_id"] for p in peers if not p["self"]}


def _own_id(status: dict[str, object] | None) -> str | None:
    mesh = status.get("mesh") if status else None
    return mesh.get("peer_id") if isinstance(mesh, dict) else None


def test_two_nodes_on_a_lan_form_a_named_mesh_without_bootstrap(lan, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MESHP2P_BOOTSTRAP": "", "COLUMNS": "200"}
    procs: list[subprocess.Popen[str]] = []
    logs: list[IO[str]] = []
    try:
        for i, namespace in enumerate(lan):
            home = tmp_path / f"home{i}"
            home.mkdir()
            logs.append((tmp_path / f"node{i}.log").open("w"))
            # `ip netns exec` execs the command, so the pid is the node's own.
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", namespace, sys.executable, "-m", "meshp2p", "up", "--client", "--mdns",
                 "--listen-all", "--mesh-name", "lan", "--port", "9337", "--console", str(CONSOLE_PORT)],
                env={**env, "MESHP2P_HOME": str(home)}, stdout=logs[-1], stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + MESH_WAIT_S
        while True:
            statuses = [_status(namespace) for namespace in lan]
            ids = [_own_id(s) for s in statuses]
            if all(ids) and _mesh_peers(statuses[0]) == {ids[1]} and _mesh_peers(statuses[1]) == {ids[0]}:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                tails = "\n".join((tmp_path / f"node{i}.log").read_text()[-2000:] for i in range(len(procs)))
                raise AssertionError(f"the nodes did not find each other over mDNS: {ids}, {statuses}\n{tails}")
            time.sleep(0.5)
        for i, status in enumerate(statuses):
            mesh = status["mesh"] if status else {}
            assert isinstance(mesh, dict) and mesh["name"] == "lan"
            # A wildcard listener announces its LAN address (listed from the interfaces), so invite tokens and
            # the mesh listing carry an address the other machine can dial, not only 127.0.0.1.
            assert any(a.startswith(f"/ip4/{VETH_IPS[i]}/tcp/") for a in mesh["addrs"]), mesh["addrs"]
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
