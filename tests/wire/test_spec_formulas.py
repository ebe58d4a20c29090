"""The vectors checked against the spec's own formulas, computed here with hashlib, hmac, HKDF and ChaCha20-Poly1305
directly: the spec is the reference, not our code.

protocols/vectors/generate*.py call the implementation for both the bytes and the decoded fields, so a wrong change
to the code plus a regenerate would keep every vector test green; these tests would not. Each derives what
protocols/*.md writes down (mesh ids, provider keys, topic names, the join key and proofs, the gossip key and the
private-message seal) from the inputs alone.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from helpers.wire import load_vectors

RECORDS = load_vectors("dht-records.json")
GOSSIP = load_vectors("gossip.json")
JOIN = load_vectors("join.json")


def hkdf(ikm: bytes, salt: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info.encode()).derive(ikm)


def test_mesh_ids_are_the_spec_s_hashes():
    """dht-records.md, "Mesh ids"."""
    for case in RECORDS["named_mesh_ids"]:
        normalised = case["name"].strip().lower()
        assert normalised == case["normalised"]
        digest = hashlib.sha256(b"meshp2p/mesh-name/v1\0" + normalised.encode()).digest()[:16]
        assert digest.hex() == case["mesh_id"]
    for case in RECORDS["private_mesh_ids"]:
        digest = hashlib.sha256(b"meshp2p/mesh-id/v1\0" + bytes.fromhex(case["secret"])).digest()[:16]
        assert digest.hex() == case["mesh_id"]


def test_provider_keys_are_sha2_multihashes_of_the_topic():
    """dht-records.md, "Provider keys": regions are uppercased (after trimming) before hashing."""
    for case in RECORDS["provider_keys"]:
        topic = case["topic"]
        if topic.startswith("region:"):
            topic = "region:" + topic.removeprefix("region:").strip().upper()
        key = b"\x12\x20" + hashlib.sha256(b"meshp2p/provide/v1\0" + topic.encode()).digest()
        assert key.hex() == case["key"], case["topic"]


def test_topic_names_and_the_gossip_keys_follow_the_spec():
    """gossip.md, "Topics" and the sealed envelope's key."""
    for case in GOSSIP["topics"]:
        mesh_id = bytes.fromhex(case["mesh_id"])
        if case["secret"] is None:
            assert case["topic"] == f"/meshp2p/{mesh_id.hex()}/{case['name']}/1"
            continue
        topic_key = hkdf(bytes.fromhex(case["secret"]), mesh_id, "meshp2p/gossip-topic/v1")
        tag = hmac.new(topic_key, case["name"].encode(), hashlib.sha256).digest()[:16]
        assert case["topic"] == f"/meshp2p/sealed/{tag.hex()}/1"
    for case in GOSSIP["gossip_keys"]:
        secret, mesh_id = bytes.fromhex(case["secret"]), bytes.fromhex(case["mesh_id"])
        assert hkdf(secret, mesh_id, "meshp2p/gossip-key/v1").hex() == case["key"]
        assert hkdf(secret, mesh_id, "meshp2p/gossip-topic/v1").hex() == case["topic_key"]


def test_a_sealed_message_opens_with_the_spec_s_key_nonce_and_padding():
    """gossip.md, the sealed envelope: ChaCha20-Poly1305 under the gossip key, the topic as associated data, a
    length-prefixed inner map padded with zeros to one of the sealed sizes."""
    sealed = [c for c in GOSSIP["valid"] if c["secret"] is not None]
    assert sealed, "the vectors have sealed messages"
    for case in sealed:
        data = bytes.fromhex(case["data"])
        assert len(data) in GOSSIP["sealed_sizes"], "padded to a fixed size"
        envelope = cbor2.loads(data)
        assert set(envelope) == {"v", "enc", "n", "ct"} and (envelope["v"], envelope["enc"]) == (1, 2)
        assert envelope["n"].hex() == case["nonce"]
        key = hkdf(bytes.fromhex(case["secret"]), bytes.fromhex(case["mesh_id"]), "meshp2p/gossip-key/v1")
        plaintext = ChaCha20Poly1305(key).decrypt(envelope["n"], envelope["ct"], case["topic"].encode())
        (length,) = struct.unpack(">I", plaintext[:4])
        inner, padding = plaintext[4:4 + length], plaintext[4 + length:]
        assert padding == bytes(len(padding)), "the padding is zero bytes"
        message = cbor2.loads(inner)
        assert message["t"] == case["type"] and message["body"] == case["body"]
        assert cbor2.dumps(message, canonical=True) == inner, "the inner map is deterministic CBOR"


def test_the_join_key_and_both_proofs_are_the_spec_s_hmacs():
    """join.md, "Keys": HKDF of the secret (empty on a named mesh), HMACs over both nonces and both PeerIDs."""
    for case in JOIN["handshakes"]:
        mesh_id = bytes.fromhex(case["mesh_id"])
        secret = bytes.fromhex(case["secret"]) if case["secret"] else b""
        join_key = hkdf(secret, mesh_id, "meshp2p/join-key/v1")
        assert join_key.hex() == case["join_key"], case["name"]
        transcript = b"".join(bytes.fromhex(case[k]) for k in ("dialer_nonce", "listener_nonce", "dialer_peer_id",
                                                                "listener_peer_id"))
        frames = case["frames"]
        challenge = cbor2.loads(bytes.fromhex(frames["challenge"])[4:])
        proof = cbor2.loads(bytes.fromhex(frames["proof"])[4:])
        assert challenge["proof"] == hmac.new(join_key, b"listener" + transcript, hashlib.sha256).digest()
        assert proof["proof"] == hmac.new(join_key, b"dialer" + transcript, hashlib.sha256).digest()
