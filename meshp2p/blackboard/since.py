"""`--since` as people and agents write it: `90s`, `15m`, `2h`, `3d`, `1w`, an ISO-8601 time, or unix seconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from meshp2p.errors import ConfigError

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, *, now: float) -> int:
    """The time `value` names, in unix milliseconds: a duration back from `now` (seconds), a date/time (ISO 8601;
    UTC unless it says otherwise), or a unix time in seconds. ConfigError (with a hint) for anything else."""
    text = value.strip().lower()
    match = _DURATION_RE.fullmatch(text)
    if match:
        return int((now - float(match.group(1)) * _UNIT_S[match.group(2)]) * 1000)
    try:
        return int(float(text) * 1000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(f"cannot read the time {value!r}",
                          hint="use a duration back from now (90s, 15m, 2h, 3d, 1w), an ISO time "
                          "(2026-11-22T18:00) or unix seconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)
