"""The `meshp2p` command: argument parsing and dispatch. Each command lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.logging import RichHandler

from meshp2p import __version__
from meshp2p.errors import MeshP2PError
from meshp2p.inference.build import BACKENDS
from meshp2p.node import DEFAULT_API_PORT, DEFAULT_CONSOLE_PORT

DESCRIPTION = """\
meshp2p pools spare GPUs and CPUs on ordinary machines to serve LLMs. Every node answers on an
OpenAI-compatible API (http://localhost:9337/v1), whichever machine actually holds the model.

Environment:
  MESHP2P_HOME       data dir: identity, model store, logs (default ~/.meshp2p)
  MESHP2P_LLAMA_DIR  folder with llama-server / ggml-rpc-server to use instead of the built ones
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshp2p", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"meshp2p {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = commands.add_parser(
        "up",
        help="serve models on the OpenAI-compatible API",
        description="Start llama-server for each model and answer on an OpenAI-compatible API. "
        "With no --model, serves the embedded default model (gemma-3-270m). Ctrl-C stops everything.",
    )
    up.add_argument("--model", "-m", action="append", metavar="NAME|PATH", default=None,
                    help="a .gguf file, a catalog name, or a model in $MESHP2P_HOME/models; repeat for several "
                    "models (one llama-server each; the first is the default). Default: gemma-3-270m")
    up.add_argument("--port", type=int, default=DEFAULT_API_PORT,
                    help=f"port of the OpenAI API (default {DEFAULT_API_PORT})")
    up.add_argument("--console", type=int, default=DEFAULT_CONSOLE_PORT, metavar="PORT",
                    help=f"port of the console and its /api/status (default {DEFAULT_CONSOLE_PORT}; 0 turns it off)")
    up.add_argument("--ctx-size", "-c", type=int, default=None, metavar="TOKENS",
                    help="context size per model in tokens (default: llama.cpp's, the model's training context)")
    up.add_argument("--max-vram", type=float, default=None, metavar="GB",
                    help="GPU memory this node may use; a model larger than 1.1 x GB runs on the CPU, 0 keeps "
                    "every model on the CPU (default: no limit)")
    up.add_argument("--threads", "-t", type=int, default=None,
                    help="CPU threads per llama-server (default: llama.cpp's choice)")
    up.add_argument("--listen-all", action="store_true",
                    help="listen on every interface (0.0.0.0) instead of 127.0.0.1 only; anyone who can reach "
                    "this machine can then use the API")
    up.add_argument("--no-build", action="store_true",
                    help="fail instead of building llama.cpp when no binaries are found")

    doctor = commands.add_parser(
        "doctor", help="check llama.cpp binaries, the default model and ports",
        description="Say what meshp2p found (llama.cpp binaries and version, default model, data dir, ports), "
        "what is missing, and the command that fixes it. Exit status 1 when something required is missing.")
    doctor.add_argument("--port", type=int, default=DEFAULT_API_PORT, help="API port to check is free")

    llama = commands.add_parser("llama", help="manage the llama.cpp build",
                                description="Manage the llama.cpp binaries meshp2p runs.")
    llama_cmds = llama.add_subparsers(dest="llama_command", metavar="ACTION", required=True)
    build = llama_cmds.add_parser(
        "build", help="build the pinned llama.cpp into the cache",
        description="Build llama-server and ggml-rpc-server from the pinned release with the recipe in "
        "vendor/llama.cpp/, into ~/.cache/meshp2p/llama.cpp/<tag>[-backend]/. About 5 minutes on 2 cores.")
    build.add_argument("--backend", choices=BACKENDS, default="cpu", help="GPU backend to build for (default cpu)")
    build.add_argument("--jobs", "-j", type=int, default=None, help="parallel compile jobs (default: all cores)")
    build.add_argument("--native", action="store_true",
                       help="optimise for this CPU (the binaries may not run on other CPUs)")

    status = commands.add_parser("status", help="show the running node's status",
                                 description="Ask the node running with this MESHP2P_HOME (or --console PORT) "
                                 "for its status.")
    status.add_argument("--console", type=int, default=None, metavar="PORT",
                        help="console port of the node (default: read from $MESHP2P_HOME/node.json)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=True)],
    )
    # Per-request lines from the HTTP client and server drown what an operator needs; -v brings them back.
    for noisy in ("httpx", "httpcore", "meshp2p.http"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.command == "up":
            from meshp2p.cli.up import run_up

            return run_up(args, console)
        if args.command == "doctor":
            from meshp2p.cli.doctor import run_doctor

            return run_doctor(args, console)
        if args.command == "llama":
            from meshp2p.inference.build import build_llama_cpp

            build_llama_cpp(backend=args.backend, jobs=args.jobs, native=args.native, console=console)
            return 0
        if args.command == "status":
            from meshp2p.cli.status import run_status

            return run_status(args, console)
    except MeshP2PError as exc:
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]→[/] {exc.hint}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
