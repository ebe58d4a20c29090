"""Shared by the wire tests: the vectors files and hypothesis strategies for hostile input."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from meshp2p.wire import Identity, WireError

REPO = Path(__file__).resolve().parents[2]
VECTORS_DIR = REPO / "protocols" / "vectors"


def generator_check(script: str) -> int:
    """Run a vector generator of protocols/vectors/ with `--check`: 0 when the file on disk is what it writes."""
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), VECTORS_DIR / script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code: int = module.main(["--check"])
    return code


def load_vectors(name: str) -> dict[str, Any]:
    vectors: dict[str, Any] = json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))
    return vectors


def identity(vectors: dict[str, Any], name: str) -> Identity:
    return Identity.from_seed(bytes.fromhex(vectors["seeds"][name]))


def ids(cases: list[dict[str, Any]]) -> list[str]:
    return [case["name"] for case in cases]


def expect_reason(reason: str, fn: Callable[[], object]) -> None:
    with pytest.raises(WireError) as info:
        fn()
    assert info.value.reason == reason, info.value


def only_wire_errors(fn: Callable[[], object]) -> bool:
    """Run a decoder on hostile input: True if it accepted, False if WireError; anything else fails the test."""
    try:
        fn()
    except WireError:
        return False
    return True


def flip_bit(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


#: Plain CBOR values, nested a little: what a hostile peer can put in any field.
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=70),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def maps_with_keys(keys: list[str], fixed: dict[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Maps with exactly the format's keys (so decoding gets past the key check) and random values."""
    fixed = fixed or {}
    return st.fixed_dictionaries({k: st.just(fixed[k]) if k in fixed else cbor_values for k in keys})
