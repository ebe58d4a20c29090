"""API keys: the key text a client sends, and the record kept of it (its SHA-256, never the text).

A key is `mp-sk-` and 32 random bytes (urlsafe base64, 43 characters): 256 bits, so a hash of it needs no salt or
slow KDF to be safe at rest. Only `sha256(key text)` in hex is stored; a presented key is hashed and looked up
by its hash, so the lookup compares hashes (which tell an attacker nothing about a key), never key text.

Keys are on while the keys file exists, even when every key in it is revoked: revoking the last key must not
silently open the node to everyone (delete the file to turn keys off). Revoked keys stay in the file, marked, so
`meshp2p keys list` still shows what they did.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshp2p.errors import ConfigError

KEY_PREFIX = "mp-sk-"
KEY_BYTES = 32
#: Public id of a key (listed, used to revoke): random, unrelated to the key text.
ID_BYTES = 6


def new_key_text() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def key_hash(text: str) -> str:
    """What is stored of a key: its SHA-256, hex."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    sha256: str
    created: float
    #: Requests per minute this key may make (None: no limit of its own).
    rate_rpm: int | None = None
    #: Requests this key may have in flight at once, streams included (None: no limit of its own).
    concurrent: int | None = None
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sha256": self.sha256, "created": self.created,
                "rate_rpm": self.rate_rpm, "concurrent": self.concurrent, "revoked_at": self.revoked_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ApiKey:
        def optional_int(name: str) -> int | None:
            value = data.get(name)
            return None if value is None else int(value)

        revoked = data.get("revoked_at")
        return cls(id=str(data["id"]), name=str(data["name"]), sha256=str(data["sha256"]).lower(),
                   created=float(data["created"]), rate_rpm=optional_int("rate_rpm"),
                   concurrent=optional_int("concurrent"), revoked_at=None if revoked is None else float(revoked))


@dataclass(frozen=True)
class Keyring:
    """Every key of this node, revoked ones included; immutable, so a reload swaps it whole."""

    keys: tuple[ApiKey, ...] = ()
    _by_hash: dict[str, ApiKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_hash", {k.sha256: k for k in self.keys})

    def find(self, text: str) -> ApiKey | None:
        """The key whose text this is (revoked or not), by the hash of `text`."""
        return self._by_hash.get(key_hash(text))

    def create(self, *, name: str | None, now: float, rate_rpm: int | None = None,
               concurrent: int | None = None) -> tuple[Keyring, ApiKey, str]:
        """A ring with one more key; returns it, the key's record and its text (shown once, never stored)."""
        for limit, flag in ((rate_rpm, "--rate"), (concurrent, "--concurrent")):
            if limit is not None and limit < 1:
                raise ConfigError(f"{flag} must be at least 1", hint=f"leave {flag} out for no limit of the key's own")
        key_id = _unused_id({k.id for k in self.keys})
        name = (name or "").strip() or f"key-{key_id[:4]}"
        if any(k.name == name and not k.revoked for k in self.keys):
            raise ConfigError(f"a key named '{name}' exists already", hint="choose another --name, or revoke it first")
        text = new_key_text()
        record = ApiKey(id=key_id, name=name, sha256=key_hash(text), created=now, rate_rpm=rate_rpm,
                        concurrent=concurrent)
        return Keyring((*self.keys, record)), record, text

    def select(self, which: str) -> ApiKey:
        """The one key `which` names: an exact name, an exact id or a unique id prefix."""
        which = which.strip()
        exact = [k for k in self.keys if which in (k.name, k.id)]
        live = [k for k in exact if not k.revoked]
        found = live or exact or [k for k in self.keys if which and k.id.startswith(which)]
        if not found:
            raise ConfigError(f"no key is named or has the id '{which}'", hint="`meshp2p keys list` shows them")
        if len(found) > 1:
            raise ConfigError(f"'{which}' matches {len(found)} keys ({', '.join(k.id for k in found)})",
                              hint="give the whole id")
        return found[0]

    def revoke(self, which: str, *, now: float) -> tuple[Keyring, ApiKey]:
        target = self.select(which)
        if target.revoked:
            return self, target
        revoked = replace(target, revoked_at=now)
        return Keyring(tuple(revoked if k.id == target.id else k for k in self.keys)), revoked

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, data: Any) -> Keyring:
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError('not a keys file: expected {"version": 1, "keys": [...]}')
        return cls(tuple(ApiKey.from_json(k) for k in _dicts(data["keys"])))


def _dicts(items: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a key entry is not an object")
        yield item


def _unused_id(taken: set[str]) -> str:
    while True:
        candidate = secrets.token_hex(ID_BYTES)
        if candidate not in taken:
            return candidate
