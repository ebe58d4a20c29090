"""Write moe-usage.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Same conventions as generate.py (fixed inputs, lowercase hex, every negative vector checked against the
implementation to fail with the reason it names). Invalid answers are checked as a dialer with a file of
`n_layers` x `n_expert` that asked for `digest` (null: any measured counts): a `payload` with `check_answer`, a
`frame` with `read_answer`.

    /work/venv/bin/python protocols/vectors/generate_moe_usage.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_moe_usage.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from meshp2p.wire import moe_usage as mu
from meshp2p.wire._cbor import dumps
from meshp2p.wire.framing import FRAME_HEADER_BYTES
from meshp2p.wire.model_id import ContentId

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import expect, write_or_check

FILE_NAME = "moe-usage.json"
CONTENT_ID = ContentId(bytes(range(16)), 123_456_789)
COUNTS: mu.Counts = ((5, 1, 0, 2), (3, 3, 1, 1), (0, 0, 7, 1))
DIGEST_CASES: list[tuple[str, mu.Counts]] = [
    (mu.SOURCE_IMATRIX, COUNTS),
    (mu.SOURCE_WEIGHT_NORM, ((1_250_000, 980_001), (1_000_000, 2**40))),
    (mu.SOURCE_IMATRIX, ((0,),)),
]


def build() -> dict[str, dict[str, Any]]:
    n_layers, n_expert = len(COUNTS), len(COUNTS[0])
    digest = mu.usage_digest(mu.SOURCE_IMATRIX, COUNTS)
    good = {"v": 1, "t": "usage", "source": mu.SOURCE_IMATRIX, "counts": [list(r) for r in COUNTS],
            "digest": digest}

    def answer(**changes: Any) -> bytes:
        return dumps({**good, **changes})

    def without(key: str) -> bytes:
        return dumps({k: v for k, v in good.items() if k != key})

    weight_norm = mu.usage_digest(mu.SOURCE_WEIGHT_NORM, COUNTS)
    other = ((5, 1, 0, 2), (3, 3, 1, 1), (0, 0, 1, 7))
    # (name, payload, reason, the dialer's file shape, the digest it asked for)
    cases: list[tuple[str, bytes, str, tuple[int, int], str | None]] = [
        ("empty payload", b"", "malformed", (3, 4), None),
        ("not a map", dumps([1]), "malformed", (3, 4), None),
        ("version 2", answer(v=2), "bad_version", (3, 4), None),
        ("unknown type", answer(t="counts"), "malformed", (3, 4), None),
        ("extra key", answer(x=1), "malformed", (3, 4), None),
        ("missing key", without("digest"), "malformed", (3, 4), None),
        ("counts as text", answer(counts=json.dumps(good["counts"])), "malformed", (3, 4), None),
        ("a negative count", answer(counts=[[5, 1, 0, -2], [3, 3, 1, 1], [0, 0, 7, 1]]), "malformed", (3, 4),
         None),
        ("a float count", answer(counts=[[5.0, 1, 0, 2], [3, 3, 1, 1], [0, 0, 7, 1]]), "malformed", (3, 4), None),
        ("a boolean count", answer(counts=[[5, True, 0, 2], [3, 3, 1, 1], [0, 0, 7, 1]]), "malformed", (3, 4),
         None),
        ("rows of different lengths", answer(counts=[[5, 1, 0, 2], [3, 3, 1], [0, 0, 7, 1]]), "malformed", (3, 4),
         None),
        ("no layers", answer(counts=[]), "malformed", (3, 4), None),
        ("257 layers", answer(counts=[[1]] * (mu.MAX_LAYERS + 1)), "malformed", (257, 1), None),
        ("1025 experts", answer(counts=[[1] * (mu.MAX_EXPERTS + 1)]), "malformed", (1, 1025), None),
        ("digest in uppercase", answer(digest=digest.upper()), "malformed", (3, 4), None),
        ("digest one digit short", answer(digest=digest[:-1]), "malformed", (3, 4), None),
        ("source with a colon", answer(source="imatrix:x"), "malformed", (3, 4), None),
        ("refusal not in the list", dumps({"v": 1, "t": "refused", "reason": "busy"}), "malformed", (3, 4), None),
        ("counts changed under their digest", answer(counts=[list(r) for r in other]), "bad_digest", (3, 4), None),
        ("one layer short for the file", answer(), "shape_mismatch", (4, 4), None),
        ("one expert too many for the file", answer(), "shape_mismatch", (3, 3), None),
        ("a digest other than the one asked for", answer(), "key_mismatch", (3, 4),
         mu.usage_digest(mu.SOURCE_IMATRIX, other)),
        ("the estimate where measured counts were asked for",
         answer(source=mu.SOURCE_WEIGHT_NORM, digest=weight_norm), "key_mismatch", (3, 4), None),
    ]
    invalid: list[dict[str, Any]] = [
        {"name": name, "payload": body.hex(), "n_layers": shape[0], "n_expert": shape[1], "digest": want,
         "reason": expect(reason, lambda b=body, s=shape, w=want: mu.check_answer(
             b, n_layers=s[0], n_expert=s[1], digest=w), name)}
        for name, body, reason, shape, want in cases
    ]
    over = (mu.MAX_ANSWER_BYTES + 1).to_bytes(FRAME_HEADER_BYTES, "big")
    invalid.append({"name": "answer header over the limit", "frame": over.hex(), "n_layers": n_layers,
                    "n_expert": n_expert, "digest": None,
                    "reason": expect("oversized", lambda: mu.read_answer(over, n_layers=n_layers, n_expert=n_expert),
                                     "oversized answer")})
    good_frame = mu.encode_usage(mu.SOURCE_IMATRIX, COUNTS)
    invalid.append({"name": "bytes after the answer frame", "frame": (good_frame + b"\x00").hex(),
                    "n_layers": n_layers, "n_expert": n_expert, "digest": None,
                    "reason": expect("malformed", lambda: mu.read_answer(good_frame + b"\x00", n_layers=n_layers,
                                                                         n_expert=n_expert), "trailing byte")})
    invalid.append({"name": "an answer cut short", "frame": good_frame[:-1].hex(), "n_layers": n_layers,
                    "n_expert": n_expert, "digest": None,
                    "reason": expect("truncated", lambda: mu.read_answer(good_frame[:-1], n_layers=n_layers,
                                                                         n_expert=n_expert), "truncated")})
    request_cases: list[tuple[str, bytes, str]] = [
        ("version 2", dumps({"v": 2, "id": CONTENT_ID.text}), "bad_version"),
        ("extra key", dumps({"v": 1, "id": CONTENT_ID.text, "t": "usage"}), "malformed"),
        ("an uppercase content id", dumps({"v": 1, "id": CONTENT_ID.text.upper()}), "malformed"),
        ("content id as bytes", dumps({"v": 1, "id": CONTENT_ID.digest}), "malformed"),
        ("over 256 bytes", dumps({"v": 1, "id": "x" * 300}), "oversized"),
    ]
    invalid_requests = [{"name": name, "payload": body.hex(),
                         "reason": expect(reason, lambda b=body: mu.decode_request(b), name)}
                        for name, body, reason in request_cases]
    return {FILE_NAME: {
        "constants": {"protocol_id": mu.MOE_USAGE_PROTOCOL_ID, "max_layers": mu.MAX_LAYERS,
                      "max_experts": mu.MAX_EXPERTS, "max_request_bytes": mu.MAX_REQUEST_BYTES,
                      "max_answer_bytes": mu.MAX_ANSWER_BYTES},
        "digests": [{"source": source, "counts": [list(r) for r in counts],
                     "json": json.dumps([source, [list(r) for r in counts]], separators=(",", ":")),
                     "digest": mu.usage_digest(source, counts), "tag": mu.usage_tag(source,
                                                                                    mu.usage_digest(source, counts))}
                    for source, counts in DIGEST_CASES],
        "request": {"content_id": CONTENT_ID.text, "frame": mu.encode_request(CONTENT_ID).hex()},
        "answer": {"source": mu.SOURCE_IMATRIX, "counts": [list(r) for r in COUNTS], "n_layers": n_layers,
                   "n_expert": n_expert, "digest": digest, "tag": mu.usage_tag(mu.SOURCE_IMATRIX, digest),
                   "frame": good_frame.hex()},
        "refusals": [{"refusal": r, "frame": mu.encode_refused(r).hex()} for r in ("not_member", "not_have")],
        "invalid": invalid,
        "invalid_requests": invalid_requests,
    }}


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", build, "generate_moe_usage.py", argv)


if __name__ == "__main__":
    sys.exit(main())
