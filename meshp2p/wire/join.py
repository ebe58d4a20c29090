"""The join handshake (protocols/join.md): both peers prove they know the mesh secret, bound to both peer ids.

Sans-IO like h11: `FrameReader` turns stream bytes into messages, `frame` turns messages into bytes, and
`JoinDialer` / `JoinListener` take each decoded message and return the next one to send. The trio code that
owns the libp2p stream only moves bytes and closes it when a `WireError` comes out.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshp2p.wire._cbor import check_keys, check_version, dumps, get_bool, get_bytes, get_text, loads_map
from meshp2p.wire.errors import WireError
from meshp2p.wire.framing import PayloadReader, frame_bytes
from meshp2p.wire.mesh_id import MESH_ID_BYTES, MESH_SECRET_BYTES, check_mesh_id

JOIN_PROTOCOL_ID = "/meshp2p/join/1.0.0"
MAX_FRAME_BYTES = 4096
JOIN_KEY_INFO = b"meshp2p/join-key/v1"
JOIN_NONCE_BYTES = 32
PROOF_BYTES = 32
#: A named mesh has no secret: joining it proves only that the peer knows the name (hence the mesh id).
PUBLIC_MESH_SECRET = b""
MAX_PEER_ID_BYTES = 128
MAX_ERROR_CHARS = 128
_LISTENER_LABEL = b"listener"
_DIALER_LABEL = b"dialer"


def frame(msg: dict[str, Any]) -> bytes:
    """4-byte big-endian length, then the canonical CBOR map."""
    return frame_bytes(dumps(msg), max_bytes=MAX_FRAME_BYTES)


class FrameReader:
    """Feed stream bytes in any chunking; get whole messages out. Once it fails it stays failed."""

    def __init__(self) -> None:
        self._payloads = PayloadReader(max_bytes=MAX_FRAME_BYTES)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame: non-zero at end of stream means the peer hung up mid-message."""
        return self._payloads.buffered

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        for payload in self._payloads.feed(data):
            try:
                messages.append(loads_map(payload, max_bytes=MAX_FRAME_BYTES))
            except WireError as exc:
                self._payloads.fail(exc)
                raise
        return messages


def join_key(mesh_id: bytes, secret: bytes) -> bytes:
    """HMAC key of the handshake; salted with the mesh id so a public mesh's empty secret differs per mesh."""
    if type(secret) is not bytes or len(secret) not in (0, MESH_SECRET_BYTES):
        raise WireError("malformed", f"a mesh secret is {MESH_SECRET_BYTES} bytes (or empty for a named mesh)")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=check_mesh_id(mesh_id), info=JOIN_KEY_INFO)
    return hkdf.derive(secret)


def join_proof(
    key: bytes, label: bytes, dialer_nonce: bytes, listener_nonce: bytes, dialer_peer_id: bytes, listener_peer_id: bytes
) -> bytes:
    """HMAC over both nonces and both peer ids: fresh per handshake and useless when relayed to a third peer.

    Peer ids are multihashes, which carry their own length, so the concatenation is unambiguous.
    """
    transcript = label + dialer_nonce + listener_nonce + dialer_peer_id + listener_peer_id
    return hmac.new(key, transcript, hashlib.sha256).digest()


def rejection(reason: str) -> dict[str, Any]:
    """The listener's last message when a join fails; send it, then close the stream."""
    return {"v": 1, "ok": False, "error": reason[:MAX_ERROR_CHARS]}


class _State(enum.Enum):
    START = "start"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_RESULT = "await_result"
    AWAIT_HELLO = "await_hello"
    AWAIT_PROOF = "await_proof"
    JOINED = "joined"
    FAILED = "failed"


def _check_peer_id(peer_id: bytes) -> bytes:
    if type(peer_id) is not bytes or not 1 <= len(peer_id) <= MAX_PEER_ID_BYTES:
        raise WireError("malformed", "a binary peer id (multihash) is 1..128 bytes")
    return peer_id


def _nonce(nonce: bytes | None) -> bytes:
    if nonce is None:
        return os.urandom(JOIN_NONCE_BYTES)
    if type(nonce) is not bytes or len(nonce) != JOIN_NONCE_BYTES:
        raise WireError("malformed", f"a join nonce is {JOIN_NONCE_BYTES} bytes")
    return nonce


def _message(msg: object) -> dict[str, Any]:
    if type(msg) is not dict:
        raise WireError("malformed", "a join message is a map")
    check_version(msg)
    return msg


class JoinDialer:
    """The side that opened the stream and wants into `mesh_id`.

    Call `hello()` and send it; pass each received message to `receive`, send what it returns, and stop when
    it returns None (`joined` is then True). Any WireError ends the handshake.
    """

    def __init__(
        self,
        mesh_id: bytes,
        secret: bytes,
        *,
        local_peer_id: bytes,
        remote_peer_id: bytes,
        nonce: bytes | None = None,
    ) -> None:
        self.mesh_id = check_mesh_id(mesh_id)
        self._key = join_key(mesh_id, secret)
        self._local = _check_peer_id(local_peer_id)
        self._remote = _check_peer_id(remote_peer_id)
        self._nonce = _nonce(nonce)
        self._state = _State.START

    @property
    def joined(self) -> bool:
        return self._state is _State.JOINED

    def hello(self) -> dict[str, Any]:
        if self._state is not _State.START:
            raise WireError("malformed", "hello() was already called")
        self._state = _State.AWAIT_CHALLENGE
        return {"v": 1, "mesh": self.mesh_id, "nonce": self._nonce}

    def receive(self, msg: dict[str, Any]) -> dict[str, Any] | None:
        state, self._state = self._state, _State.FAILED
        msg = _message(msg)
        if "ok" in msg:
            _read_result(msg)  # raises unless ok
            if state is not _State.AWAIT_RESULT:
                raise WireError("malformed", "the listener accepted before the proof")
            self._state = _State.JOINED
            return None
        if state is not _State.AWAIT_CHALLENGE:
            raise WireError("malformed", f"unexpected message in state {state.value}")
        check_keys(msg, ("v", "nonce", "proof"))
        listener_nonce = get_bytes(msg, "nonce", size=JOIN_NONCE_BYTES)
        proof = get_bytes(msg, "proof", size=PROOF_BYTES)
        transcript = (self._nonce, listener_nonce, self._local, self._remote)
        if not hmac.compare_digest(proof, join_proof(self._key, _LISTENER_LABEL, *transcript)):
            raise WireError("bad_proof", "the listener does not know the mesh secret")
        self._state = _State.AWAIT_RESULT
        return {"v": 1, "proof": join_proof(self._key, _DIALER_LABEL, *transcript)}


class JoinListener:
    """The side that accepted the stream; `meshes` maps each mesh id it serves to its secret (b"" if named).

    Pass each received message to `receive` and send what it returns. On a WireError, send
    `rejection(err.reason)` and close; after the second message `joined` is True and `mesh_id` is set.
    """

    def __init__(
        self,
        meshes: Mapping[bytes, bytes],
        *,
        local_peer_id: bytes,
        remote_peer_id: bytes,
        nonce: bytes | None = None,
    ) -> None:
        self._meshes = meshes
        self._local = _check_peer_id(local_peer_id)
        self._remote = _check_peer_id(remote_peer_id)
        self._nonce = _nonce(nonce)
        self._state = _State.AWAIT_HELLO
        self._key = b""
        self._dialer_nonce = b""
        self.mesh_id: bytes | None = None

    @property
    def joined(self) -> bool:
        return self._state is _State.JOINED

    def receive(self, msg: dict[str, Any]) -> dict[str, Any]:
        state, self._state = self._state, _State.FAILED
        msg = _message(msg)
        if state is _State.AWAIT_HELLO:
            check_keys(msg, ("v", "mesh", "nonce"))
            mesh_id = get_bytes(msg, "mesh", size=MESH_ID_BYTES)
            self._dialer_nonce = get_bytes(msg, "nonce", size=JOIN_NONCE_BYTES)
            secret = self._meshes.get(mesh_id)
            if secret is None:
                raise WireError("bad_mesh_id", "not a member of that mesh")
            self._key = join_key(mesh_id, secret)
            self.mesh_id = mesh_id
            self._state = _State.AWAIT_PROOF
            proof = join_proof(self._key, _LISTENER_LABEL, *self._transcript())
            return {"v": 1, "nonce": self._nonce, "proof": proof}
        if state is _State.AWAIT_PROOF:
            check_keys(msg, ("v", "proof"))
            proof = get_bytes(msg, "proof", size=PROOF_BYTES)
            if not hmac.compare_digest(proof, join_proof(self._key, _DIALER_LABEL, *self._transcript())):
                raise WireError("bad_proof", "the dialer does not know the mesh secret")
            self._state = _State.JOINED
            return {"v": 1, "ok": True}
        raise WireError("malformed", f"unexpected message in state {state.value}")

    def _transcript(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self._dialer_nonce, self._nonce, self._remote, self._local)


def _read_result(msg: dict[str, Any]) -> None:
    if get_bool(msg, "ok"):
        check_keys(msg, ("v", "ok"))
        return
    check_keys(msg, ("v", "ok", "error"))
    raise WireError("rejected", get_text(msg, "error", max_chars=MAX_ERROR_CHARS))
