"""The one exception every wire decoder raises, with a machine reason the node counts rejections by.

Decoders face hostile bytes from the DHT, gossip and streams; whatever is wrong with them comes out as a
`WireError`, never as a `KeyError`, `ValueError` or a crash, so callers need a single `except`.
"""

from __future__ import annotations

from typing import Literal, get_args

from meshp2p.errors import MeshP2PError

WireReason = Literal[
    "malformed",
    "oversized",
    "bad_version",
    "bad_signature",
    "expired",
    "future",
    "unknown_kind",
    "key_mismatch",
    "replay",
    "decrypt_failed",
    "bad_mesh_id",
    "bad_proof",
    "rejected",
    "no_valid_record",
    "truncated",
    "unexpected",
    "bad_manifest",
    "bad_chunk",
    "content_mismatch",
    "bad_digest",
    "shape_mismatch",
    "bad_parts",
]

#: Every reason a `WireError` can carry, for metrics that pre-register their labels.
WIRE_REASONS: frozenset[str] = frozenset(get_args(WireReason))


class WireError(MeshP2PError):
    """Bytes from the network (or values about to be sent) break a wire-format rule.

    `reason` is one of `WIRE_REASONS` and is stable: the node counts rejections by it and the protocol specs
    in `protocols/` name it for every check. `detail` is for logs and may change.
    """

    def __init__(self, reason: WireReason, detail: str | None = None, *, hint: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason, hint=hint)
        self.reason: WireReason = reason
        self.detail = detail
