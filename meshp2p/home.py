"""Where meshp2p keeps its state (MESHP2P_HOME) and its caches."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "MESHP2P_HOME"


def meshp2p_home() -> Path:
    """The node's data dir: identity, model store, logs, runtime info. `MESHP2P_HOME` overrides `~/.meshp2p`."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".meshp2p").expanduser()


def models_dir() -> Path:
    return meshp2p_home() / "models"


def logs_dir() -> Path:
    return meshp2p_home() / "logs"


def runtime_file() -> Path:
    """Written by a running node so other commands (status, blackboard, ...) find its ports."""
    return meshp2p_home() / "node.json"


def children_file() -> Path:
    """The PIDs and command lines of the llama.cpp processes the running node started (inference/processes.py)."""
    return meshp2p_home() / "children.json"


def cache_dir() -> Path:
    """Build outputs shared by every MESHP2P_HOME of this user (llama.cpp binaries)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "meshp2p"
