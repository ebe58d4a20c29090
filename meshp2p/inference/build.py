"""Running the project's llama.cpp build recipe (`vendor/llama.cpp/build.sh`) with a progress bar.

The recipe is a shell script so it also works without Python; this module only drives it and turns
cmake's `[ 42%]` lines into a rich progress bar.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from meshp2p.errors import BuildFailed
from meshp2p.inference.binaries import LLAMA_CPP_TAG

BACKENDS = ("cpu", "cuda", "metal", "vulkan")
_PERCENT_RE = re.compile(r"^\[\s*(\d+)%\]")
_TAIL_LINES = 40
_PLAIN_STEP_PERCENT = 10


def recipe_dir() -> Path:
    """vendor/llama.cpp of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "vendor" / "llama.cpp"


def build_llama_cpp(
    *, backend: str = "cpu", jobs: int | None = None, native: bool = False, console: Console | None = None
) -> None:
    """Build and install llama.cpp into the per-version cache, showing progress; raise BuildFailed."""
    if backend not in BACKENDS:
        raise BuildFailed(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    script = recipe_dir() / "build.sh"
    if not script.is_file():
        raise BuildFailed(
            f"the llama.cpp build recipe is not at {script}",
            hint="install meshp2p from a source checkout (pip install -e .), which carries vendor/llama.cpp/",
        )
    console = console or Console(stderr=True)
    cmd = ["bash", str(script), "--backend", backend, "--jobs", str(jobs or os.cpu_count() or 2)]
    if native:
        cmd.append("--native")
    env = {**os.environ, "PYTHON": sys.executable}
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with Progress(
        TextColumn("[bold]llama.cpp {task.fields[tag]}[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=100, tag=LLAMA_CPP_TAG)
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            reported = -_PLAIN_STEP_PERCENT
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                if line.startswith("== "):
                    progress.update(task, description=line[3:])
                    if not console.is_terminal:
                        console.print(line, markup=False, highlight=False)
                match = _PERCENT_RE.match(line)
                if match:
                    percent = int(match.group(1))
                    progress.update(task, completed=percent)
                    if not console.is_terminal and percent >= reported + _PLAIN_STEP_PERCENT:
                        # Logs (CI) get a line every few percent instead of a live bar.
                        console.print(f"   {percent}%", highlight=False)
                        reported = percent
            code = proc.wait()
        if code == 0:
            progress.update(task, completed=100, description="installed")
    if code != 0:
        console.print("\n".join(tail), markup=False, highlight=False)
        raise BuildFailed(
            f"building llama.cpp {LLAMA_CPP_TAG} failed (exit {code}); the last lines are above",
            hint="a fresh machine needs gcc, g++, cmake and make; rerun `meshp2p llama build` after fixing",
        )
