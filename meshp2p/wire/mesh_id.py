"""Mesh ids: 16 bytes that name a mesh in keys, topics and tokens.

A named (public) mesh's id is a hash of its normalised name, so every node that types the same name finds
the same mesh with no registry. A private mesh's id is a hash of its secret, so holding an invite token's
secret proves which mesh it is for, and the id reveals nothing about the secret.
"""

from __future__ import annotations

import hashlib
import os

from meshp2p.wire.errors import WireError

MESH_ID_BYTES = 16
MESH_SECRET_BYTES = 32
MAX_MESH_NAME_CHARS = 64
_NAME_DOMAIN = b"meshp2p/mesh-name/v1\x00"
_SECRET_DOMAIN = b"meshp2p/mesh-id/v1\x00"
_HEX_DIGITS = frozenset("0123456789abcdef")


def normalise_mesh_name(name: str) -> str:
    """`Poker-Night ` and `poker-night` are the same mesh: strip surrounding whitespace, lowercase."""
    normalised = name.strip().lower()
    if not 1 <= len(normalised) <= MAX_MESH_NAME_CHARS:
        raise WireError(
            "malformed",
            f"a mesh name has 1..{MAX_MESH_NAME_CHARS} characters",
            hint="pick a shorter --mesh-name",
        )
    return normalised


def named_mesh_id(name: str) -> bytes:
    return hashlib.sha256(_NAME_DOMAIN + normalise_mesh_name(name).encode("utf-8")).digest()[:MESH_ID_BYTES]


def private_mesh_id(secret: bytes) -> bytes:
    if type(secret) is not bytes or len(secret) != MESH_SECRET_BYTES:
        raise WireError("malformed", f"a mesh secret is {MESH_SECRET_BYTES} bytes")
    return hashlib.sha256(_SECRET_DOMAIN + secret).digest()[:MESH_ID_BYTES]


def new_mesh_secret() -> bytes:
    return os.urandom(MESH_SECRET_BYTES)


def mesh_id_hex(mesh_id: bytes) -> str:
    """The text form used in DHT keys and topic names: 32 lowercase hex digits."""
    check_mesh_id(mesh_id)
    return mesh_id.hex()


def parse_mesh_id_hex(text: str) -> bytes:
    """Only the one canonical spelling, so two strings never name the same mesh."""
    if type(text) is not str or len(text) != 2 * MESH_ID_BYTES or not set(text) <= _HEX_DIGITS:
        raise WireError("malformed", "a mesh id is 32 lowercase hex digits")
    return bytes.fromhex(text)


def check_mesh_id(mesh_id: bytes) -> bytes:
    if type(mesh_id) is not bytes or len(mesh_id) != MESH_ID_BYTES:
        raise WireError("malformed", f"a mesh id is {MESH_ID_BYTES} bytes")
    return mesh_id
