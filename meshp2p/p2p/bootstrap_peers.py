"""Where a node's first peers come from: the shipped list, `MESHP2P_BOOTSTRAP`, and `--bootstrap` flags."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

BOOTSTRAP_ENV = "MESHP2P_BOOTSTRAP"


def default_list_path() -> Path:
    """bootstrap/peers.txt of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "bootstrap" / "peers.txt"


def read_peer_list(path: Path) -> list[str]:
    """Multiaddrs from a file: one per line, `#` starts a comment."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def bootstrap_peers(flags: Iterable[str] = (), env: Mapping[str, str] | None = None,
                    default_list: Path | None = None) -> tuple[str, ...]:
    """Flags, then the environment (space or comma separated), then the shipped list; duplicates dropped."""
    env = os.environ if env is None else env
    from_env = [a for a in re.split(r"[\s,]+", env.get(BOOTSTRAP_ENV, "")) if a]
    shipped = read_peer_list(default_list or default_list_path())
    return tuple(dict.fromkeys([*flags, *from_env, *shipped]))
