"""`$MESHP2P_HOME/config.toml`: settings that are policy rather than per-run flags.

Only the `[blackboard]` table exists today:

```toml
[blackboard]
rate_per_min = 10       # posts accepted per author per minute (the node holds itself to it too)
max_text_bytes = 4096   # may only lower the protocol's limit
ttl_hours = 48          # posts older than this are refused and pruned
capacity = 500          # posts kept: the newest N
scrub = true            # redact obvious secrets before posting (API keys, private keys, e-mails)
```

A missing file means the defaults. An unknown key or a wrong type is an error at start, so a typo never
silently leaves a default in place.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshp2p.blackboard.limits import BlackboardLimits
from meshp2p.errors import ConfigError
from meshp2p.home import meshp2p_home

CONFIG_FILE_NAME = "config.toml"
_BLACKBOARD_KEYS = {"rate_per_min", "max_text_bytes", "ttl_hours", "capacity", "scrub"}


@dataclass(frozen=True)
class BlackboardConfig:
    limits: BlackboardLimits = field(default_factory=BlackboardLimits)
    #: Redact obvious secrets from the node's own posts before signing (meshp2p/blackboard/scrub.py).
    scrub: bool = True


@dataclass(frozen=True)
class Config:
    blackboard: BlackboardConfig = field(default_factory=BlackboardConfig)


def config_path() -> Path:
    return meshp2p_home() / CONFIG_FILE_NAME


def load_config(path: Path | None = None) -> Config:
    """The config in `path` (default: the data dir's), or the defaults when there is no file."""
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="fix its permissions or remove it") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the line it names") from None
    unknown = set(data) - {"blackboard"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}", hint="the only table is [blackboard]")
    return Config(blackboard=_blackboard(data.get("blackboard", {}), path))


def _blackboard(table: Any, path: Path) -> BlackboardConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [blackboard] is not a table", hint="write it as a [blackboard] section")
    unknown = set(table) - _BLACKBOARD_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown [blackboard] key(s) {sorted(unknown)}",
                          hint=f"known keys: {', '.join(sorted(_BLACKBOARD_KEYS))}")
    defaults = BlackboardLimits()
    ttl_hours = table.get("ttl_hours", defaults.ttl_s / 3600)
    if type(ttl_hours) not in (int, float):
        raise ConfigError(f"{path}: [blackboard] ttl_hours={ttl_hours!r}", hint="use a number of hours")
    scrub = table.get("scrub", True)
    if type(scrub) is not bool:
        raise ConfigError(f"{path}: [blackboard] scrub={scrub!r}", hint="use true or false")
    limits = BlackboardLimits(
        rate_per_min=table.get("rate_per_min", defaults.rate_per_min),
        max_text_bytes=table.get("max_text_bytes", defaults.max_text_bytes),
        ttl_s=round(ttl_hours * 3600),
        capacity=table.get("capacity", defaults.capacity),
    )
    return BlackboardConfig(limits=limits, scrub=scrub)
