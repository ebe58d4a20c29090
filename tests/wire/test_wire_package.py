"""Rules that hold across the wire package: PeerIDs match libp2p, layering, reasons, and current vectors."""

from __future__ import annotations

import ast
import json

from helpers.wire import REPO, VECTORS_DIR, expect_reason, generator_check, load_vectors
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from meshp2p.errors import MeshP2PError
from meshp2p.wire import WIRE_REASONS, Identity, WireError, peer_id_bytes, peer_id_from_public_key, verify

V = load_vectors("identity.json")


def test_identity_vectors() -> None:
    for case in V["identities"]:
        ident = Identity.from_seed(bytes.fromhex(case["seed"]))
        assert ident.public_key.hex() == case["public_key"]
        assert ident.peer_id_bytes.hex() == peer_id_bytes(ident.public_key).hex() == case["peer_id_bytes"]
        assert ident.peer_id == peer_id_from_public_key(ident.public_key) == case["peer_id"]
        assert ident.peer_id.startswith("12D3KooW")


def check_against_libp2p(seed: bytes) -> None:
    key_pair = create_new_key_pair(seed)
    peer_id = ID.from_pubkey(key_pair.public_key)
    ours = Identity.from_seed(seed)
    assert ours.public_key == key_pair.public_key.to_bytes()
    assert ours.peer_id == peer_id.to_base58()
    assert ours.peer_id_bytes == peer_id.to_bytes()


def test_peer_ids_match_libp2p_for_the_vector_seeds() -> None:
    for case in V["identities"]:
        check_against_libp2p(bytes.fromhex(case["seed"]))


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_peer_ids_match_libp2p_for_any_seed(seed: bytes) -> None:
    check_against_libp2p(seed)


def test_signature_vector_and_verify() -> None:
    (case,) = V["signatures"]
    ident = Identity.from_seed(bytes.fromhex(V["identities"][0]["seed"]))
    data = bytes.fromhex(case["domain"]) + bytes.fromhex(case["message"])
    sig = ident.sign(data)
    assert sig.hex() == case["signature"]
    assert verify(ident.public_key, data, sig)
    assert not verify(ident.public_key, data + b"x", sig)
    assert not verify(ident.public_key[:31], data, sig)
    assert not verify(ident.public_key, data, sig[:63])
    assert not verify(bytes(32), data, sig)
    # RFC 8032 malleability: S + L is the same signature mathematically and MUST be rejected.
    order = 2**252 + 27742317777372353535851937790883648493
    malleated = sig[:32] + (int.from_bytes(sig[32:], "little") + order).to_bytes(32, "little")
    assert not verify(ident.public_key, data, malleated)


def test_identity_keeps_its_seed_out_of_repr() -> None:
    ident = Identity.generate()
    assert ident.seed.hex() not in repr(ident) and ident.peer_id in repr(ident)
    assert Identity.generate().peer_id != ident.peer_id
    assert Identity.from_seed(ident.seed).peer_id == ident.peer_id
    expect_reason("malformed", lambda: Identity.from_seed(bytes(31)))
    expect_reason("malformed", lambda: peer_id_bytes(bytes(33)))


def test_wire_error_is_a_meshp2p_error_with_a_stable_reason() -> None:
    err = WireError("expired", "at 5")
    assert isinstance(err, MeshP2PError)
    assert err.reason == "expired" and str(err) == "expired: at 5"
    used = set()
    for path in VECTORS_DIR.glob("*.json"):
        used |= _reasons(json.loads(path.read_text(encoding="utf-8")))
    assert used - {None} <= WIRE_REASONS
    assert WIRE_REASONS - used == set(), "every reason has a vector"


def _reasons(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {node["reason"]} if "reason" in node else set()
        return found.union(*(_reasons(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_reasons(v) for v in node))
    return set()


def test_wire_is_pure() -> None:
    """No I/O, clocks or libp2p; of meshp2p only the error hierarchy (see STYLE.md: the protocol core does no I/O)."""
    banned = {"socket", "trio", "libp2p", "time", "datetime", "asyncio", "random", "httpx", "multiaddr"}
    for path in (REPO / "meshp2p" / "wire").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
                if name.startswith("meshp2p"):
                    assert name == "meshp2p.errors" or name.startswith("meshp2p.wire"), f"{path.name} imports {name}"


def test_vectors_on_disk_are_what_the_generator_writes() -> None:
    assert generator_check("generate.py") == 0
