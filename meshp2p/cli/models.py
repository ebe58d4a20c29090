"""`meshp2p models [--json] [--console PORT]`: the models on disk here (catalog models and other GGUFs in the
Hugging Face cache, the embedded model, $MESHP2P_HOME/models) and, when a node runs, the ones it serves and the ones
its mesh serves or offers (from its console's /api/status, as `meshp2p status` reads it).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from meshp2p.api.console_client import console_url
from meshp2p.errors import MeshP2PError
from meshp2p.inference.catalog import load_catalog
from meshp2p.inference.hub import Hub
from meshp2p.inference.moe import ModelLayout
from meshp2p.inference.on_disk import local_models

STATUS_TIMEOUT_S = 5.0


def run_models(args: argparse.Namespace, console: Console) -> int:
    here = local_models(load_catalog(), Hub())
    node, note = node_models(args.console)
    if args.json:
        print(json.dumps({"on_disk": [m.to_json() for m in here], "node": node}, indent=2))
        return 0
    out = Console()
    table = Table(title="on disk here")
    for column in ("model", "source", "size", "kind", "path"):
        table.add_column(column)
    for m in here:
        table.add_row(m.id, m.source, f"{m.size_bytes / 1e9:.2f} GB", _kind(m.layout()), str(m.paths[0]))
    out.print(table if here else "no models on disk here yet (`meshp2p download` lists the catalog)")
    if node is None:
        out.print(note, highlight=False)
        return 0
    mesh = Table(title=f"the running node ({node['console_url']}) and its mesh")
    for column in ("model", "here", "served by", "offered by"):
        mesh.add_column(column)
    for m in node["mesh"]:
        mesh.add_row(m["id"], m["here"] or "", _peers(m["served_by"]), _peers(m["offered_by"]))
    out.print(mesh)
    return 0


def node_models(port: int | None) -> tuple[dict[str, Any] | None, str]:
    """What the running node serves, and what its mesh serves and offers; None (and why) when no node answers.
    A node asked for by --console that does not answer is an error; a stale node.json is only a note."""
    try:
        base = console_url(port)
    except MeshP2PError:
        if port is not None:
            raise
        return None, "no node runs with this MESHP2P_HOME (`meshp2p up` starts one)"
    try:
        status = httpx.get(base + "/api/status", timeout=STATUS_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError) as exc:
        if port is not None:
            raise MeshP2PError(f"could not read {base}/api/status: {exc}",
                               hint="is the node still running? (`meshp2p up`)") from exc
        return None, f"the node in node.json ({base}) did not answer: is it still running?"
    models: dict[str, dict[str, Any]] = {}

    def model(model_id: str) -> dict[str, Any]:
        return models.setdefault(model_id, {"id": model_id, "here": None, "served_by": [], "offered_by": []})

    for m in status.get("models", []):
        model(m["id"])["here"] = m["state"]
    for peer in (status.get("mesh") or {}).get("peers", []):
        for model_id in peer.get("loaded", []):
            model(model_id)["served_by"].append(peer["peer_id"])
        for model_id in peer.get("available", []):
            if peer["peer_id"] not in model(model_id)["served_by"]:
                model(model_id)["offered_by"].append(peer["peer_id"])
    return {"console_url": base, "mesh": sorted(models.values(), key=lambda m: m["id"])}, ""


def _peers(ids: list[str]) -> str:
    return ", ".join(f"{i[:12]}…" for i in ids[:3]) + (f" +{len(ids) - 3}" if len(ids) > 3 else "")


def _kind(layout: ModelLayout | None) -> str:
    """`dense`, or `MoE 128x8, experts 94 %` (experts x used per token, the experts' share of the bytes)."""
    if layout is None or not layout.is_moe:
        return "dense" if layout is not None else "?"
    share = 100 * layout.expert_bytes / max(1, layout.total_bytes)
    return f"MoE {layout.experts}x{layout.experts_used}, experts {share:.0f} %"
