"""The node's persistent Ed25519 identity in its data dir (`$MESHP2P_HOME/identity.key`).

The file holds the 32-byte Ed25519 seed, hex-encoded on one line, readable by its owner only. Hex keeps it
inspectable and copyable; the PeerID (`meshp2p id`) follows from it.
"""

from __future__ import annotations

import os
from pathlib import Path

from meshp2p.errors import ConfigError
from meshp2p.home import meshp2p_home
from meshp2p.wire.identity import SEED_BYTES, Identity
from meshp2p.wire.mesh_id import MESH_SECRET_BYTES, new_mesh_secret

IDENTITY_FILE = "identity.key"


def identity_path(home: Path | None = None) -> Path:
    return (home or meshp2p_home()) / IDENTITY_FILE


def load_or_create_identity(home: Path | None = None) -> Identity:
    """The identity in `home`, created (0600) on first use."""
    path = identity_path(home)
    if path.exists():
        return _read(path)
    identity = Identity.generate()
    _write(path, identity)
    return identity


def rotate_identity(home: Path | None = None) -> tuple[Identity | None, Identity]:
    """Replace the identity with a new one; the old file is kept as identity.key.old. Returns (old, new)."""
    path = identity_path(home)
    old = _read(path) if path.exists() else None
    if old is not None:
        path.replace(path.with_name(IDENTITY_FILE + ".old"))
    new = Identity.generate()
    _write(path, new)
    return old, new


def _read(path: Path) -> Identity:
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a meshp2p identity ({exc})",
                          hint="move it away and a new identity is created, or run `meshp2p rotate-key`") from exc
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"{path} holds {len(seed)} bytes, not a {SEED_BYTES}-byte Ed25519 seed",
                          hint="move it away and a new identity is created")
    return Identity.from_seed(seed)


def _write(path: Path, identity: Identity) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(identity.seed.hex() + "\n")
    tmp.replace(path)


MESH_SECRET_FILE = "mesh.secret"


def load_or_create_mesh_secret(home: Path | None = None) -> bytes:
    """The secret of this node's own private mesh, kept so its invite tokens survive restarts."""
    path = (home or meshp2p_home()) / MESH_SECRET_FILE
    if path.exists():
        try:
            secret = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is unreadable ({exc})",
                              hint="delete it to start a new private mesh (old invite tokens stop working)") from exc
        if len(secret) == MESH_SECRET_BYTES:
            return secret
        raise ConfigError(f"{path} does not hold a {MESH_SECRET_BYTES}-byte secret",
                          hint="delete it to start a new private mesh (old invite tokens stop working)")
    secret = new_mesh_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return secret
