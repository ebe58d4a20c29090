"""`meshp2p drop MODEL`: stop serving a model on the running node; the mesh hears of it at once."""

from __future__ import annotations

import argparse

import httpx
from rich.console import Console

from meshp2p.api.console_client import console_headers, console_url
from meshp2p.errors import MeshP2PError


def run_drop(args: argparse.Namespace, console: Console) -> int:
    url = f"{console_url(args.console)}/api/models/{args.model}/drop"
    try:
        response = httpx.post(url, timeout=30, headers=console_headers())
    except httpx.HTTPError as exc:
        raise MeshP2PError(f"could not reach the node at {url}: {exc}", hint="is it running? (`meshp2p up`)") from exc
    if response.status_code != 200:
        message = response.json().get("error", {}).get("message", response.text)
        raise MeshP2PError(message, hint="`meshp2p status` lists the models this node serves")
    console.print(f"dropped [bold]{args.model}[/]: this node no longer serves it")
    return 0
