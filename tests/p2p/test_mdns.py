"""LAN discovery (`up --mdns`): two nodes with no bootstrap peer find each other and form a named mesh.

mDNS sends multicast, so the end-to-end test runs only inside two network namespaces of its own, joined by a
veth pair (10.77.0.0/24, tests/helpers/netns.py): nothing reaches the machine's real interfaces, and with no route
out of the namespaces no bootstrap peer could be reached even if one were configured. It needs root and
`ip netns`; otherwise it is skipped with the reason, or fails when `CI` is set. The other tests here send nothing.
"""

from __future__ import annotations

import subprocess
import sys

from helpers.netns import VETH_IPS, nodes_on, two_namespace_lan, wait_for_two_node_mesh
from helpers.processes import clean_environ

from meshp2p.p2p.interfaces import is_loopback_host
from meshp2p.p2p.mdns import advertised_addrs
from meshp2p.p2p.overlay import Overlay, OverlayConfig
from meshp2p.wire.identity import Identity

#: Generous for a loaded 2-core machine; measured: the mesh forms ~2 s after both nodes are up.
MESH_WAIT_S = 60.0


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
                       env={**clean_environ(), "MESHP2P_HOME": str(tmp_path), "COLUMNS": "200"})
    assert r.returncode == 1
    assert "--mdns" in r.stderr and "add --listen-all" in r.stderr


def test_two_nodes_on_a_lan_form_a_named_mesh_without_bootstrap(tmp_path):
    with two_namespace_lan() as lan, nodes_on(lan, tmp_path, "--client", "--mdns", "--mesh-name", "lan") as procs:
        statuses = wait_for_two_node_mesh(lan, procs, tmp_path, MESH_WAIT_S)
        for i, status in enumerate(statuses):
            mesh = status["mesh"] if status else {}
            assert isinstance(mesh, dict) and mesh["name"] == "lan"
            # A wildcard listener announces its LAN address (listed from the interfaces), so invite tokens and
            # the mesh listing carry an address the other machine can dial, not only 127.0.0.1.
            assert any(a.startswith(f"/ip4/{VETH_IPS[i]}/tcp/") for a in mesh["addrs"]), mesh["addrs"]
