"""Write the test vectors in this folder from fixed inputs; `--check` fails if a file on disk differs.

Everything is deterministic: fixed seeds, times, secrets and nonces, and Ed25519 signatures are
deterministic. Negative vectors are built by signing deliberately wrong maps with the same helpers the
encoders use, so each one fails exactly the check its `reason` names. Bytes are written as lowercase hex.

    /work/venv/bin/python protocols/vectors/generate.py          # rewrite the files
    /work/venv/bin/python protocols/vectors/generate.py --check  # CI: vectors match the implementation
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import base58
import cbor2

from meshp2p.wire import gossip, join, records, token
from meshp2p.wire._cbor import dumps
from meshp2p.wire.identity import Identity, sign_object
from meshp2p.wire.mesh_id import named_mesh_id, normalise_mesh_name, private_mesh_id
from meshp2p.wire.status import status_from_body

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import expect, pad_to, reason_of, write_or_check

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
NOW = 1_750_000_000
SECRET = bytes(range(64, 96))
OTHER_SECRET = bytes(range(96, 128))
GOSSIP_NONCE = bytes(range(200, 212))
DIALER_NONCE = bytes(range(128, 160))
LISTENER_NONCE = bytes(range(160, 192))
MESH_NAME = "Poker-Night"

A = Identity.from_seed(SEED_A)
B = Identity.from_seed(SEED_B)
SEEDS = {"A": SEED_A.hex(), "B": SEED_B.hex()}
IDENTITIES = {"A": A, "B": B}
PUBLIC_MESH = named_mesh_id(MESH_NAME)
PRIVATE_MESH = private_mesh_id(SECRET)
OTHER_MESH = private_mesh_id(OTHER_SECRET)


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def flip_field(data: bytes, key: str = "sig") -> bytes:
    """The same canonical map with one bit of a byte-string field flipped."""
    m = cbor2.loads(data)
    return dumps({**m, key: flip_last_byte(m[key])})


def without(m: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != key}




# ---------------------------------------------------------------- identity


def identity_vectors() -> dict[str, Any]:
    return {
        "format": "identity",
        "spec": "protocols/README.md",
        "identities": [
            {
                "name": name,
                "seed": ident.seed.hex(),
                "public_key": ident.public_key.hex(),
                "peer_id_bytes": ident.peer_id_bytes.hex(),
                "peer_id": ident.peer_id,
            }
            for name, ident in IDENTITIES.items()
        ],
        "signatures": [
            {
                "name": "record_domain",
                "seed": "A",
                "domain": records.RECORD_DOMAIN.hex(),
                "message": dumps({"v": 1}).hex(),
                "signature": A.sign(records.RECORD_DOMAIN + dumps({"v": 1})).hex(),
            }
        ],
    }


# ---------------------------------------------------------------- DHT records

LISTING_BODY: dict[str, Any] = {
    "name": "poker-night",
    "region": "AU",
    "public": True,
    "nodes": 3,
    "clients": 2,
    "max_clients": None,
    "served": ["unsloth/gemma-3-270m-it-GGUF:Q4_K_M"],
    "wanted": ["Qwen/Qwen3-8B-GGUF:Q4_K_M"],
    "capacity_mb": 49152,
    "addrs": ["/ip4/203.0.113.7/tcp/4001/p2p/" + A.peer_id],
    "version": "0.1.0",
}
NODE_BODY: dict[str, Any] = {
    "mesh": PUBLIC_MESH.hex(),
    "region": "AU",
    "role": "host",
    "addrs": ["/ip4/203.0.113.7/tcp/4001", "/ip6/2001:db8::7/tcp/4001"],
    "models": ["unsloth/gemma-3-270m-it-GGUF:Q4_K_M"],
    "version": "0.1.0",
}


def listing(body: dict[str, Any]) -> records.MeshListing:
    return records.MeshListing(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})


def node(body: dict[str, Any]) -> records.NodeRecord:
    return records.NodeRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in body.items()})


def record_map(
    ident: Identity, kind: str, subject: str, body: dict[str, Any], *, iat: int = NOW, ttl: int = 3600
) -> dict[str, Any]:
    return {"v": 1, "k": kind, "s": subject, "pk": ident.public_key, "iat": iat, "exp": iat + ttl, "body": body}


def signed_record(m: dict[str, Any], ident: Identity = A, domain: bytes = records.RECORD_DOMAIN) -> bytes:
    return dumps(sign_object(ident, domain, m))


def record_vectors() -> dict[str, Any]:
    mesh_subject = PUBLIC_MESH.hex()
    mesh_key = records.mesh_key(PUBLIC_MESH)
    node_key_a = records.node_key(A.peer_id)
    valid = []
    for name, ident, kind, subject, body, now, ttl in (
        ("mesh_listing", A, "mesh", mesh_subject, LISTING_BODY, NOW, 3600),
        ("node_record", A, "node", A.peer_id, NODE_BODY, NOW + 0.75, 600),
    ):
        typed = listing(body) if kind == "mesh" else node(body)
        key, value = records.encode_record(ident, kind, subject, typed, now=now, ttl_s=ttl)
        decoded = records.decode_record(key, value, now=now)
        valid.append(
            {
                "name": name,
                "seed": "A",
                "kind": kind,
                "subject": subject,
                "body": body,
                "now": now,
                "ttl_s": ttl,
                "key": key,
                "value": value.hex(),
                "publisher": decoded.publisher,
                "public_key": decoded.public_key.hex(),
                "issued_at": decoded.issued_at,
                "expires_at": decoded.expires_at,
            }
        )

    good_map = record_map(A, "mesh", mesh_subject, LISTING_BODY)
    good = signed_record(good_map)
    good_sig = sign_object(A, records.RECORD_DOMAIN, good_map)["sig"]
    invalid: list[dict[str, Any]] = []

    def bad(name: str, reason: str, key: str, value: bytes, now: float = NOW) -> None:
        expect(reason, lambda: records.decode_record(key, value, now=now), name)
        invalid.append({"name": name, "key": key, "value": value.hex(), "now": now, "reason": reason})

    def with_body(**changes: Any) -> dict[str, Any]:
        return {**good_map, "body": {**LISTING_BODY, **changes}}

    def listing_record(**times: int) -> bytes:
        return signed_record(record_map(A, "mesh", mesh_subject, LISTING_BODY, **times))

    bad("tampered_signature", "bad_signature", mesh_key, flip_field(good))
    bad("tampered_body", "bad_signature", mesh_key, dumps({**with_body(nodes=4), "sig": good_sig}))
    bad("signed_with_token_domain", "bad_signature", mesh_key, signed_record(good_map, domain=token.TOKEN_DOMAIN))
    bad("expired_at_exp", "expired", mesh_key, good, now=NOW + 3600)
    bad("future_iat", "future", mesh_key, listing_record(iat=NOW + 301))
    bad("bad_version", "bad_version", mesh_key, signed_record({**good_map, "v": 2}))
    bad("unknown_kind", "unknown_kind", "/meshp2p/model/abc", good)
    bad("kind_differs_from_key", "key_mismatch", node_key_a, good)
    bad("subject_differs_from_key", "key_mismatch", records.mesh_key(OTHER_MESH), good)
    node_map_by_b = {**record_map(A, "node", A.peer_id, NODE_BODY), "pk": B.public_key}
    bad("node_record_signed_by_other", "key_mismatch", node_key_a, signed_record(node_map_by_b, B))
    bad("unknown_top_level_key", "malformed", mesh_key, signed_record({**good_map, "x": 1}))
    bad("missing_top_level_key", "malformed", mesh_key, signed_record(without(good_map, "iat")))
    bad("int_instead_of_bytes", "malformed", mesh_key, dumps({**good_map, "pk": 7, "sig": good_sig}))
    bad("bool_instead_of_int", "malformed", mesh_key, signed_record(with_body(nodes=True)))
    bad("int_instead_of_bool", "malformed", mesh_key, signed_record(with_body(public=1)))
    bad("text_too_long", "malformed", mesh_key, signed_record(with_body(version="x" * 129)))
    bad("too_many_addrs", "malformed", mesh_key, signed_record(with_body(addrs=["/ip4/1.2.3.4/tcp/1"] * 17)))
    bad("lifetime_too_long", "malformed", mesh_key, listing_record(ttl=86401))
    bad("exp_not_after_iat", "malformed", mesh_key, listing_record(ttl=0))
    node_map = record_map(A, "node", A.peer_id, {**NODE_BODY, "role": "admin"})
    bad("unknown_node_role", "malformed", node_key_a, signed_record(node_map))
    non_canonical = cbor2.dumps(dict(reversed(list(sign_object(A, records.RECORD_DOMAIN, good_map).items()))))
    bad("non_canonical_key_order", "malformed", mesh_key, non_canonical)
    bad("trailing_byte", "malformed", mesh_key, good + b"\x00")
    bad("not_a_map", "malformed", mesh_key, dumps([1, 2, 3]))
    bad("bad_key_prefix", "malformed", "/other/mesh/" + mesh_subject, good)
    bad("mesh_subject_uppercase", "malformed", mesh_key.upper().replace("/MESHP2P/MESH/", "/meshp2p/mesh/"), good)
    padded = pad_to(lambda pad: signed_record(with_body(pad=pad)), records.MAX_RECORD_BYTES + 1)
    bad("oversized", "oversized", mesh_key, padded)
    # An unknown body key is ignored (forward compatibility); it is signed like the rest.
    unknown_body_key = signed_record(with_body(future_field={"any": [1, 2.5, None]}))
    records.decode_record(mesh_key, unknown_body_key, now=NOW)

    older = listing_record(iat=NOW - 100)
    longer = listing_record(ttl=7200)
    other_body = signed_record(with_body(nodes=4))
    forged_newer = flip_field(listing_record(iat=NOW + 10))
    select = [
        {"name": "newest_iat_wins", "values": [older, good], "index": 1},
        {"name": "invalid_never_wins", "values": [good, forged_newer], "index": 0},
        {"name": "tie_later_exp_wins", "values": [longer, good], "index": 0},
        {"name": "tie_greatest_bytes_wins", "values": [good, other_body], "index": 1 if other_body > good else 0},
        {"name": "none_valid", "values": [forged_newer, b""], "index": None, "reason": "no_valid_record"},
    ]
    for case in select:
        values = case["values"]
        if case["index"] is None:
            expect("no_valid_record", lambda values=values: records.select_record(mesh_key, values, now=NOW), "select")
        elif records.select_record(mesh_key, values, now=NOW) != case["index"]:
            raise AssertionError(f"select vector {case['name']}")
        case["values"] = [v.hex() for v in values]
        case["key"] = mesh_key
        case["now"] = NOW

    return {
        "format": "dht-records",
        "spec": "protocols/dht-records.md",
        "seeds": SEEDS,
        "named_mesh_ids": [
            {"name": name, "normalised": normalise_mesh_name(name), "mesh_id": named_mesh_id(name).hex()}
            for name in (MESH_NAME, "  poker-night\n", "Ünïcode Mesh")
        ],
        "private_mesh_ids": [{"secret": s.hex(), "mesh_id": private_mesh_id(s).hex()} for s in (SECRET, OTHER_SECRET)],
        "keys": [
            {"mesh_id": PUBLIC_MESH.hex(), "key": mesh_key},
            {"peer_id": A.peer_id, "key": node_key_a},
        ],
        "provider_keys": [
            {"topic": topic, "key": records.provider_key(topic).hex()}
            for topic in ("meshes", "region:AU", "region:au", "model:unsloth/gemma-3-270m-it-GGUF:Q4_K_M")
        ],
        "valid": valid,
        "invalid": invalid,
        "select": select,
    }



# ---------------------------------------------------------------- invite tokens

TOKEN_ADDRS = ["/ip4/203.0.113.7/tcp/4001/p2p/" + A.peer_id, "/dns4/boot.example.org/tcp/4001/p2p/" + B.peer_id]


def token_map(**changes: Any) -> dict[str, Any]:
    base = {
        "v": 1,
        "mesh": PRIVATE_MESH,
        "secret": SECRET,
        "addrs": TOKEN_ADDRS,
        "name": None,
        "iat": NOW,
        "exp": None,
        "pk": A.public_key,
    }
    return {**base, **changes}


def token_text(m: dict[str, Any], *, domain: bytes = token.TOKEN_DOMAIN, sign: bool = True) -> str:
    signed = sign_object(A, domain, m) if sign else m
    return token.TOKEN_PREFIX + base58.b58encode(dumps(signed)).decode("ascii")


def token_vectors() -> dict[str, Any]:
    valid = []
    for name, kwargs in (
        ("never_expires", {"name": None, "ttl_s": None}),
        ("named_expiring", {"name": "Lab cluster", "ttl_s": 7 * 86400}),
    ):
        text = token.encode_token(A, PRIVATE_MESH, SECRET, TOKEN_ADDRS, now=NOW, **kwargs)  # type: ignore[arg-type]
        decoded = token.decode_token(text, now=NOW)
        valid.append(
            {
                "name": name,
                "seed": "A",
                "mesh_id": PRIVATE_MESH.hex(),
                "secret": SECRET.hex(),
                "addrs": TOKEN_ADDRS,
                "token_name": kwargs["name"],
                "ttl_s": kwargs["ttl_s"],
                "now": NOW,
                "token": text,
                "issued_at": decoded.issued_at,
                "expires_at": decoded.expires_at,
                "issuer": decoded.issuer.hex(),
            }
        )
    good = valid[1]["token"]
    invalid: list[dict[str, Any]] = []

    def bad(name: str, reason: str, text: str, now: float = NOW) -> None:
        expect(reason, lambda: token.decode_token(text, now=now), name)
        invalid.append({"name": name, "token": text, "now": now, "reason": reason})

    signed = sign_object(A, token.TOKEN_DOMAIN, token_map(name="Lab cluster", exp=NOW + 7 * 86400))
    raw = dumps(signed)
    bad("tampered_signature", "bad_signature", token.TOKEN_PREFIX + base58.b58encode(flip_field(raw)).decode())
    bad("tampered_name", "bad_signature", token_text({**signed, "name": "Lab clustex"}, sign=False))
    bad("signed_with_record_domain", "bad_signature", token_text(token_map(), domain=records.RECORD_DOMAIN))
    bad("expired_at_exp", "expired", good, now=NOW + 7 * 86400)
    bad("mesh_id_not_of_secret", "bad_mesh_id", token_text(token_map(mesh=OTHER_MESH)))
    bad("bad_version", "bad_version", token_text(token_map(v=2)))
    bad("no_addrs", "malformed", token_text(token_map(addrs=[])))
    bad("too_many_addrs", "malformed", token_text(token_map(addrs=TOKEN_ADDRS[:1] * 17)))
    bad("short_secret", "malformed", token_text(token_map(secret=SECRET[:16])))
    bad("unknown_key", "malformed", token_text(token_map(x=1)))
    bad("exp_not_after_iat", "malformed", token_text(token_map(exp=NOW)))
    bad("missing_prefix", "malformed", good.removeprefix(token.TOKEN_PREFIX))
    bad("not_base58", "malformed", good[:20] + "0" + good[21:])
    bad("truncated", "malformed", good[:-5])
    bad("oversized", "oversized", token.TOKEN_PREFIX + "2" * (token.MAX_TOKEN_CHARS - 2))
    return {
        "format": "invite-token",
        "spec": "protocols/invite-token.md",
        "seeds": SEEDS,
        "valid": valid,
        "whitespace": {"token": "  " + good + "\n", "decodes_like": "named_expiring"},
        "invalid": invalid,
    }


# ---------------------------------------------------------------- gossip

STATUS_BODY: dict[str, Any] = {
    "role": "host",
    "ram_mb": 32768,
    "vram_mb": 24576,
    "gpu": "NVIDIA GeForce RTX 4090",
    "loaded": ["unsloth/gemma-3-270m-it-GGUF:Q4_K_M"],
    "available": ["unsloth/gemma-3-270m-it-GGUF:Q4_K_M", "Qwen/Qwen3-8B-GGUF:Q4_K_M"],
    "load": 1.5,
    "api_port": 8080,
    "version": "0.1.0",
    "region": "AU",
    "rtt_ms": {B.peer_id: 12.25},
    "addrs": [f"/ip4/192.0.2.1/tcp/4001/p2p/{A.peer_id}"],
    "loading": [],
    "files": {
        "unsloth/gemma-3-270m-it-GGUF:Q4_K_M": "sha256_128:a5fd3b6200112233445566778899aabb:253113024",
        "Qwen/Qwen3-8B-GGUF:Q4_K_M": "sha256_128:0123456789abcdef0123456789abcdef:5027783488",
    },
    "recruit": {
        "Qwen/Qwen3-8B-GGUF:Q4_K_M": {"file": "sha256_128:0123456789abcdef0123456789abcdef:5027783488",
                                      "peers": [B.peer_id]},
    },
    "moe_shards": {
        "sha256_128:fedcba9876543210fedcba9876543210:17285969920": {"cap_bytes": 12000000000,
                                                                   "usage": "imatrix:7b3b0550ad696aa6"},
    },
}
DEMAND_BODY: dict[str, Any] = {"rates": {"unsloth/gemma-3-270m-it-GGUF:Q4_K_M": 0.5}, "ttl_s": 60}
SEQ = 1_749_999_990_000


def inner_map(mesh_id: bytes, **changes: Any) -> dict[str, Any]:
    base = {
        "v": 1,
        "t": "status",
        "mesh": mesh_id,
        "pk": A.public_key,
        "seq": SEQ,
        "ts": NOW * 1000,
        "body": STATUS_BODY,
    }
    return {**base, **changes}


def seal(inner: bytes, topic: str, *, plain: bytes | None = None, mesh: bytes = PRIVATE_MESH,
         secret: bytes = SECRET, **changes: Any) -> bytes:
    """A sealed map as gossip.md builds it (padded plaintext), with `plain` or map keys overridden for bad cases."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    plain = gossip.pad_plaintext(inner) if plain is None else plain
    ct = ChaCha20Poly1305(gossip.gossip_key(mesh, secret)).encrypt(GOSSIP_NONCE, plain, topic.encode())
    return dumps({"v": 1, "enc": gossip.ENCRYPTION_SCHEME, "n": GOSSIP_NONCE, "ct": ct, **changes})


def gossip_vectors() -> dict[str, Any]:
    pub_status = gossip.topic_name(PUBLIC_MESH, "status")
    pub_demand = gossip.topic_name(PUBLIC_MESH, "demand")
    priv_status = gossip.topic_name(PRIVATE_MESH, "status", SECRET)
    priv_demand = gossip.topic_name(PRIVATE_MESH, "demand", SECRET)
    valid = []
    for name, mesh, topic, msg_type, body, secret in (
        ("public_status", PUBLIC_MESH, pub_status, "status", STATUS_BODY, None),
        ("public_demand", PUBLIC_MESH, pub_demand, "demand", DEMAND_BODY, None),
        ("private_status", PRIVATE_MESH, priv_status, "status", STATUS_BODY, SECRET),
    ):
        data = gossip.encode_gossip(
            A, mesh, topic, msg_type, body, seq=SEQ, now=NOW, secret=secret, nonce=GOSSIP_NONCE if secret else None
        )
        msg = gossip.decode_gossip(data, mesh_id=mesh, topic=topic, now=NOW + 1, secret=secret)
        valid.append(
            {
                "name": name,
                "seed": "A",
                "mesh_id": mesh.hex(),
                "topic": topic,
                "type": msg_type,
                "body": body,
                "seq": SEQ,
                "now": NOW,
                "secret": secret.hex() if secret else None,
                "nonce": GOSSIP_NONCE.hex() if secret else None,
                "data": data.hex(),
                "decode_now": NOW + 1,
                "sender": msg.sender,
                "sent_at_ms": msg.sent_at_ms,
            }
        )
    public = bytes.fromhex(valid[0]["data"])
    private = bytes.fromhex(valid[2]["data"])
    good_inner = sign_object(A, gossip.GOSSIP_DOMAIN, inner_map(PUBLIC_MESH))
    priv_inner = dumps(sign_object(A, gossip.GOSSIP_DOMAIN, inner_map(PRIVATE_MESH)))
    invalid: list[dict[str, Any]] = []

    def bad(
        name: str,
        reason: str,
        data: bytes,
        *,
        mesh: bytes = PUBLIC_MESH,
        topic: str = pub_status,
        secret: bytes | None = None,
        now: float = NOW,
    ) -> None:
        expect(reason, lambda: gossip.decode_gossip(data, mesh_id=mesh, topic=topic, now=now, secret=secret), name)
        invalid.append(
            {
                "name": name,
                "data": data.hex(),
                "mesh_id": mesh.hex(),
                "topic": topic,
                "secret": secret.hex() if secret else None,
                "now": now,
                "reason": reason,
            }
        )

    def signed(domain: bytes = gossip.GOSSIP_DOMAIN, **changes: Any) -> bytes:
        return dumps(sign_object(A, domain, inner_map(PUBLIC_MESH, **changes)))

    def bad_private(name: str, reason: str, data: bytes, *, topic: str = priv_status, secret: bytes = SECRET) -> None:
        bad(name, reason, data, mesh=PRIVATE_MESH, topic=topic, secret=secret)

    bad("tampered_signature", "bad_signature", flip_field(public))
    bad("tampered_seq", "bad_signature", dumps({**good_inner, "seq": SEQ + 1}))
    bad("signed_with_record_domain", "bad_signature", signed(domain=records.RECORD_DOMAIN))
    bad("expired", "expired", public, now=NOW + 30.001)
    bad("future", "future", public, now=NOW - 5.001)
    bad("other_mesh", "key_mismatch", signed(mesh=OTHER_MESH))
    bad("bad_version", "bad_version", signed(v=2))
    bad("unknown_top_level_key", "malformed", signed(x=1))
    bad("bool_seq", "malformed", signed(seq=True))
    bad("negative_seq", "malformed", signed(seq=-1))
    bad("empty_type", "malformed", signed(t=""))
    bad("body_not_a_map", "malformed", signed(body=[1]))
    padded = pad_to(lambda pad: signed(body={**STATUS_BODY, "pad": pad}), gossip.MAX_GOSSIP_BYTES + 1)
    bad("oversized", "oversized", padded)
    bad("encrypted_on_public_mesh", "malformed", private, mesh=PRIVATE_MESH,
        topic=gossip.topic_name(PRIVATE_MESH, "status"))
    bad_private("plain_on_private_mesh", "decrypt_failed", signed(mesh=PRIVATE_MESH))
    bad_private("sealed_with_another_key", "decrypt_failed",
                seal(priv_inner, priv_status, mesh=OTHER_MESH, secret=OTHER_SECRET))
    bad_private("tampered_ciphertext", "decrypt_failed", flip_field(private, "ct"))
    bad_private("other_topic", "decrypt_failed", private, topic=priv_demand)
    bad_private("withdrawn_scheme_1", "bad_version",
                seal(priv_inner, priv_status, plain=priv_inner, enc=1, mesh=PRIVATE_MESH))
    bad_private("unpadded", "malformed", seal(priv_inner, priv_status, plain=priv_inner))
    nonzero_padding = bytearray(gossip.pad_plaintext(priv_inner))
    nonzero_padding[-1] = 1
    bad_private("nonzero_padding", "malformed", seal(priv_inner, priv_status, plain=bytes(nonzero_padding)))
    overlong = bytearray(gossip.pad_plaintext(priv_inner))
    overlong[:4] = len(overlong).to_bytes(4, "big")
    bad_private("length_past_the_end", "malformed", seal(priv_inner, priv_status, plain=bytes(overlong)))
    bad_private("other_mesh_topic", "key_mismatch", private,
                topic=gossip.topic_name(OTHER_MESH, "status", OTHER_SECRET))
    bad_private("public_topic_on_private_mesh", "key_mismatch", private,
                topic=gossip.topic_name(PRIVATE_MESH, "status"))
    bad_private("short_nonce", "malformed", seal(priv_inner, priv_status, n=b"\x00" * 8))

    status_invalid = []
    for name, changes in (
        ("load_as_int", {"load": 1}),
        ("negative_load", {"load": -0.5}),
        ("unknown_role", {"role": "admin"}),
        ("port_zero", {"api_port": 0}),
        ("missing_version", {"version": None}),
        ("rtt_as_int", {"rtt_ms": {B.peer_id: 12}}),
        ("too_many_rtts", {"rtt_ms": {f"peer{i}": 1.0 for i in range(65)}}),
        ("files_not_a_map", {"files": ["sha256_128:a5fd3b6200112233445566778899aabb:253113024"]}),
        ("file_id_uppercase", {"files": {"m": "sha256_128:A5FD3B6200112233445566778899AABB:253113024"}}),
        ("file_id_short_digest", {"files": {"m": "sha256_128:a5fd3b62:253113024"}}),
        ("file_id_as_int", {"files": {"m": 16}}),
        ("file_empty_model_id", {"files": {"": "sha256_128:a5fd3b6200112233445566778899aabb:253113024"}}),
        ("too_many_files", {"files": {f"m{i}": f"sha256_128:{i:032x}:{i}" for i in range(65)}}),
        ("recruit_not_a_map", {"recruit": ["m"]}),
        ("recruit_entry_not_a_map", {"recruit": {"m": "sha256_128:a5fd3b6200112233445566778899aabb:253113024"}}),
        ("recruit_bad_file", {"recruit": {"m": {"file": "sha256_128:a5fd3b62:253113024", "peers": []}}}),
        ("recruit_peers_not_text", {"recruit": {"m": {"file": "sha256_128:a5fd3b6200112233445566778899aabb:253113024",
                                                      "peers": [7]}}}),
        ("too_many_recruits", {"recruit": {f"m{i}": {"file": f"sha256_128:{i:032x}:{i}", "peers": []}
                                           for i in range(9)}}),
        ("moe_shards_not_a_map", {"moe_shards": ["imatrix:7b3b0550ad696aa6"]}),
        ("moe_shard_bad_content_id", {"moe_shards": {"m": {"cap_bytes": 1, "usage": "imatrix:00"}}}),
        ("moe_shard_cap_negative", {"moe_shards": {
            "sha256_128:fedcba9876543210fedcba9876543210:17285969920": {"cap_bytes": -1, "usage": "imatrix:00"}}}),
        ("moe_shard_usage_empty", {"moe_shards": {
            "sha256_128:fedcba9876543210fedcba9876543210:17285969920": {"cap_bytes": 1, "usage": ""}}}),
    ):
        body = {k: v for k, v in {**STATUS_BODY, **changes}.items() if v is not None or k in ("gpu", "region")}
        expect("malformed", lambda body=body: status_from_body(body), name)
        status_invalid.append({"name": name, "body": body, "reason": "malformed"})

    guard = gossip.ReplayGuard()
    replay = []
    for sender, seq in (("A", 5), ("A", 5), ("A", 4), ("A", 6), ("B", 1), ("A", 7)):
        peer = IDENTITIES[sender].peer_id
        replay.append({"sender": peer, "seq": seq, "reason": reason_of(lambda p=peer, s=seq: guard.accept(p, s))})
    counter = gossip.SequenceCounter()
    sequence = [{"now": now, "seq": counter.next(now=now)} for now in (NOW, NOW, NOW + 0.0005, NOW + 1)]

    return {
        "format": "gossip",
        "spec": "protocols/gossip.md",
        "seeds": SEEDS,
        "topics": [
            {"mesh_id": mesh.hex(), "name": name, "secret": secret.hex() if secret else None,
             "topic": gossip.topic_name(mesh, name, secret)}
            for mesh, secret in ((PUBLIC_MESH, None), (PRIVATE_MESH, SECRET))
            for name in ("status", "demand", "blackboard")
        ],
        "sealed_sizes": list(gossip.SEALED_SIZES),
        "gossip_keys": [
            {
                "mesh_id": PRIVATE_MESH.hex(),
                "secret": SECRET.hex(),
                "key": gossip.gossip_key(PRIVATE_MESH, SECRET).hex(),
                "topic_key": gossip.topic_key(PRIVATE_MESH, SECRET).hex(),
            }
        ],
        "valid": valid,
        "invalid": invalid,
        "status_invalid": status_invalid,
        "replay": replay,
        "sequence": sequence,
    }


# ---------------------------------------------------------------- join


def join_vectors() -> dict[str, Any]:
    cases = []
    for name, mesh, secret in (("private", PRIVATE_MESH, SECRET), ("named", PUBLIC_MESH, join.PUBLIC_MESH_SECRET)):
        dialer = join.JoinDialer(
            mesh, secret, local_peer_id=A.peer_id_bytes, remote_peer_id=B.peer_id_bytes, nonce=DIALER_NONCE
        )
        listener = join.JoinListener(
            {mesh: secret}, local_peer_id=B.peer_id_bytes, remote_peer_id=A.peer_id_bytes, nonce=LISTENER_NONCE
        )
        hello = dialer.hello()
        challenge = listener.receive(hello)
        proof = dialer.receive(challenge)
        assert proof is not None
        ok = listener.receive(proof)
        assert dialer.receive(ok) is None and dialer.joined and listener.joined
        cases.append(
            {
                "name": name,
                "mesh_id": mesh.hex(),
                "secret": secret.hex(),
                "join_key": join.join_key(mesh, secret).hex(),
                "dialer_seed": "A",
                "listener_seed": "B",
                "dialer_peer_id": A.peer_id_bytes.hex(),
                "listener_peer_id": B.peer_id_bytes.hex(),
                "dialer_nonce": DIALER_NONCE.hex(),
                "listener_nonce": LISTENER_NONCE.hex(),
                "frames": {
                    "hello": join.frame(hello).hex(),
                    "challenge": join.frame(challenge).hex(),
                    "proof": join.frame(proof).hex(),
                    "ok": join.frame(ok).hex(),
                },
            }
        )
    frames = {k: bytes.fromhex(v) for k, v in cases[0]["frames"].items()}
    key = join.join_key(PRIVATE_MESH, SECRET)

    def listener() -> join.JoinListener:
        return join.JoinListener(
            {PRIVATE_MESH: SECRET}, local_peer_id=B.peer_id_bytes, remote_peer_id=A.peer_id_bytes, nonce=LISTENER_NONCE
        )

    def dialer() -> join.JoinDialer:
        d = join.JoinDialer(
            PRIVATE_MESH, SECRET, local_peer_id=A.peer_id_bytes, remote_peer_id=B.peer_id_bytes, nonce=DIALER_NONCE
        )
        d.hello()
        return d

    def run(side: str, received: list[bytes]) -> None:
        machine: join.JoinDialer | join.JoinListener = listener() if side == "listener" else dialer()
        reader = join.FrameReader()
        for message in reader.feed(b"".join(received)):
            machine.receive(message)

    invalid: list[dict[str, Any]] = []

    def challenge_with(proof: bytes) -> bytes:
        return join.frame({"v": 1, "nonce": LISTENER_NONCE, "proof": proof})

    def bad(name: str, reason: str, side: str, received: list[bytes]) -> None:
        expect(reason, lambda: run(side, received), name)
        invalid.append({"name": name, "side": side, "received": [f.hex() for f in received], "reason": reason})

    relayed = join.join_proof(key, b"dialer", DIALER_NONCE, LISTENER_NONCE, B.peer_id_bytes, B.peer_id_bytes)
    wrong_key = join.join_key(PRIVATE_MESH, OTHER_SECRET)
    wrong_listener_proof = join.join_proof(
        wrong_key, b"listener", DIALER_NONCE, LISTENER_NONCE, A.peer_id_bytes, B.peer_id_bytes
    )

    def hello(**changes: Any) -> bytes:
        return join.frame({"v": 1, "mesh": PRIVATE_MESH, "nonce": DIALER_NONCE, **changes})

    bad("unknown_mesh", "bad_mesh_id", "listener", [hello(mesh=OTHER_MESH)])
    bad("hello_bad_version", "bad_version", "listener", [hello(v=2)])
    bad("hello_extra_key", "malformed", "listener", [hello(x=1)])
    bad("hello_short_nonce", "malformed", "listener", [hello(nonce=b"\x00" * 8)])
    bad("dialer_wrong_secret", "bad_proof", "listener", [frames["hello"], join.frame({"v": 1, "proof": b"\x00" * 32})])
    bad("dialer_proof_relayed", "bad_proof", "listener", [frames["hello"], join.frame({"v": 1, "proof": relayed})])
    bad(
        "listener_proof_as_dialer_proof",
        "bad_proof",
        "listener",
        [frames["hello"], join.frame({"v": 1, "proof": bytes.fromhex(cases[0]["frames"]["challenge"])[-32:]})],
    )
    bad("listener_wrong_secret", "bad_proof", "dialer", [challenge_with(wrong_listener_proof)])
    bad("listener_rejects", "rejected", "dialer", [join.frame(join.rejection("bad_mesh_id"))])
    bad("ok_before_proof", "malformed", "dialer", [join.frame({"v": 1, "ok": True})])
    bad("second_hello", "malformed", "listener", [frames["hello"], frames["hello"]])
    bad("oversized_frame", "oversized", "listener", [(join.MAX_FRAME_BYTES + 1).to_bytes(4, "big")])
    bad("empty_frame", "malformed", "listener", [bytes(4)])
    bad("frame_not_a_map", "malformed", "listener", [bytes.fromhex("0000000483010203")])
    return {
        "format": "join",
        "spec": "protocols/join.md",
        "seeds": SEEDS,
        "handshakes": cases,
        "invalid": invalid,
    }


def build() -> dict[str, dict[str, Any]]:
    return {
        "identity.json": identity_vectors(),
        "dht-records.json": record_vectors(),
        "invite-token.json": token_vectors(),
        "gossip.json": gossip_vectors(),
        "join.json": join_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", build, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
