"""`meshp2p llama build`: build the pinned llama.cpp into the cache (see vendor/llama.cpp/)."""

from __future__ import annotations

import argparse

from rich.console import Console

from meshp2p.cli.progress import RichProgress
from meshp2p.inference.build import build_llama_cpp


def run_llama(args: argparse.Namespace, console: Console) -> int:
    # `build` is the only action today; argparse requires it.
    build_llama_cpp(backend=args.backend, jobs=args.jobs, native=args.native, progress=RichProgress(console))
    return 0
