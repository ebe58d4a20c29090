"""Ed25519 node identities, libp2p PeerIDs derived from them, and domain-separated signatures.

The PeerID is computed here, not by libp2p, so that records, tokens and gossip can be checked without a
host: a record's `pk` must hash to the PeerID in its key. The derivation matches libp2p's for Ed25519
keys (identity multihash of the protobuf-encoded public key).
"""

from __future__ import annotations

import os
from typing import Any

import base58
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meshp2p.wire._cbor import dumps
from meshp2p.wire.errors import WireError

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: protobuf PublicKey{Type: Ed25519 (1), Data: <32 bytes>}: field 1 varint 1, field 2 length 32.
_PROTOBUF_ED25519_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
#: identity multihash (code 0x00) of the 36-byte protobuf: short keys are inlined, not hashed.
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, 0x24])
PEER_ID_BYTES = len(_IDENTITY_MULTIHASH_PREFIX) + len(_PROTOBUF_ED25519_PREFIX) + PUBLIC_KEY_BYTES


def peer_id_bytes(public_key: bytes) -> bytes:
    """The 38-byte multihash libp2p uses as the binary PeerID of an Ed25519 key."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_BYTES:
        raise WireError("malformed", "an Ed25519 public key is 32 bytes")
    return _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX + public_key


def peer_id_from_public_key(public_key: bytes) -> str:
    """The text PeerID ("12D3KooW..."): base58btc of `peer_id_bytes`."""
    return base58.b58encode(peer_id_bytes(public_key)).decode("ascii")


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True only for a valid signature; a malformed key or signature is just invalid, never an exception."""
    if type(public_key) is not bytes or type(signature) is not bytes or type(data) is not bytes:
        return False
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


class Identity:
    """A node's signing key. The 32-byte seed is all that is stored; everything else is derived from it."""

    __slots__ = ("_key", "_peer_id", "_public_key", "_seed")

    def __init__(self, seed: bytes) -> None:
        if type(seed) is not bytes or len(seed) != SEED_BYTES:
            raise WireError("malformed", "an identity seed is 32 bytes", hint="the key file is damaged: rotate the key")
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public_key = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._peer_id = peer_id_from_public_key(self._public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        return cls(seed)

    @property
    def seed(self) -> bytes:
        """The secret: the same seed gives libp2p's key pair (`create_new_key_pair(seed)`) and the same PeerID."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        return self._public_key

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def peer_id_bytes(self) -> bytes:
        return peer_id_bytes(self._public_key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        # Never the seed: identities end up in logs and tracebacks.
        return f"Identity({self._peer_id})"


def signed_bytes(domain: bytes, obj: dict[str, Any]) -> bytes:
    """What a `sig` covers: the format's domain, then the canonical CBOR of the map without `sig`."""
    return domain + dumps({k: v for k, v in obj.items() if k != "sig"})


def sign_object(identity: Identity, domain: bytes, obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` with `sig` set; the domain keeps a signature of one format from passing as another."""
    return {**obj, "sig": identity.sign(signed_bytes(domain, obj))}


def verify_object(domain: bytes, obj: dict[str, Any]) -> bool:
    """Check `obj["sig"]` against `obj["pk"]`; both must already be type-checked bytes."""
    return verify(obj["pk"], signed_bytes(domain, obj), obj["sig"])
