"""Shared by the fuzz tests: a bounded, reproducible hypothesis run that counts its inputs, and hostile strategies.

Every decoder that takes bytes from the network or a user is fed `FUZZ_EXAMPLES` generated inputs, and the only
exception allowed out is the decoder's documented one (`WireError` for the wire formats). Runs are derandomized
with no example database, so CI sees the same inputs every time; the count is asserted, not the time it took.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshp2p.wire import WireError

FUZZ_EXAMPLES = 10_000

#: Derandomized and without a database: the same inputs on every run and every machine.
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(strategy: st.SearchStrategy[Any], check: Callable[[Any], object],
         allowed: tuple[type[BaseException], ...] = (WireError,)) -> int:
    """Feed every input `strategy` generates to `check`; exceptions other than `allowed` fail. Returns the count."""
    count = 0

    @FUZZ_SETTINGS
    @given(strategy)
    def run(value: Any) -> None:
        nonlocal count
        count += 1
        with contextlib.suppress(*allowed):
            check(value)

    run()
    return count


def flip_bit(data: bytes, bit: int) -> bytes:
    if not data:
        return data
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


#: Wrong values for any field: each type, the edges of each range, the too-long, the nested. Drawn from a list
#: rather than generated, because generating nested values costs hypothesis milliseconds per example.
NASTY_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 255, 65535, 65536, 2**31, 2**32, 2**53 + 1, 2**63, 2**64 - 1, -(2**63), -(2**64),
    2**70, 0.0, -0.0, 1.5, -1.5, 1e308, float("nan"), float("inf"), float("-inf"),
    "", "x", "default", "a" * 65, "a" * 300, "a" * 5000, "\x00", "\u00e9\u4e2d", "../../etc", "/v1/x", "mp1abc",
    b"", b"\x00", b"\x00" * 16, b"\xff" * 32, b"x" * 33, b"x" * 64, b"x" * 65, b"x" * 5000,
    [], [None], [1, 2], ["a"], ["a"] * 70, [b""], [[[]]], [{"a": 1}],
    {}, {"": 0}, {"a": 1}, {"a": {"b": [1, {"c": b""}]}}, {1: "int key"}, {"x" * 100: 1.0},
]

#: Random CBOR values, for the tail the list above does not cover (slower: kept to a share of the inputs).
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=4,
)
wrong_values = st.sampled_from(NASTY_VALUES)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a nested map/list value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k in sorted(value, key=repr):
            out += _paths(value[k], (*prefix, k))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _apply(value: Any, path: tuple[Any, ...], edit: str, new: Any) -> Any:
    if not path:
        if edit == "add" and isinstance(value, dict):
            return {**value, "zz" if not isinstance(new, str) else new[:8]: new}
        return new
    head, rest = path[0], path[1:]
    if edit == "delete" and not rest:
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != head}
        return [v for i, v in enumerate(value) if i != head]
    if isinstance(value, dict):
        return {**value, head: _apply(value[head], rest, edit, new)}
    return [*value[:head], _apply(value[head], rest, edit, new), *value[head + 1:]]


def mutated(valid: Sequence[Any]) -> st.SearchStrategy[Any]:
    """One of `valid` with one place in it changed: replaced by a wrong value, deleted, or given an extra key."""
    cases = [(v, _paths(v)) for v in valid]

    def edit(choice: tuple[int, int, str, Any]) -> Any:
        which, where, how, new = choice
        value, paths = cases[which % len(cases)]
        return _apply(value, paths[where % len(paths)], how, new)

    return st.tuples(st.integers(min_value=0), st.integers(min_value=0),
                     st.sampled_from(["replace", "replace", "delete", "add"]), wrong_values).map(edit)


def encode_cbor(value: Any) -> bytes:
    """Canonical CBOR of anything `cbor_values` makes (bignums and all): the decoders' problem, not ours."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError):
        return b""


def hostile_bytes(valid: Sequence[bytes], *, max_random: int = 300) -> st.SearchStrategy[bytes]:
    """Random bytes, and bit flips, truncations, splices and duplications of the valid vectors."""
    pick = st.sampled_from(list(valid))
    return st.one_of(
        st.binary(max_size=max_random),
        st.tuples(pick, st.integers(min_value=0)).map(lambda t: flip_bit(*t)),
        st.tuples(pick, st.integers(min_value=0), st.integers(min_value=0)).map(
            lambda t: flip_bit(flip_bit(t[0], t[1]), t[2])),
        pick.flatmap(lambda v: st.integers(0, max(len(v) - 1, 0)).map(lambda cut: v[:cut])),
        st.tuples(pick, st.integers(min_value=0), st.binary(min_size=1, max_size=8)).map(
            lambda t: t[0][: t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1):]),
        pick.map(lambda v: v + v),
    )


def hostile_cbor(valid_maps: Sequence[dict[str, Any]], resign: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 ) -> st.SearchStrategy[bytes]:
    """Valid maps with one field wrong (re-signed with `resign`, so the checks after the signature run too)."""
    maps = mutated(valid_maps)
    out = maps.map(encode_cbor)
    if resign is not None:
        def signed(m: Any) -> bytes:
            if not isinstance(m, dict):
                return encode_cbor(m)
            try:
                return encode_cbor(resign({k: v for k, v in m.items() if k != "sig"}))
            except WireError:  # the mutation made it unsignable (a key of the wrong type, say)
                return encode_cbor(m)
        out = out | maps.map(signed)
    return out
