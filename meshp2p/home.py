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


def keys_file() -> Path:
    """The API keys' SHA-256 hashes, names and limits (mode 0600); the API asks for a key while it exists."""
    return meshp2p_home() / "keys.json"


def key_usage_file() -> Path:
    """Each key's requests, tokens and last use, saved by the running node for `meshp2p keys list`."""
    return meshp2p_home() / "key-usage.json"


def console_token_file() -> Path:
    """A random token the running node writes at start (mode 0600): this user's own commands send it to the
    console's write endpoints when API keys are on."""
    return meshp2p_home() / "console.token"


def cache_dir() -> Path:
    """Build outputs shared by every MESHP2P_HOME of this user (llama.cpp binaries)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "meshp2p"
