"""`/meshp2p/moe-usage/1.0.0` (protocols/moe-usage.md): a `--moe shard` member asks a peer for its measured expert
usage of a file, so that a member that cannot measure (no llama-imatrix, or it failed) plans from the same
numbers as the rest of its group instead of the weight-norm estimate and a group of its own.

The usage digest is defined here, once: `inference/calibration.py`'s `ExpertUsage.digest` is this function, and
status gossip's `moe_shards` entries carry it as the usage tag `<source>:<digest>`.

Sans-IO: one request frame, one answer frame (4-byte length, deterministic CBOR map, wire/framing.py); the caller
moves the bytes. The dialer's checks take what only it knows: its own file's layer and expert counts (from its
GGUF header) and the digest it asked for on the strength of a peer's gossip.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from meshp2p.wire import framing
from meshp2p.wire._cbor import INT64_MAX, check_keys, check_version, dumps, get_text, loads_map, loads_typed_map
from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import frame_bytes
from meshp2p.wire.model_id import ContentId, parse_content_id

MOE_USAGE_PROTOCOL_ID = "/meshp2p/moe-usage/1.0.0"
#: Measured router statistics (llama-imatrix); the only source a listener serves.
SOURCE_IMATRIX = "imatrix"
#: The estimate from router weights: anyone holding the file computes it, so it is never asked for.
SOURCE_WEIGHT_NORM = "weight-norm"
#: Above today's largest MoE models (~100 layers, 512 experts), with room; bounds what a dialer decodes.
MAX_LAYERS = 256
MAX_EXPERTS = 1024
DIGEST_HEX_CHARS = 16
#: A request is a content id in a small map.
MAX_REQUEST_BYTES = 256
#: Every count at its widest (9 bytes), each row's array header (3), and the map around them.
MAX_ANSWER_BYTES = MAX_LAYERS * (3 + 9 * MAX_EXPERTS) + 256

RefusalReason = Literal["not_member", "not_have"]
REFUSAL_REASONS: frozenset[str] = frozenset({"not_member", "not_have"})

_SOURCE = re.compile(r"[a-z0-9-]{1,32}")
_DIGEST = re.compile(rf"[0-9a-f]{{{DIGEST_HEX_CHARS}}}")
_REQUEST_KEYS = frozenset({"v", "id"})
_ANSWER_KEYS = {
    "usage": frozenset({"v", "t", "source", "counts", "digest"}),
    "refused": frozenset({"v", "t", "reason"}),
}

Counts = tuple[tuple[int, ...], ...]


def usage_digest(source: str, counts: Counts) -> str:
    """16 hex digits of SHA-256 over `["<source>",[[c,...],...]]` written as JSON with no spaces: equal digests,
    equal plans. JSON and not CBOR because the digest predates this protocol (it was only ever gossiped)."""
    text = json.dumps([source, [list(layer) for layer in counts]], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_HEX_CHARS]


def usage_tag(source: str, digest: str) -> str:
    """`<source>:<digest>`: the `usage` of a status `moe_shards` entry (protocols/gossip.md)."""
    return f"{source}:{digest}"


def parse_usage_tag(tag: str) -> tuple[str, str] | None:
    """(source, digest) of a gossiped usage tag, or None when it is not in that form (a newer or broken peer)."""
    source, _, digest = tag.rpartition(":")
    if _SOURCE.fullmatch(source) is None or _DIGEST.fullmatch(digest) is None:
        return None
    return source, digest


@dataclass(frozen=True)
class UsageAnswer:
    """Counts whose digest was recomputed and matched (the shape against a file: `check_usage`)."""

    source: str
    counts: Counts
    digest: str

    @property
    def tag(self) -> str:
        return usage_tag(self.source, self.digest)


@dataclass(frozen=True)
class UsageRefused:
    reason: RefusalReason


# -- request -----------------------------------------------------------------------------------------------------


def encode_request(content_id: ContentId) -> bytes:
    return frame_bytes(dumps({"v": 1, "id": content_id.text}), max_bytes=MAX_REQUEST_BYTES)


def decode_request(payload: bytes) -> ContentId:
    m = loads_map(payload, max_bytes=MAX_REQUEST_BYTES)
    check_version(m)
    check_keys(m, _REQUEST_KEYS)
    return parse_content_id(m["id"])


# -- answer ------------------------------------------------------------------------------------------------------


def encode_usage(source: str, counts: Counts) -> bytes:
    """The answer frame for counts this node holds; the same limits a dialer checks (never send what it refuses)."""
    _check_source(source)
    _check_table([list(layer) for layer in counts])
    return frame_bytes(dumps({"v": 1, "t": "usage", "source": source, "counts": [list(layer) for layer in counts],
                              "digest": usage_digest(source, counts)}), max_bytes=MAX_ANSWER_BYTES)


def encode_refused(reason: RefusalReason) -> bytes:
    return frame_bytes(dumps({"v": 1, "t": "refused", "reason": reason}), max_bytes=MAX_ANSWER_BYTES)


def decode_answer(payload: bytes) -> UsageAnswer | UsageRefused:
    """Checks 1-2 of the spec's dialer rules: the map, its limits, and the digest recomputed from the counts."""
    kind, m = loads_typed_map(payload, max_bytes=MAX_ANSWER_BYTES, keys_by_type=_ANSWER_KEYS, what="answer")
    if kind == "refused":
        reason = m["reason"]
        if type(reason) is not str or reason not in REFUSAL_REASONS:
            raise WireError("malformed", f"unknown refusal {str(reason)[:40]!r}")
        return UsageRefused(reason)  # type: ignore[arg-type]  # checked against REFUSAL_REASONS just above
    source = _check_source(m["source"])
    counts = _check_table(m["counts"])
    digest = get_text(m, "digest", max_chars=DIGEST_HEX_CHARS)
    if _DIGEST.fullmatch(digest) is None:
        raise WireError("malformed", "'digest' is not 16 lowercase hex digits")
    if usage_digest(source, counts) != digest:
        raise WireError("bad_digest", f"the counts hash to {usage_digest(source, counts)}, not {digest}")
    return UsageAnswer(source, counts, digest)


def check_usage(answer: UsageAnswer, *, n_layers: int, n_expert: int, digest: str | None = None,
                source: str = SOURCE_IMATRIX) -> UsageAnswer:
    """Checks 3-4: the counts fit the dialer's own file (`shape_mismatch`), and are the usage it asked for: of
    `source`, and of `digest` when it asked on the strength of a peer's gossiped tag (`key_mismatch`)."""
    if len(answer.counts) != n_layers or any(len(layer) != n_expert for layer in answer.counts):
        raise WireError("shape_mismatch", f"{len(answer.counts)} layers of {len(answer.counts[0])} experts for a "
                                          f"file of {n_layers} layers of {n_expert}")
    if answer.source != source or (digest is not None and answer.digest != digest):
        raise WireError("key_mismatch", f"usage {answer.tag}, asked for {usage_tag(source, digest or '*')}")
    return answer


class RequestReader(framing.SingleFrameReader):
    """The listener's one frame: a request, at most MAX_REQUEST_BYTES (a bigger header fails at once)."""

    def __init__(self) -> None:
        super().__init__(max_bytes=MAX_REQUEST_BYTES)


class AnswerReader(framing.SingleFrameReader):
    """The dialer's one frame: an answer, at most MAX_ANSWER_BYTES."""

    def __init__(self) -> None:
        super().__init__(max_bytes=MAX_ANSWER_BYTES)


def check_answer(payload: bytes, *, n_layers: int, n_expert: int,
                 digest: str | None = None) -> UsageAnswer | UsageRefused:
    """An answer frame's payload, checked in the spec's order (a refusal needs no more checks)."""
    answer = decode_answer(payload)
    if isinstance(answer, UsageRefused):
        return answer
    return check_usage(answer, n_layers=n_layers, n_expert=n_expert, digest=digest)


def read_answer(received: bytes, *, n_layers: int, n_expert: int,
                digest: str | None = None) -> UsageAnswer | UsageRefused:
    """Everything a dialer received before the listener closed the stream, checked in the spec's order."""
    reader = AnswerReader()
    reader.feed(received)
    return check_answer(reader.eof(), n_layers=n_layers, n_expert=n_expert, digest=digest)


def _check_source(value: object) -> str:
    if type(value) is not str or _SOURCE.fullmatch(value) is None:
        raise WireError("malformed", f"source {str(value)[:40]!r} is not 1..32 of a-z, 0-9 and '-'")
    return value


def _check_table(value: Any) -> Counts:
    """An array of 1..MAX_LAYERS arrays, all of one length in 1..MAX_EXPERTS, of integers in 0..2^63-1."""
    if type(value) is not list or not 1 <= len(value) <= MAX_LAYERS:
        raise WireError("malformed", f"'counts' is not an array of 1..{MAX_LAYERS} layers")
    width = len(value[0]) if type(value[0]) is list else -1
    if not 1 <= width <= MAX_EXPERTS:
        raise WireError("malformed", f"a layer is not an array of 1..{MAX_EXPERTS} counts")
    layers = []
    for layer in value:
        if type(layer) is not list or len(layer) != width:
            raise WireError("malformed", "layers of different lengths")
        for count in layer:
            if type(count) is not int or not 0 <= count <= INT64_MAX:  # `type() is`: true/false are not counts
                raise WireError("malformed", f"count {str(count)[:20]!r} is not an integer in 0..2^63-1")
        layers.append(tuple(layer))
    return tuple(layers)
