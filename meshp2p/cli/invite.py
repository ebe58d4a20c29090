"""`meshp2p invite`: an invite token for this node's private mesh, for scripts and for sharing later.

Built from $MESHP2P_HOME (the mesh secret and the identity) and the addresses of the node running there,
so it works without asking the node anything over the network.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console

from meshp2p.cli.identity import running_addrs
from meshp2p.errors import MeshP2PError
from meshp2p.home import meshp2p_home
from meshp2p.p2p.identity_store import MESH_SECRET_FILE, load_or_create_identity, load_or_create_mesh_secret
from meshp2p.wire.mesh_id import private_mesh_id
from meshp2p.wire.token import encode_token


def run_invite(args: argparse.Namespace, console: Console) -> int:
    if not (meshp2p_home() / MESH_SECRET_FILE).exists():
        raise MeshP2PError("this node has no private mesh yet", hint="start one with `meshp2p up` (no --mesh-name)")
    addrs = running_addrs()
    if not addrs:
        raise MeshP2PError("no node is running with this MESHP2P_HOME, so there is no address to invite to",
                           hint="start it with `meshp2p up`, then run `meshp2p invite` again")
    secret = load_or_create_mesh_secret()
    ttl = int(args.ttl_hours * 3600) if args.ttl_hours else None
    print(encode_token(load_or_create_identity(), private_mesh_id(secret), secret, addrs[:8], now=time.time(),
                       ttl_s=ttl))
    return 0
