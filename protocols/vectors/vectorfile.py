"""What every vector generator here shares: render the JSON one way, write it or check it (`--check`), and check
that each negative vector fails with the reason it documents.

The generators import this file as a sibling module (they put their own folder on `sys.path`), so each stays a
plain script: `python protocols/vectors/generate_x.py [--check]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshp2p.wire.errors import WireError

HERE = Path(__file__).resolve().parent


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def write_or_check(doc: str, build: Callable[[], dict[str, dict[str, Any]]], script: str,
                   argv: list[str] | None = None) -> int:
    """Write each `{file name: vectors}` from `build()` into this folder, or with `--check` return 1 (and say which)
    when a file on disk differs from what would be written."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a vectors file differs from what it would be")
    args = parser.parse_args(argv)
    stale = []
    for name, vectors in build().items():
        path = HERE / name
        text = render(vectors)
        if not args.check:
            path.write_text(text, encoding="utf-8")
        elif not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    if stale:
        print(f"stale vectors: {', '.join(stale)}; run protocols/vectors/{script}", file=sys.stderr)
        return 1
    return 0


def reason_of(fn: Callable[[], object]) -> str | None:
    """The reason `fn` fails with, or None; every negative vector is checked to fail as documented."""
    try:
        fn()
    except WireError as exc:
        return exc.reason
    return None


def expect(reason: str, fn: Callable[[], object], name: str) -> str:
    """`reason`, once `fn` is seen to fail with it (a vector whose documented reason is wrong stops the generator)."""
    got = reason_of(fn)
    if got != reason:
        raise AssertionError(f"vector {name}: expected {reason}, implementation says {got}")
    return reason


def pad_to(make: Callable[[str], bytes], size: int) -> bytes:
    """Choose a padding text so the encoding is exactly `size` bytes (its length header may grow on the way)."""
    n = max(0, size - len(make("")))
    while n > 0 and len(make("x" * n)) > size:
        n -= 1
    value = make("x" * n)
    if len(value) != size:
        raise AssertionError(f"cannot pad to {size}")
    return value
