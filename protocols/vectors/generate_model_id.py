"""Write model-id.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Same conventions as generate.py (lowercase hex, every negative vector checked against the implementation to fail
with the reason it names).

    /work/venv/bin/python protocols/vectors/generate_model_id.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_model_id.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meshp2p.wire import model_id as m
from meshp2p.wire.errors import WireError

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import write_or_check

FILE_NAME = "model-id.json"


def pattern(size: int) -> bytes:
    """Bytes too long to write out as hex: byte i is i mod 251 (a prime, so no power-of-two period)."""
    return bytes(i % 251 for i in range(size))


def valid_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for name, data in (("empty", b""), ("abc", b"abc"), ("gguf_magic_only", b"GGUF")):
        cases.append({"name": name, "hex": data.hex(), "id": m.content_id_of(data).text})
    for size in (1_000_000, 3 * 2**20 + 7):
        # Fed in uneven chunks: the id depends on the bytes only, not on how they were read.
        hasher = m.ContentIdHasher()
        data = pattern(size)
        for start in range(0, size, 65_537):
            hasher.update(data[start:start + 65_537])
        assert hasher.result() == m.content_id_of(data)
        cases.append({"name": f"pattern_{size}", "pattern_mod_251": size, "id": hasher.result().text})
    for case in cases:
        assert m.parse_content_id(case["id"]).text == case["id"]
    return cases


def invalid_vectors() -> list[dict[str, Any]]:
    good = m.content_id_of(b"abc").text
    digest = good.split(":")[1]
    cases = []
    for name, text in (
        ("uppercase_hex", good.upper().replace("SHA256_128", "sha256_128")),
        ("short_digest", f"sha256_128:{digest[:30]}:3"),
        ("long_digest", f"sha256_128:{digest}00:3"),
        ("full_sha256", f"sha256_128:{'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'}:3"),
        ("leading_zero_size", f"sha256_128:{digest}:03"),
        ("plus_size", f"sha256_128:{digest}:+3"),
        ("negative_size", f"sha256_128:{digest}:-3"),
        ("size_over_int64", f"sha256_128:{digest}:{2**63}"),
        ("no_size", f"sha256_128:{digest}"),
        ("other_scheme", f"sha256:{digest}:3"),
        ("surrounding_space", f" {good} "),
        ("empty", ""),
    ):
        try:
            m.parse_content_id(text)
        except WireError as exc:
            reason = exc.reason
        else:
            raise AssertionError(f"vector {name}: {text!r} parsed")
        assert reason == "malformed", name
        cases.append({"name": name, "text": text, "reason": reason})
    return cases


def build() -> dict[str, Any]:
    return {
        "format": "model-id",
        "spec": "protocols/model-id.md",
        "constants": {"digest_bytes": m.CONTENT_DIGEST_BYTES, "scheme": m.SCHEME,
                      "max_chars": m.MAX_CONTENT_ID_CHARS},
        "valid": valid_vectors(),
        "text_invalid": invalid_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", lambda: {FILE_NAME: build()}, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
