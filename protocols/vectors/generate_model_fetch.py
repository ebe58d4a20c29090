"""Write model-fetch.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Same conventions as generate.py (fixed inputs, lowercase hex, every negative vector checked against the
implementation to fail with the reason it names). The file is generated, not stored: byte `i` of it is
`(i * 7 + 3) % 251`. A frame vector is the exact frame; invalid `payload`s are decoded with `decode_message`.

    /work/venv/bin/python protocols/vectors/generate_model_fetch.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_model_fetch.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from meshp2p.wire import model_fetch as mf
from meshp2p.wire._cbor import dumps
from meshp2p.wire.framing import FRAME_HEADER_BYTES, PayloadReader
from meshp2p.wire.model_id import ContentId

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import expect, write_or_check

FILE_NAME = "model-fetch.json"
FILE_SIZE = 3 * 2**20 + 5
#: A split model's three files: the first is the `file` vector's, the others are that pattern's first bytes.
PART_SIZES = [FILE_SIZE, 2**20, 7]
RULE_SIZES = [0, 1, 2**20, 2**20 + 1, 64 * 2**30, 64 * 2**30 + 1, 200_000_000_000, 2**40]


def file_bytes(size: int = FILE_SIZE) -> bytes:
    return bytes((i * 7 + 3) % 251 for i in range(size))


def content_id_of(data: bytes) -> ContentId:
    return ContentId(hashlib.sha256(data).digest()[:16], len(data))


def payload(frame: bytes) -> bytes:
    return frame[FRAME_HEADER_BYTES:]


def build() -> dict[str, dict[str, Any]]:
    data = file_bytes()
    cid = content_id_of(data)
    size = len(data)
    chunks = [data[o:o + mf.chunk_bytes(size)] for o in range(0, size, mf.chunk_bytes(size))]
    manifest = mf.manifest_of(size, chunks)
    session = [
        {"from": "dialer", "message": "open", "frame": mf.encode_open(cid).hex()},
        {"from": "listener", "message": "manifest", "frame": mf.encode_manifest(manifest).hex()},
        *({"from": "dialer", "message": f"get {i}", "frame": mf.encode_get(i).hex()} for i in range(len(chunks))),
        *({"from": "listener", "message": f"chunk {i}", "frame": mf.encode_chunk_header(i).hex(),
           "then_bytes": f"file[{o}:{o + len(c)}]", "sha256": hashlib.sha256(c).hexdigest()}
          for i, (o, c) in enumerate((i * mf.chunk_bytes(size), c) for i, c in enumerate(chunks))),
    ]
    refusals = [{"refusal": r, "frame": mf.encode_refused(r).hex()} for r in ("not_member", "not_found", "busy")]

    def raw(m: dict[str, Any]) -> bytes:
        return dumps(m)

    parts = tuple(content_id_of(file_bytes(n)) for n in PART_SIZES)
    split = {
        "files": [{"pattern": "byte i = (i * 7 + 3) % 251", "size": n, "content_id": c.text}
                  for n, c in zip(PART_SIZES, parts, strict=True)],
        "session": [
            {"from": "dialer", "message": "list", "frame": mf.encode_list(parts[0]).hex()},
            {"from": "listener", "message": "parts", "frame": mf.encode_parts(parts).hex()},
        ],
        "whole_file": {"from": "listener", "message": "parts", "frame": mf.encode_parts((cid,)).hex()},
    }

    good = {"v": 1, "t": "manifest", "size": size, "chunk": mf.chunk_bytes(size), "hashes": manifest.hashes}
    cases: list[tuple[str, bytes, str]] = [
        ("empty payload", b"", "malformed"),
        ("not a map", dumps([1]), "malformed"),
        ("version 2", raw({"v": 2, "t": "get", "index": 0}), "bad_version"),
        ("unknown type", raw({"v": 1, "t": "put", "index": 0}), "malformed"),
        ("extra key", raw({"v": 1, "t": "get", "index": 0, "x": 1}), "malformed"),
        ("missing key", raw({"v": 1, "t": "get"}), "malformed"),
        ("negative index", raw({"v": 1, "t": "get", "index": -1}), "malformed"),
        ("index as text", raw({"v": 1, "t": "get", "index": "0"}), "malformed"),
        ("open with an uppercase id", raw({"v": 1, "t": "open", "id": cid.text.upper()}), "malformed"),
        ("refusal not in the list", raw({"v": 1, "t": "refused", "reason": "tired"}), "malformed"),
        ("manifest hashes as text", raw({**good, "hashes": manifest.hashes.hex()}), "malformed"),
        ("manifest chunk size off the rule", raw({**good, "chunk": 2**21}), "bad_manifest"),
        ("manifest one hash short", raw({**good, "hashes": manifest.hashes[:-32]}), "bad_manifest"),
        ("list with a malformed id", raw({"v": 1, "t": "list", "id": "sha256_128:00:1"}), "malformed"),
        ("parts with no file", raw({"v": 1, "t": "parts", "ids": []}), "malformed"),
        ("parts as one text", raw({"v": 1, "t": "parts", "ids": cid.text}), "malformed"),
        ("parts listing a file twice", raw({"v": 1, "t": "parts", "ids": [cid.text, cid.text]}), "malformed"),
        ("parts over the limit", raw({"v": 1, "t": "parts", "ids": [content_id_of(bytes([i % 256, i // 256])).text
                                                                   for i in range(mf.MAX_PARTS + 1)]}),
         "malformed"),
    ]
    invalid: list[dict[str, Any]] = [
        {"name": name, "payload": body.hex(), "reason": expect(reason, lambda b=body: mf.decode_message(b), name)}
        for name, body, reason in cases
    ]
    over = (mf.MAX_FRAME_BYTES + 1).to_bytes(FRAME_HEADER_BYTES, "big")
    invalid.append({"name": "frame header over the limit", "frame": over.hex(),
                    "reason": expect("oversized", lambda: PayloadReader(max_bytes=mf.MAX_FRAME_BYTES).feed(over),
                                     "oversized header")})
    # Same chunk count, one byte shorter: a well-formed manifest, of the wrong file.
    wrong_size = mf.ManifestMessage(mf.Manifest(size - 1, manifest.hashes))
    invalid.append({"name": "manifest of another size than the asked id", "asked": cid.text,
                    "payload": payload(mf.encode_manifest(wrong_size.manifest)).hex(),
                    "reason": expect("bad_manifest", lambda: mf.check_manifest_for(cid, wrong_size), "wrong size")})
    invalid.append({"name": "a chunk header where the manifest was expected",
                    "payload": payload(mf.encode_chunk_header(0)).hex(),
                    "reason": expect("unexpected", lambda: mf.expect(mf.decode_message(
                        payload(mf.encode_chunk_header(0))), mf.ManifestMessage), "unexpected")})
    invalid.append({"name": "get of a chunk past the end", "payload": payload(mf.encode_get(len(chunks))).hex(),
                    "reason": expect("malformed", lambda: mf.check_index(
                        manifest, mf.expect(mf.decode_message(payload(mf.encode_get(len(chunks)))), mf.Get).index),
                        "index past the end")})
    flipped = bytes([chunks[1][0] ^ 1]) + chunks[1][1:]
    invalid.append({"name": "chunk 1 with its first byte flipped", "index": 1,
                    "reason": expect("bad_chunk", lambda: manifest.check_chunk(1, flipped), "bad chunk")})
    reordered = mf.Parts((parts[1], parts[0], parts[2]))
    invalid.append({"name": "parts whose first file is not the one asked about", "asked": parts[0].text,
                    "payload": payload(mf.encode_parts(reordered.ids)).hex(),
                    "reason": expect("bad_parts", lambda: mf.check_parts_for(parts[0], reordered), "bad parts")})
    other = file_bytes(size - 1) + b"\x00"
    invalid.append({"name": "an assembled file whose last byte differs", "asked": cid.text,
                    "reason": expect("content_mismatch", lambda: mf.check_content(
                        cid, len(other), hashlib.sha256(other).digest()), "content mismatch")})
    return {FILE_NAME: {
        "chunk_rule": [{"size": s, "chunk_bytes": mf.chunk_bytes(s), "chunk_count": mf.chunk_count(s)}
                       for s in RULE_SIZES],
        "file": {"pattern": "byte i = (i * 7 + 3) % 251", "size": size, "content_id": cid.text,
                 "manifest": manifest.hashes.hex(), "session": session, "refusals": refusals},
        "split": split,
        "invalid": invalid,
    }}


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", build, "generate_model_fetch.py", argv)


if __name__ == "__main__":
    sys.exit(main())
