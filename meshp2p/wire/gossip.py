"""Signed gossip messages per mesh topic, encrypted for private meshes (protocols/gossip.md).

Gossipsub forwards whatever it is given, so the message proves itself: a signature by the sender's key,
the mesh it belongs to, a send time and a sequence number. On a private mesh the signed message travels
inside ChaCha20-Poly1305 under a key derived from the mesh secret, so non-members can neither read nor
forge it. `ReplayGuard` and `SequenceCounter` are the small pure state the node keeps around this.
The bodies are read by their own modules once the envelope checked out: wire/status.py, wire/demand.py and
wire/blackboard.py.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshp2p.wire._cbor import (
    check_keys,
    check_version,
    dumps,
    get_bytes,
    get_int,
    get_map,
    get_text,
    loads_map,
)
from meshp2p.wire.errors import WireError
from meshp2p.wire.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    peer_id_from_public_key,
    sign_object,
    verify_object,
)
from meshp2p.wire.mesh_id import (
    MESH_ID_BYTES,
    MESH_SECRET_BYTES,
    check_mesh_id,
    parse_mesh_id_hex,
    private_mesh_id,
)

GOSSIP_DOMAIN = b"meshp2p/gossip/v1\x00"
GOSSIP_KEY_INFO = b"meshp2p/gossip-key/v1"
TOPIC_KEY_INFO = b"meshp2p/gossip-topic/v1"
MAX_GOSSIP_BYTES = 16384
#: Status is re-sent every few seconds; anything older is stale and could be a replay the guard forgot.
MAX_MESSAGE_AGE_S = 30
#: Tighter than records' skew: messages live seconds, and a far-future `ts` would outlive the age window.
MAX_MESSAGE_AHEAD_S = 5
GOSSIP_NONCE_BYTES = 12
#: Scheme 2: ChaCha20-Poly1305 over a length-prefixed, zero-padded plaintext, no mesh id in the clear (1 withdrawn).
ENCRYPTION_SCHEME = 2
#: A sealed message's data is exactly one of these sizes, so sizes do not tell status from demand from posts.
SEALED_SIZES = (1024, 4096, MAX_GOSSIP_BYTES)
_AEAD_TAG_BYTES = 16
_LENGTH_PREFIX = struct.Struct(">I")
MAX_TYPE_CHARS = 32
TOPIC_NAMES = frozenset({"status", "demand", "blackboard"})
#: Bounds the guard's memory against floods of fresh keys; see ReplayGuard.
MAX_REPLAY_SENDERS = 4096

_INNER_KEYS = frozenset({"v", "t", "mesh", "pk", "seq", "ts", "body", "sig"})
_SEALED_KEYS = frozenset({"v", "enc", "n", "ct"})
_TOPIC_PREFIX = "/meshp2p/"
_SEALED_TOPIC_PREFIX = "/meshp2p/sealed/"
_TOPIC_VERSION = "1"
_TOPIC_TAG_BYTES = 16


@dataclass(frozen=True)
class GossipMessage:
    """A message that passed every check; `body` is the raw map, typed by the reader for `type`."""

    type: str
    sender: str
    public_key: bytes
    seq: int
    sent_at_ms: int
    body: dict[str, Any]


def topic_name(mesh_id: bytes, name: str, secret: bytes | None = None) -> str:
    """The topic for `name` on a mesh: `/meshp2p/<mesh id hex>/<name>/1` on a public mesh, and on a private one
    (`secret` given) `/meshp2p/sealed/<tag>/1`, whose tag only members can compute or tell apart."""
    if name not in TOPIC_NAMES:
        raise WireError("malformed", f"unknown topic {name!r}")
    if secret is None:
        return f"{_TOPIC_PREFIX}{check_mesh_id(mesh_id).hex()}/{name}/{_TOPIC_VERSION}"
    tag = hmac.new(topic_key(check_mesh_id(mesh_id), _check_secret(secret)), name.encode("utf-8"), hashlib.sha256)
    return f"{_SEALED_TOPIC_PREFIX}{tag.digest()[:_TOPIC_TAG_BYTES].hex()}/{_TOPIC_VERSION}"


def is_sealed_topic(topic: str) -> bool:
    """A private mesh's topic (by its shape alone: which mesh, and which purpose, only members can tell)."""
    return type(topic) is str and topic.startswith(_SEALED_TOPIC_PREFIX)


def parse_topic(topic: str) -> tuple[bytes, str]:
    """(mesh id, name) of a public mesh's topic made by `topic_name`."""
    parts = topic.split("/") if type(topic) is str else []
    if len(parts) != 5 or parts[0] != "" or parts[1] != "meshp2p" or parts[4] != _TOPIC_VERSION:
        raise WireError("malformed", f"not a meshp2p topic: {topic!r}")
    if parts[3] not in TOPIC_NAMES:
        raise WireError("malformed", f"unknown topic {parts[3]!r}")
    return parse_mesh_id_hex(parts[2]), parts[3]


def check_topic(topic: str, mesh_id: bytes, secret: bytes | None) -> str:
    """The name (`status`, ...) of `topic` if it is one of this mesh's topics; WireError otherwise."""
    for name in sorted(TOPIC_NAMES):
        if topic == topic_name(mesh_id, name, secret):
            return name
    if is_sealed_topic(topic):
        parts = topic.split("/")
        if len(parts) != 5 or len(parts[3]) != 2 * _TOPIC_TAG_BYTES or parts[4] != _TOPIC_VERSION:
            raise WireError("malformed", f"not a meshp2p topic: {topic!r}")
    else:
        parse_topic(topic)
    raise WireError("key_mismatch", "topic belongs to another mesh")


def gossip_key(mesh_id: bytes, secret: bytes) -> bytes:
    """The mesh's AEAD key; the mesh id as salt keeps one secret from yielding the same key for two meshes."""
    return _derive(check_mesh_id(mesh_id), _check_secret(secret), GOSSIP_KEY_INFO)


def topic_key(mesh_id: bytes, secret: bytes) -> bytes:
    return _derive(mesh_id, secret, TOPIC_KEY_INFO)


@lru_cache(maxsize=64)
def _derive(mesh_id: bytes, secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 of the secret; cached because every message is checked against its mesh's topics and key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=mesh_id, info=info).derive(secret)


def _check_secret(secret: bytes) -> bytes:
    if type(secret) is not bytes or len(secret) != MESH_SECRET_BYTES:
        raise WireError("malformed", f"a mesh secret is {MESH_SECRET_BYTES} bytes")
    return secret


def encode_gossip(
    identity: Identity,
    mesh_id: bytes,
    topic: str,
    msg_type: str,
    body: dict[str, Any],
    *,
    seq: int,
    now: float,
    secret: bytes | None,
    nonce: bytes | None = None,
) -> bytes:
    """Sign (and, with a `secret`, encrypt) a message; `nonce` is for test vectors only: leave it None.

    The result is run through `decode_gossip`, so a node never publishes what its peers would drop.
    """
    if secret is not None and private_mesh_id(secret) != mesh_id:
        raise WireError("bad_mesh_id", "mesh_id is not the id of this secret")
    check_topic(topic, mesh_id, secret)
    inner = sign_object(
        identity,
        GOSSIP_DOMAIN,
        {
            "v": 1,
            "t": msg_type,
            "mesh": mesh_id,
            "pk": identity.public_key,
            "seq": seq,
            "ts": math.floor(now * 1000),
            "body": body,
        },
    )
    data = dumps(inner)
    if secret is not None:
        if nonce is None:
            nonce = os.urandom(GOSSIP_NONCE_BYTES)
        if type(nonce) is not bytes or len(nonce) != GOSSIP_NONCE_BYTES:
            raise WireError("malformed", f"a gossip nonce is {GOSSIP_NONCE_BYTES} bytes")
        plain = pad_plaintext(data)
        sealed = ChaCha20Poly1305(gossip_key(mesh_id, secret)).encrypt(nonce, plain, topic.encode("utf-8"))
        data = dumps({"v": 1, "enc": ENCRYPTION_SCHEME, "n": nonce, "ct": sealed})
    decode_gossip(data, mesh_id=mesh_id, topic=topic, now=now, secret=secret)
    return data


def decode_gossip(data: bytes, *, mesh_id: bytes, topic: str, now: float, secret: bytes | None) -> GossipMessage:
    """Validate a message received on `topic` of the mesh `mesh_id`; `secret` is None on a public mesh.

    Replays are not checked here: pass the result's sender and seq to the topic's `ReplayGuard`.
    """
    m = loads_map(data, max_bytes=MAX_GOSSIP_BYTES)
    check_topic(topic, mesh_id, secret)
    check_version(m)
    if "enc" in m:
        if secret is None:
            raise WireError("malformed", "encrypted message on a public mesh")
        m = _open(m, size=len(data), mesh_id=mesh_id, topic=topic, secret=secret)
    elif secret is not None:
        raise WireError("decrypt_failed", "plain message on a private mesh")
    check_keys(m, _INNER_KEYS)
    msg_type = get_text(m, "t", min_chars=1, max_chars=MAX_TYPE_CHARS)
    mesh = get_bytes(m, "mesh", size=MESH_ID_BYTES)
    public_key = get_bytes(m, "pk", size=PUBLIC_KEY_BYTES)
    seq = get_int(m, "seq")
    sent_at_ms = get_int(m, "ts")
    body = get_map(m, "body")
    get_bytes(m, "sig", size=SIGNATURE_BYTES)
    if mesh != mesh_id:
        raise WireError("key_mismatch", "message for another mesh")
    if not verify_object(GOSSIP_DOMAIN, m):
        raise WireError("bad_signature", f"gossip on {topic}")
    now_ms = now * 1000
    if sent_at_ms < now_ms - MAX_MESSAGE_AGE_S * 1000:
        raise WireError("expired", f"sent {(now_ms - sent_at_ms) / 1000:.1f} s ago")
    if sent_at_ms > now_ms + MAX_MESSAGE_AHEAD_S * 1000:
        raise WireError("future", f"sent {(sent_at_ms - now_ms) / 1000:.1f} s ahead")
    return GossipMessage(msg_type, peer_id_from_public_key(public_key), public_key, seq, sent_at_ms, body)


def _open(m: dict[str, Any], *, size: int, mesh_id: bytes, topic: str, secret: bytes) -> dict[str, Any]:
    if get_int(m, "enc") != ENCRYPTION_SCHEME:
        raise WireError("bad_version", f"encryption scheme {m['enc']}")
    check_keys(m, _SEALED_KEYS)
    nonce = get_bytes(m, "n", size=GOSSIP_NONCE_BYTES)
    sealed = get_bytes(m, "ct")
    if size not in SEALED_SIZES:
        raise WireError("malformed", f"a sealed message of {size} bytes (padded sizes: {SEALED_SIZES})")
    try:
        plain = ChaCha20Poly1305(gossip_key(mesh_id, secret)).decrypt(nonce, sealed, topic.encode("utf-8"))
    except (InvalidTag, ValueError):
        raise WireError("decrypt_failed", f"sealed message on {topic}") from None
    inner = loads_map(_unpad(plain), max_bytes=MAX_GOSSIP_BYTES)
    check_version(inner)
    return inner


def _sealed_overhead() -> int:
    """Bytes of the sealed map around its `ct` (fixed: `ct` is always 256..65535 bytes, a 3-byte header)."""
    probe = b"\x00" * 1000
    return len(dumps({"v": 1, "enc": ENCRYPTION_SCHEME, "n": b"\x00" * GOSSIP_NONCE_BYTES, "ct": probe})) - len(probe)


SEALED_OVERHEAD = _sealed_overhead()


def pad_plaintext(inner: bytes) -> bytes:
    """Length prefix, the inner map and zeros: the plaintext of the smallest sealed size that holds it."""
    need = _LENGTH_PREFIX.size + len(inner) + _AEAD_TAG_BYTES + SEALED_OVERHEAD
    for size in SEALED_SIZES:
        if need <= size:
            room = size - SEALED_OVERHEAD - _AEAD_TAG_BYTES
            return _LENGTH_PREFIX.pack(len(inner)) + inner + bytes(room - _LENGTH_PREFIX.size - len(inner))
    raise WireError("oversized", f"a gossip message of {len(inner)} bytes does not fit {MAX_GOSSIP_BYTES} sealed")


def _unpad(plain: bytes) -> bytes:
    if len(plain) < _LENGTH_PREFIX.size:
        raise WireError("malformed", "sealed plaintext without its length")
    (length,) = _LENGTH_PREFIX.unpack_from(plain)
    end = _LENGTH_PREFIX.size + length
    if end > len(plain):
        raise WireError("malformed", "sealed plaintext shorter than its length")
    if any(plain[end:]):
        raise WireError("malformed", "sealed padding is not zeros")
    return plain[_LENGTH_PREFIX.size:end]


class SequenceCounter:
    """A sender's `seq`: one counter per mesh, shared by all its topics, starting at the wall clock in ms.

    Starting from the clock (and never falling behind it) means a restarted node, which has forgotten its
    last seq, still sends numbers above those its peers remember, as long as it averaged under 1000
    messages a second.
    """

    def __init__(self) -> None:
        self._last = -1

    def next(self, *, now: float) -> int:
        seq = max(self._last + 1, math.floor(now * 1000))
        self._last = seq
        return seq


class ReplayGuard:
    """Highest `seq` accepted per sender on one topic; a message at or below it is a replay.

    Keep one guard per subscribed topic: gossipsub does not order different topics against each other,
    and the sender's one counter still rises on each topic. At most `max_senders` are remembered, least
    recently accepted evicted first; an evicted sender's old messages are still refused by the age window.
    """

    def __init__(self, *, max_senders: int = MAX_REPLAY_SENDERS) -> None:
        self._max_senders = max_senders
        self._last: OrderedDict[str, int] = OrderedDict()

    def accept(self, sender: str, seq: int) -> None:
        """Record `seq` from `sender`, or raise WireError("replay") and remember nothing."""
        last = self._last.get(sender)
        if last is not None and seq <= last:
            raise WireError("replay", f"seq {seq} <= {last} from {sender}")
        self._last[sender] = seq
        self._last.move_to_end(sender)
        if len(self._last) > self._max_senders:
            self._last.popitem(last=False)

    def last_seq(self, sender: str) -> int | None:
        return self._last.get(sender)

    def __len__(self) -> int:
        return len(self._last)

