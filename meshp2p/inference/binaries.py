"""Finding the llama.cpp binaries meshp2p runs.

Search order (first hit wins): `MESHP2P_LLAMA_DIR`, the per-version build cache that
`vendor/llama.cpp/build.sh` fills (GPU builds before the CPU one), then `PATH`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from meshp2p.errors import BinaryNotFound
from meshp2p.home import cache_dir

#: The llama.cpp release meshp2p is pinned to; must equal vendor/llama.cpp/VERSION (a test checks).
LLAMA_CPP_TAG = "b11434"
LLAMA_DIR_ENV = "MESHP2P_LLAMA_DIR"
SERVER_NAME = "llama-server"
#: The RPC server is `ggml-rpc-server` since ~b6000; older trees (and some distributions) call it `rpc-server`.
RPC_SERVER_NAMES = ("ggml-rpc-server", "rpc-server")
GGUF_SPLIT_NAME = "llama-gguf-split"
#: Router statistics for `--moe shard` (inference/calibration.py); builds before it lack it, which only costs the
#: calibration (a weight-norm estimate is used instead).
IMATRIX_NAME = "llama-imatrix"
#: Preference among cached builds: an accelerator build beats the CPU build when both exist.
BACKEND_PREFERENCE = ("cuda", "metal", "vulkan", "")

BUILD_COMMAND = "meshp2p llama build"


@dataclass(frozen=True)
class LlamaBinaries:
    server: Path
    rpc_server: Path | None
    gguf_split: Path | None
    #: Where they were found: "MESHP2P_LLAMA_DIR", "cache" or "PATH".
    source: str
    directory: Path
    #: None in builds made before `--moe shard` existed: `meshp2p llama build` again adds it.
    imatrix: Path | None = None


def build_cache_root() -> Path:
    return cache_dir() / "llama.cpp"


def cached_build_dirs(tag: str = LLAMA_CPP_TAG) -> list[Path]:
    """The bin/ folders of cached builds of `tag`, in order of preference."""
    root = build_cache_root()
    dirs = []
    for backend in BACKEND_PREFERENCE:
        name = f"{tag}-{backend}" if backend else tag
        dirs.append(root / name / "bin")
    return dirs


def _in_dir(directory: Path, source: str) -> LlamaBinaries | None:
    server = directory / SERVER_NAME
    if not _is_executable(server):
        return None
    rpc = next((directory / n for n in RPC_SERVER_NAMES if _is_executable(directory / n)), None)
    split = directory / GGUF_SPLIT_NAME
    imatrix = directory / IMATRIX_NAME
    return LlamaBinaries(server, rpc, split if _is_executable(split) else None, source, directory,
                         imatrix if _is_executable(imatrix) else None)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_llama_binaries(env: Mapping[str, str] | None = None) -> LlamaBinaries:
    """Locate llama-server (and the RPC server if present), or raise BinaryNotFound with the fix."""
    env = os.environ if env is None else env
    override = env.get(LLAMA_DIR_ENV)
    if override:
        base = Path(override).expanduser()
        for candidate in (base, base / "bin"):
            found = _in_dir(candidate, LLAMA_DIR_ENV)
            if found:
                return found
        raise BinaryNotFound(
            f"{LLAMA_DIR_ENV}={override} has no executable {SERVER_NAME} (looked in it and its bin/)",
            hint=f"point {LLAMA_DIR_ENV} at the folder holding {SERVER_NAME}, or unset it",
        )
    for directory in cached_build_dirs():
        found = _in_dir(directory, "cache")
        if found:
            return found
    on_path = shutil.which(SERVER_NAME, path=env.get("PATH"))
    if on_path:
        found = _in_dir(Path(on_path).resolve().parent, "PATH")
        if found:
            return found
    raise BinaryNotFound(
        f"{SERVER_NAME} not found (looked in ${LLAMA_DIR_ENV}, {build_cache_root()}, PATH)",
        hint=f"run `{BUILD_COMMAND}` (builds llama.cpp {LLAMA_CPP_TAG}, ~5 min on 2 cores) "
        f"or set {LLAMA_DIR_ENV}",
    )


#: `version: 0.6.0-dev (build 11434, commit unknown)` in b11434; `version: 4567 (abcdef0)` in older trees.
_VERSION_RE = re.compile(r"version:\s*(?:\S+ \(build (\d+)|(\d+) \()")


def probe_version(binary: Path, timeout_s: float = 10.0) -> str | None:
    """`b<build>` as the binary reports it (`--version`), or None if it cannot tell."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_RE.search(out.stdout + out.stderr)
    return f"b{match.group(1) or match.group(2)}" if match else None
