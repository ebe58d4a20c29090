"""`meshp2p discover`: browse the DHT for meshes, as a rich table or JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import trio
from rich.console import Console
from rich.table import Table

from meshp2p.app.discovery import discover_once
from meshp2p.errors import MeshP2PError
from meshp2p.mesh.discovery import Candidate, rank
from meshp2p.p2p.bootstrap_peers import bootstrap_peers


def find_meshes(args: argparse.Namespace) -> list[tuple[float, Candidate]]:
    peers = bootstrap_peers(args.bootstrap or ())
    if not peers:
        raise MeshP2PError("no bootstrap peers to ask",
                           hint="pass --bootstrap /ip4/HOST/tcp/PORT/p2p/ID or set MESHP2P_BOOTSTRAP")
    found = trio.run(lambda: discover_once(peers, region=args.region, model=args.model))
    ranked = rank(found, region=args.region, model=args.model)
    unranked = [(float("-inf"), c) for c in found if c not in {c for _, c in ranked}]
    return ranked + unranked


def run_discover(args: argparse.Namespace, console: Console) -> int:
    results = find_meshes(args)
    if args.json:
        print(json.dumps([{"mesh_id": c.mesh_id, "score": None if s == float("-inf") else round(s, 1),
                           **asdict(c.listing)} for s, c in results]))
        return 0
    if not results:
        console.print("no meshes found" + (f" in region {args.region}" if args.region else "")
                      + (f" with model {args.model}" if args.model else ""))
        return 0
    table = Table(title="meshes")
    for column in ("name", "region", "nodes", "clients", "served", "wanted", "capacity", "joinable", "mesh id"):
        table.add_column(column)
    for score, c in results:
        listing = c.listing
        clients = f"{listing.clients}/{listing.max_clients}" if listing.max_clients else str(listing.clients)
        table.add_row(listing.name or "(private)", listing.region or "-", str(listing.nodes), clients,
                      ", ".join(listing.served) or "-", ", ".join(listing.wanted) or "-",
                      f"{listing.capacity_mb / 1024:.1f} GB", "yes" if score != float("-inf") else "no",
                      c.mesh_id[:12])
    Console().print(table)
    if args.auto:
        best = results[0][1].listing
        if results[0][0] == float("-inf") or best.name is None:
            raise MeshP2PError("no joinable public mesh found", hint="create one with `meshp2p up --mesh-name NAME`")
        console.print(f"best: [bold]{best.name}[/]; join it with: meshp2p up --mesh-name {best.name}")
    return 0
