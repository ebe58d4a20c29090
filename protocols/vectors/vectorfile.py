"""What every vector generator here shares: render the JSON one way, and write it or check it (`--check`).

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
