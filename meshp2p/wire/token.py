"""Invite tokens for private meshes (protocols/invite-token.md): `mp1` + base58btc of a signed CBOR map.

The token is the capability: whoever holds it knows the mesh secret and can join. The signature does not
grant anything; it makes a mistyped or edited token fail loudly instead of sending someone to the wrong
place, and names the member who issued it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import base58

from meshp2p.wire._cbor import (
    check_keys,
    check_version,
    dumps,
    get_bytes,
    get_int,
    get_opt_int,
    get_opt_text,
    get_text_list,
    loads_map,
)
from meshp2p.wire.errors import WireError
from meshp2p.wire.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, sign_object, verify_object
from meshp2p.wire.mesh_id import MESH_ID_BYTES, MESH_SECRET_BYTES, check_mesh_id, private_mesh_id

TOKEN_DOMAIN = b"meshp2p/token/v1\x00"
TOKEN_PREFIX = "mp1"
MAX_TOKEN_CHARS = 4096
#: 4096 base58 characters carry at most ~3000 bytes; checked again after base58 in case of leading "1"s.
MAX_TOKEN_BYTES = 3072
MAX_TOKEN_ADDRS = 16
MAX_ADDR_CHARS = 256
MAX_NAME_CHARS = 128
_TOKEN_KEYS = frozenset({"v", "mesh", "secret", "addrs", "name", "iat", "exp", "pk", "sig"})


@dataclass(frozen=True, repr=False)
class InviteToken:
    """A decoded, verified token. `expires_at` None means it never expires."""

    mesh_id: bytes
    secret: bytes
    addrs: tuple[str, ...]
    name: str | None
    issued_at: int
    expires_at: int | None
    issuer: bytes

    def __repr__(self) -> str:
        # The secret is the mesh's password: keep it out of logs.
        return (
            f"InviteToken(mesh_id={self.mesh_id.hex()}, addrs={self.addrs!r}, name={self.name!r}, "
            f"issued_at={self.issued_at}, expires_at={self.expires_at}, issuer={self.issuer.hex()})"
        )


def encode_token(
    identity: Identity,
    mesh_id: bytes | None,
    secret: bytes,
    addrs: Sequence[str],
    *,
    now: float,
    name: str | None = None,
    ttl_s: int | None = None,
) -> str:
    """A token for the mesh `secret` belongs to; `mesh_id` may be None (it is derived from the secret)."""
    derived = private_mesh_id(secret)
    if mesh_id is not None and check_mesh_id(mesh_id) != derived:
        raise WireError("bad_mesh_id", "mesh_id is not the id of this secret")
    if ttl_s is not None and (type(ttl_s) is not int or ttl_s <= 0):
        raise WireError("malformed", "ttl_s must be a positive integer or None")
    issued_at = math.floor(now)
    unsigned = {
        "v": 1,
        "mesh": derived,
        "secret": secret,
        "addrs": list(addrs),
        "name": name,
        "iat": issued_at,
        "exp": None if ttl_s is None else issued_at + ttl_s,
        "pk": identity.public_key,
    }
    text = TOKEN_PREFIX + base58.b58encode(dumps(sign_object(identity, TOKEN_DOMAIN, unsigned))).decode("ascii")
    decode_token(text, now=now)
    return text


def decode_token(text: str, *, now: float) -> InviteToken:
    """Verify a token as pasted by a user (surrounding whitespace is ignored)."""
    if type(text) is not str:
        raise WireError("malformed", "a token is text")
    text = text.strip()
    if len(text) > MAX_TOKEN_CHARS:
        raise WireError("oversized", f"{len(text)} characters > {MAX_TOKEN_CHARS}")
    if not text.startswith(TOKEN_PREFIX):
        raise WireError("malformed", f"an invite token starts with {TOKEN_PREFIX!r}", hint="copy the whole token")
    try:
        data = base58.b58decode(text.removeprefix(TOKEN_PREFIX).encode("ascii"))
    except ValueError:
        raise WireError("malformed", "not base58", hint="copy the whole token") from None
    m = loads_map(data, max_bytes=MAX_TOKEN_BYTES)
    check_version(m)
    check_keys(m, _TOKEN_KEYS)
    mesh_id = get_bytes(m, "mesh", size=MESH_ID_BYTES)
    secret = get_bytes(m, "secret", size=MESH_SECRET_BYTES)
    addrs = get_text_list(m, "addrs", min_items=1, max_items=MAX_TOKEN_ADDRS, max_chars=MAX_ADDR_CHARS)
    name = get_opt_text(m, "name", max_chars=MAX_NAME_CHARS)
    issued_at = get_int(m, "iat")
    expires_at = get_opt_int(m, "exp")
    issuer = get_bytes(m, "pk", size=PUBLIC_KEY_BYTES)
    get_bytes(m, "sig", size=SIGNATURE_BYTES)
    if expires_at is not None and expires_at <= issued_at:
        raise WireError("malformed", "exp must be after iat")
    if mesh_id != private_mesh_id(secret):
        raise WireError("bad_mesh_id", "the mesh id does not match the secret")
    if not verify_object(TOKEN_DOMAIN, m):
        raise WireError("bad_signature", "invite token", hint="the token was changed or mistyped: ask for a new one")
    if expires_at is not None and expires_at <= now:
        raise WireError("expired", f"expired at {expires_at}", hint="ask a mesh member for a new token")
    return InviteToken(mesh_id, secret, addrs, name, issued_at, expires_at, issuer)
