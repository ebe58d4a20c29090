"""Running the project's llama.cpp build recipe (`vendor/llama.cpp/build.sh`) with a progress bar.

The recipe is a shell script so it also works without Python; this module only drives it and turns its
`== stage` lines and cmake's `[ 42%]` lines into progress reports (inference/progress.py).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

from meshp2p.errors import BuildFailed
from meshp2p.inference.binaries import LLAMA_CPP_TAG
from meshp2p.inference.progress import SILENT, ProgressSink

BACKENDS = ("cpu", "cuda", "metal", "vulkan")
_PERCENT_RE = re.compile(r"^\[\s*(\d+)%\]")
_TAIL_LINES = 40


def recipe_dir() -> Path:
    """The llama.cpp pin, recipe and patches: `meshp2p/_llama_cpp/`, package data in an installed wheel and a link
    to `vendor/llama.cpp/` in a source checkout (setup.cfg ships it)."""
    return Path(__file__).resolve().parents[1] / "_llama_cpp"


def build_llama_cpp(
    *, backend: str = "cpu", jobs: int | None = None, native: bool = False, progress: ProgressSink = SILENT
) -> None:
    """Build and install llama.cpp into the per-version cache, reporting progress; raise BuildFailed."""
    if backend not in BACKENDS:
        raise BuildFailed(f"unknown backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    script = recipe_dir() / "build.sh"
    if not script.is_file():
        raise BuildFailed(
            f"the llama.cpp build recipe is not at {script}",
            hint="reinstall meshp2p (`pip install --force-reinstall meshp2p`): the recipe ships with the package",
        )
    cmd = ["bash", str(script), "--backend", backend, "--jobs", str(jobs or os.cpu_count() or 2)]
    if native:
        cmd.append("--native")
    env = {**os.environ, "PYTHON": sys.executable}
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    progress.begin(f"llama.cpp {LLAMA_CPP_TAG}", total=100, unit="percent")
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith("== "):
                progress.update(stage=line[3:])
            match = _PERCENT_RE.match(line)
            if match:
                progress.update(completed=int(match.group(1)))
        code = proc.wait()
    if code != 0:
        progress.end(stage="failed")
        progress.say("\n".join(tail))
        raise BuildFailed(
            f"building llama.cpp {LLAMA_CPP_TAG} failed (exit {code}); the last lines are above",
            hint="a fresh machine needs gcc, g++, cmake and make; rerun `meshp2p llama build` after fixing",
        )
    progress.update(completed=100)
    progress.end(stage="installed")
