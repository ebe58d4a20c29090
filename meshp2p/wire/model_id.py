"""Content ids of model files: the same GGUF on two nodes is found by what it holds (protocols/model-id.md).

A model id (file stem, catalog name) says nothing about the bytes: two nodes can hold different quantisations under
one name, or one file under two names. A pipeline needs every worker to load its layers from the very file the host
runs, so peers compare content ids: the first 16 bytes of the file's SHA-256 and its size in bytes. Hashing is the
caller's I/O; this module only feeds bytes to a `ContentIdHasher` and writes and reads the one text form.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from meshp2p.wire._cbor import INT64_MAX
from meshp2p.wire.errors import WireError

#: 128 bits: accidental collisions are out of reach, and a status entry stays small (gossip is size-capped).
CONTENT_DIGEST_BYTES = 16
#: Names the digest, so a later algorithm can be told apart from this one.
SCHEME = "sha256_128"
#: `sha256_128:` + 32 hex + `:` + up to 19 digits.
MAX_CONTENT_ID_CHARS = len(SCHEME) + 1 + 2 * CONTENT_DIGEST_BYTES + 1 + len(str(INT64_MAX))
_TEXT = re.compile(rf"{SCHEME}:([0-9a-f]{{{2 * CONTENT_DIGEST_BYTES}}}):(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class ContentId:
    """What a model file holds: SHA-256 of all its bytes (first 16) and its length. Equal ids: the same file."""

    digest: bytes
    size: int

    def __post_init__(self) -> None:
        if type(self.digest) is not bytes or len(self.digest) != CONTENT_DIGEST_BYTES:
            raise WireError("malformed", f"a content digest is {CONTENT_DIGEST_BYTES} bytes")
        if type(self.size) is not int or not 0 <= self.size <= INT64_MAX:
            raise WireError("malformed", f"a file size is an integer in 0..{INT64_MAX}")

    @property
    def text(self) -> str:
        """`sha256_128:<32 lowercase hex>:<size>`: in status gossip, /api/status, logs and the local cache."""
        return f"{SCHEME}:{self.digest.hex()}:{self.size}"

    @property
    def short(self) -> str:
        """For log lines: the first 12 hex digits and the size in MB."""
        return f"{self.digest.hex()[:12]}… ({self.size / 1e6:.1f} MB)"

    def __str__(self) -> str:
        return self.text


def parse_content_id(text: object) -> ContentId:
    """The one accepted spelling of `ContentId.text` (lowercase hex, no leading zeros in the size)."""
    match = _TEXT.fullmatch(text) if type(text) is str and len(text) <= MAX_CONTENT_ID_CHARS else None
    if match is None:
        raise WireError("malformed", f"not a content id: {str(text)[:80]!r}")
    return ContentId(bytes.fromhex(match[1]), int(match[2]))


class ContentIdHasher:
    """Feed a file's bytes in order (`update`), then `result()`: the caller does the reading, in any chunk size."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.size += len(chunk)

    def result(self) -> ContentId:
        return ContentId(self._sha.digest()[:CONTENT_DIGEST_BYTES], self.size)


def content_id_of(data: bytes) -> ContentId:
    """The content id of bytes held in memory (tests, vectors)."""
    hasher = ContentIdHasher()
    hasher.update(data)
    return hasher.result()
