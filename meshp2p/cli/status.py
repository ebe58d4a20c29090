"""`meshp2p status`: ask a running node (found through $MESHP2P_HOME/node.json) for its status."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from meshp2p.api.console_client import console_url
from meshp2p.errors import MeshP2PError


def run_status(args: argparse.Namespace, console: Console) -> int:
    url = console_url(args.console) + "/api/status"
    try:
        status = httpx.get(url, timeout=5).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise MeshP2PError(f"could not read {url}: {exc}", hint="is the node still running? (`meshp2p up`)") from exc
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    node = status["node"]
    table = Table(title=f"meshp2p {node['version']} · {node['api_url']}")
    for column in ("model", "state", "pid", "restarts", "size", "speculation"):
        table.add_column(column)
    for m in status["models"]:
        table.add_row(m["id"], m["state"], str(m["pid"]), str(m["restarts"]), f"{m['size_bytes'] / 1e6:.1f} MB",
                      _speculation(m.get("speculation")))
    out = Console()
    out.print(table)
    if status.get("hardware"):
        out.print(hardware_line(status["hardware"]), highlight=False)
    mesh, board = status.get("mesh"), status.get("blackboard")
    if mesh:
        label = mesh["name"] or ("private mesh" if mesh["private"] else "mesh")
        out.print(f"{label}: {len(mesh['peers'])} node(s) in view", highlight=False)
    if board:
        rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(board["rejected"].items())) or "none"
        out.print(f"blackboard: {board['synced_posts']} post(s) received by sync, {board['watchers']} watcher(s), "
                  f"refused: {rejected}", highlight=False)
    return 0


def hardware_line(hw: dict[str, Any]) -> str:
    """`hardware: CPU 12% · RAM 3.1/15.6 GB · GPU0 NVIDIA H100 87% 59.8/79.6 GB 64°C`: what is unknown is left out."""
    parts = []
    if hw.get("cpu_pct") is not None:
        parts.append(f"CPU {hw['cpu_pct']:.0f}%")
    if hw.get("ram_total_mb"):
        parts.append(f"RAM {hw['ram_used_mb'] / 1024:.1f}/{hw['ram_total_mb'] / 1024:.1f} GB")
    for gpu in hw.get("gpus") or ():
        words = [f"GPU{gpu['index']} {gpu['name']}"]
        if gpu.get("utilization_pct") is not None:
            words.append(f"{gpu['utilization_pct']:.0f}%")
        if gpu.get("vram_total_mb"):
            words.append(f"{(gpu.get('vram_used_mb') or 0) / 1024:.1f}/{gpu['vram_total_mb'] / 1024:.1f} GB")
        if gpu.get("temperature_c") is not None:
            words.append(f"{gpu['temperature_c']:.0f}°C")
        parts.append(" ".join(words))
    return "hardware: " + (" · ".join(parts) or "unknown")


def _speculation(shown: dict[str, Any] | None) -> str:
    """`qwen2.5-0.5b-instruct, 71% of 2048 accepted`, `ngram, none drafted yet`, or "" when it does not speculate."""
    if not shown:
        return ""
    what = shown["draft"] or shown["mode"]
    if not shown["drafted_tokens"]:
        return f"{what}, none drafted yet"
    return f"{what}, {shown['acceptance_rate']:.0%} of {shown['drafted_tokens']} accepted"
