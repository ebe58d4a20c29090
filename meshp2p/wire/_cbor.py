"""Strict canonical CBOR: one accepted encoding per value, and typed field readers for decoded maps.

Decoders re-encode what they read and compare it with the input, so the bytes a signature covers are the
bytes that were sent, trailing garbage or a second encoding of the same value is rejected, and other
languages need only a deterministic encoder (RFC 8949 §4.2.1), not cbor2's quirks. Every failure is a
`WireError`: the decoder is a C extension fed hostile bytes, so nothing else may leak out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2

from meshp2p.wire.errors import WireError

#: Our formats nest three deep (record → body → list); the slack is for fields added to bodies later.
MAX_CBOR_DEPTH = 8
#: Every integer field fits a signed 64-bit integer, so implementations in any language can hold it.
INT64_MAX = 2**63 - 1
#: CBOR's native integer range; wider integers need tags, which no format uses.
_CBOR_INT_MIN = -(2**64)
_CBOR_INT_MAX = 2**64 - 1


def dumps(obj: object) -> bytes:
    """The canonical encoding: shortest integer and float forms, map keys in bytewise order of their encoding."""
    try:
        return cbor2.dumps(obj, canonical=True)
    except Exception as exc:  # values from callers: cbor2 raises several unrelated types
        raise WireError("malformed", f"cannot encode as CBOR: {exc}") from None


def loads(data: bytes) -> object:
    """Decode exactly one canonical data item made of plain types (map, array, text, bytes, int, float, bool, null)."""
    try:
        obj: object = cbor2.loads(data, allow_indefinite=False, allow_duplicate_keys=False, max_depth=MAX_CBOR_DEPTH)
    except Exception as exc:  # hostile input: any decoder failure means malformed
        raise WireError("malformed", f"not CBOR: {exc}") from None
    _check_plain(obj)
    if dumps(obj) != data:
        raise WireError("malformed", "not canonical CBOR (or trailing bytes)")
    return obj


def loads_map(data: object, *, max_bytes: int) -> dict[str, Any]:
    """Check the size, then decode a top-level map; the size check comes first so oversized input costs nothing."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("malformed", f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise WireError("oversized", f"{len(data)} bytes > {max_bytes}")
    obj = loads(data)
    if type(obj) is not dict:
        raise WireError("malformed", "top level is not a map")
    return obj


def _check_plain(obj: object) -> None:
    """Only the types the specs allow: tags, simple values and undefined mean a different format."""
    if type(obj) is dict:
        for key, value in obj.items():
            if type(key) is not str:
                raise WireError("malformed", "map key is not text")
            _check_plain(value)
    elif type(obj) is list:
        for item in obj:
            _check_plain(item)
    elif type(obj) is int:
        if not _CBOR_INT_MIN <= obj <= _CBOR_INT_MAX:
            raise WireError("malformed", "integer out of range")
    elif type(obj) not in (str, bytes, bool, float, type(None)):
        raise WireError("malformed", f"unsupported CBOR item {type(obj).__name__}")


def check_version(m: dict[str, Any], *, version: int = 1) -> None:
    """`v` is read before anything else, so a newer format gets `bad_version`, not `malformed`."""
    v = m.get("v")
    if type(v) is not int:
        raise WireError("malformed", "missing or non-integer 'v'")
    if v != version:
        raise WireError("bad_version", f"v={v}, expected {version}")


def check_keys(m: dict[str, Any], keys: Iterable[str], *, where: str = "top level") -> None:
    """Exactly these keys: an unknown top-level key could change meaning, so it is rejected."""
    expected = set(keys)
    got = set(m)
    if got != expected:
        missing = sorted(expected - got)
        extra = sorted(got - expected)
        raise WireError("malformed", f"{where}: missing keys {missing}, unknown keys {extra}")


def loads_typed_map(data: object, *, max_bytes: int, keys_by_type: Mapping[str, Iterable[str]],
                    what: str = "message") -> tuple[str, dict[str, Any]]:
    """A versioned map whose `t` names its type, with exactly that type's keys: (type, map). The order of the
    checks is every such spec's: size, CBOR, `v`, `t`, keys."""
    m = loads_map(data, max_bytes=max_bytes)
    check_version(m)
    kind = m.get("t")
    if type(kind) is not str or kind not in keys_by_type:
        raise WireError("malformed", f"unknown {what} type {str(kind)[:40]!r}")
    check_keys(m, keys_by_type[kind])
    return kind, m


def require_keys(m: dict[str, Any], keys: Iterable[str], *, where: str) -> None:
    """At least these keys: bodies may carry keys added later, which readers ignore."""
    missing = sorted(set(keys) - set(m))
    if missing:
        raise WireError("malformed", f"{where}: missing keys {missing}")


def get_int(m: dict[str, Any], key: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    value = m.get(key)
    if type(value) is not int:  # bool is an int subclass: `type(...) is` keeps true/false out
        raise WireError("malformed", f"{key!r} is not an integer")
    if not lo <= value <= hi:
        raise WireError("malformed", f"{key!r}={value} outside [{lo}, {hi}]")
    return value


def get_opt_int(m: dict[str, Any], key: str, *, lo: int = 0, hi: int = INT64_MAX) -> int | None:
    return None if m.get(key) is None else get_int(m, key, lo=lo, hi=hi)


def get_float(m: dict[str, Any], key: str, *, lo: float = 0.0) -> float:
    return check_float(m.get(key), key, lo=lo)


def check_float(value: object, what: str, *, lo: float = 0.0) -> float:
    if type(value) is not float:
        raise WireError("malformed", f"{what!r} is not a float")
    if not math.isfinite(value) or value < lo:
        raise WireError("malformed", f"{what!r}={value} not finite or below {lo}")
    return value


def get_bool(m: dict[str, Any], key: str) -> bool:
    value = m.get(key)
    if type(value) is not bool:
        raise WireError("malformed", f"{key!r} is not a bool")
    return value


def get_bytes(m: dict[str, Any], key: str, *, size: int | None = None, max_size: int | None = None) -> bytes:
    value = m.get(key)
    if type(value) is not bytes:
        raise WireError("malformed", f"{key!r} is not a byte string")
    if size is not None and len(value) != size:
        raise WireError("malformed", f"{key!r} is {len(value)} bytes, expected {size}")
    if max_size is not None and len(value) > max_size:
        raise WireError("malformed", f"{key!r} is {len(value)} bytes > {max_size}")
    return value


def check_text(value: object, what: str, *, max_chars: int, min_chars: int = 0) -> str:
    if type(value) is not str:
        raise WireError("malformed", f"{what!r} is not text")
    if not min_chars <= len(value) <= max_chars:
        raise WireError("malformed", f"{what!r} has {len(value)} characters, allowed {min_chars}..{max_chars}")
    return value


def get_text(m: dict[str, Any], key: str, *, max_chars: int, min_chars: int = 0) -> str:
    return check_text(m.get(key), key, max_chars=max_chars, min_chars=min_chars)


def get_opt_text(m: dict[str, Any], key: str, *, max_chars: int) -> str | None:
    return None if m.get(key) is None else get_text(m, key, max_chars=max_chars)


def get_text_list(
    m: dict[str, Any], key: str, *, max_items: int, max_chars: int, min_items: int = 0
) -> tuple[str, ...]:
    value = m.get(key)
    if type(value) is not list:
        raise WireError("malformed", f"{key!r} is not an array")
    if not min_items <= len(value) <= max_items:
        raise WireError("malformed", f"{key!r} has {len(value)} items, allowed {min_items}..{max_items}")
    return tuple(check_text(item, key, max_chars=max_chars) for item in value)


def get_map(m: dict[str, Any], key: str) -> dict[str, Any]:
    value = m.get(key)
    if type(value) is not dict:
        raise WireError("malformed", f"{key!r} is not a map")
    return value
