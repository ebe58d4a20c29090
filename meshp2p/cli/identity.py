"""`meshp2p id` and `meshp2p rotate-key`: the node's identity in $MESHP2P_HOME."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from meshp2p.home import runtime_file
from meshp2p.p2p.identity_store import identity_path, load_or_create_identity, rotate_identity


def run_id(args: argparse.Namespace, console: Console) -> int:
    identity = load_or_create_identity()
    addrs = running_addrs()
    if args.json:
        print(json.dumps({"peer_id": identity.peer_id, "addrs": addrs, "key_file": str(identity_path())}))
        return 0
    print(identity.peer_id)
    for addr in addrs:
        print(addr)
    if not addrs:
        console.print("[dim]no node is running with this MESHP2P_HOME; bootstrap address form: "
                      f"/ip4/HOST/tcp/PORT/p2p/{identity.peer_id} (PORT from `up --bind-port`)[/]")
    return 0


def run_rotate_key(args: argparse.Namespace, console: Console) -> int:
    old, new = rotate_identity()
    if old is not None:
        console.print(f"old identity {old.peer_id} kept in {identity_path()}.old")
    console.print(f"new identity [bold]{new.peer_id}[/]; restart the node to use it")
    print(new.peer_id)
    return 0


def running_addrs() -> list[str]:
    """Peer addresses of the node running with this MESHP2P_HOME (empty when none runs)."""
    try:
        addrs = json.loads(runtime_file().read_text()).get("p2p_addrs", [])
    except (OSError, ValueError):
        return []
    return [str(a) for a in addrs]
