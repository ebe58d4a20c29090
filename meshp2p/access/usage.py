"""What each API key did: requests, tokens in and out, last use. Kept by the running node, saved for the CLI.

Counts are best effort: tokens are read from the `usage` the model's answer carries (`tokens.py`), so an answer
without one (an error, a stream that did not ask for usage where the family makes it optional) adds requests only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class KeyUsage:
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    last_used: float | None = None


class UsageBook:
    """Usage per key id; `dirty` says whether it changed since the last `saved()`."""

    def __init__(self, entries: Mapping[str, KeyUsage] | None = None) -> None:
        self.entries: dict[str, KeyUsage] = dict(entries or {})
        self.dirty = False

    def request(self, key_id: str, now: float) -> None:
        entry = self.entries.setdefault(key_id, KeyUsage())
        entry.requests += 1
        entry.last_used = now
        self.dirty = True

    def tokens(self, key_id: str, tokens_in: int, tokens_out: int) -> None:
        entry = self.entries.setdefault(key_id, KeyUsage())
        entry.tokens_in += tokens_in
        entry.tokens_out += tokens_out
        self.dirty = True

    def of(self, key_id: str) -> KeyUsage:
        return self.entries.get(key_id) or KeyUsage()

    def saved(self) -> None:
        self.dirty = False

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "keys": {k: asdict(v) for k, v in self.entries.items()}}

    @classmethod
    def from_json(cls, data: Any) -> UsageBook:
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, dict):
            return cls()
        entries = {}
        for key_id, value in keys.items():
            if isinstance(value, dict):
                last = value.get("last_used")
                entries[str(key_id)] = KeyUsage(int(value.get("requests", 0)), int(value.get("tokens_in", 0)),
                                                int(value.get("tokens_out", 0)), None if last is None else float(last))
        return cls(entries)
