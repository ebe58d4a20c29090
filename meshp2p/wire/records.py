"""Signed DHT records under `/meshp2p/<kind>/<subject>`: mesh listings and node records (protocols/dht-records.md).

The DHT is open: anyone can store anything under any key. So every value carries its publisher's key, a
signature and its own expiry, and the validator (`decode_record`) and `select_record` decide from the bytes
alone, with `now` passed in, which value a node believes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meshp2p.wire._cbor import (
    check_keys,
    check_version,
    dumps,
    get_bool,
    get_bytes,
    get_int,
    get_map,
    get_opt_int,
    get_opt_text,
    get_text,
    get_text_list,
    loads_map,
    require_keys,
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
from meshp2p.wire.mesh_id import mesh_id_hex, named_mesh_id, new_mesh_secret, parse_mesh_id_hex, private_mesh_id
from meshp2p.wire.status import Role

__all__ = [
    "KIND_MESH",
    "KIND_NODE",
    "MAX_CLOCK_SKEW_S",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_TTL_S",
    "MESHES_TOPIC",
    "RECORD_DOMAIN",
    "MeshListing",
    "NodeRecord",
    "RecordBody",
    "SignedRecord",
    "decode_record",
    "encode_record",
    "mesh_key",
    "model_topic",
    "named_mesh_id",
    "new_mesh_secret",
    "node_key",
    "private_mesh_id",
    "provider_key",
    "region_topic",
    "select_record",
]

RECORD_DOMAIN = b"meshp2p/record/v1\x00"
MAX_RECORD_BYTES = 8192
#: Clocks of home machines drift; a record dated up to this far ahead is still believed.
MAX_CLOCK_SKEW_S = 300
#: Publishers re-put long before this: a record that claims to live longer would outlive a departed node.
MAX_RECORD_TTL_S = 86400
MAX_KEY_CHARS = 256
MAX_TEXT_CHARS = 128
#: Relayed multiaddrs (`.../p2p/<id>/p2p-circuit/p2p/<id>`) run to about 180 characters.
MAX_ADDR_CHARS = 256
MAX_LIST_ITEMS = 64
MAX_ADDRS = 16

KEY_PREFIX = "/meshp2p/"
KIND_MESH = "mesh"
KIND_NODE = "node"
KINDS = frozenset({KIND_MESH, KIND_NODE})
#: A node record names what the node is to the mesh; a pipeline's roles (worker) and promotion's (standby) are
#: status-only.
NODE_ROLES = frozenset({Role.HOST, Role.CLIENT, Role.BOOTSTRAP})
_RECORD_KEYS = frozenset({"v", "k", "s", "pk", "iat", "exp", "body", "sig"})
_BASE58_ALPHABET = frozenset("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")

_PROVIDE_DOMAIN = b"meshp2p/provide/v1\x00"
#: sha2-256 multihash header: code 0x12, digest length 0x20.
_SHA256_MULTIHASH_PREFIX = bytes([0x12, 0x20])
MESHES_TOPIC = "meshes"


@dataclass(frozen=True)
class MeshListing:
    """What `discover` shows about a mesh, published by its members under `/meshp2p/mesh/<id>`."""

    name: str | None
    region: str | None
    public: bool
    nodes: int
    clients: int
    max_clients: int | None
    served: tuple[str, ...]
    wanted: tuple[str, ...]
    capacity_mb: int
    addrs: tuple[str, ...]
    version: str


@dataclass(frozen=True)
class NodeRecord:
    """One node's own entry under `/meshp2p/node/<peer id>`: only that node's key can sign it."""

    mesh: str
    region: str | None
    role: Role
    addrs: tuple[str, ...]
    models: tuple[str, ...]
    version: str


RecordBody = MeshListing | NodeRecord


@dataclass(frozen=True)
class SignedRecord:
    """A value that passed every check at the `now` it was decoded with."""

    kind: str
    subject: str
    publisher: str
    public_key: bytes
    issued_at: int
    expires_at: int
    body: RecordBody


def mesh_key(mesh_id: bytes) -> str:
    return f"{KEY_PREFIX}{KIND_MESH}/{mesh_id_hex(mesh_id)}"


def node_key(peer_id: str) -> str:
    return f"{KEY_PREFIX}{KIND_NODE}/{_check_peer_id_text(peer_id)}"


def region_topic(region: str) -> str:
    """Regions are compared uppercase: `au` and `AU` are one provider key."""
    return "region:" + region.strip().upper()


def model_topic(model_id: str) -> str:
    return "model:" + model_id


def provider_key(topic: str) -> bytes:
    """The DHT content key a node provides so `discover` can find it by mesh listing, region or model."""
    if topic == MESHES_TOPIC:
        normalised = topic
    elif topic.startswith("region:"):
        normalised = region_topic(topic.removeprefix("region:"))
    elif topic.startswith("model:"):
        normalised = topic
    else:
        raise WireError("malformed", f"unknown provider topic {topic!r}: use meshes, region:<R> or model:<id>")
    value = normalised.split(":", 1)[-1]
    if not 1 <= len(value) <= MAX_TEXT_CHARS:
        raise WireError("malformed", f"provider topic {topic!r} needs 1..{MAX_TEXT_CHARS} characters after ':'")
    return _SHA256_MULTIHASH_PREFIX + hashlib.sha256(_PROVIDE_DOMAIN + normalised.encode("utf-8")).digest()


def encode_record(
    identity: Identity, kind: str, subject: str, body: RecordBody, *, now: float, ttl_s: int
) -> tuple[str, bytes]:
    """Sign `body` for `key(kind, subject)`; the result is checked by `decode_record` so we never publish a
    value peers would reject."""
    key = f"{KEY_PREFIX}{kind}/{subject}"
    _parse_key(key)
    if type(ttl_s) is not int or not 0 < ttl_s <= MAX_RECORD_TTL_S:
        raise WireError("malformed", f"ttl_s must be an integer in 1..{MAX_RECORD_TTL_S}")
    if kind == KIND_MESH and isinstance(body, MeshListing):
        body_map = _listing_to_map(body)
    elif kind == KIND_NODE and isinstance(body, NodeRecord):
        body_map = _node_to_map(body)
    else:
        raise WireError("key_mismatch", f"a {kind!r} record cannot carry a {type(body).__name__}")
    issued_at = math.floor(now)
    unsigned = {
        "v": 1,
        "k": kind,
        "s": subject,
        "pk": identity.public_key,
        "iat": issued_at,
        "exp": issued_at + ttl_s,
        "body": body_map,
    }
    value = dumps(sign_object(identity, RECORD_DOMAIN, unsigned))
    decode_record(key, value, now=now)
    return key, value


def decode_record(key: str, value: bytes, *, now: float) -> SignedRecord:
    """Validate `value` stored under `key` at `now`; the checks run in the order protocols/dht-records.md lists."""
    kind, subject = _parse_key(key)
    m = loads_map(value, max_bytes=MAX_RECORD_BYTES)
    check_version(m)
    check_keys(m, _RECORD_KEYS)
    if get_text(m, "k", max_chars=MAX_KEY_CHARS) != kind or get_text(m, "s", max_chars=MAX_KEY_CHARS) != subject:
        raise WireError("key_mismatch", "the value's kind and subject differ from its key")
    public_key = get_bytes(m, "pk", size=PUBLIC_KEY_BYTES)
    issued_at = get_int(m, "iat")
    expires_at = get_int(m, "exp")
    body_map = get_map(m, "body")
    get_bytes(m, "sig", size=SIGNATURE_BYTES)
    publisher = peer_id_from_public_key(public_key)
    if kind == KIND_NODE and subject != publisher:
        raise WireError("key_mismatch", "a node record must be signed by the node it names")
    if expires_at <= issued_at or expires_at - issued_at > MAX_RECORD_TTL_S:
        raise WireError("malformed", f"lifetime {expires_at - issued_at} s outside 1..{MAX_RECORD_TTL_S}")
    if not verify_object(RECORD_DOMAIN, m):
        raise WireError("bad_signature", f"record {key}")
    if expires_at <= now:
        raise WireError("expired", f"expired at {expires_at}, now {now}")
    if issued_at > now + MAX_CLOCK_SKEW_S:
        raise WireError("future", f"issued at {issued_at}, now {now}")
    body = _listing_from_map(body_map) if kind == KIND_MESH else _node_from_map(body_map)
    return SignedRecord(kind, subject, publisher, public_key, issued_at, expires_at, body)


def select_record(key: str, values: Sequence[bytes], *, now: float) -> int:
    """Index of the value to keep: newest `iat`, then latest `exp`, then greatest bytes; invalid ones never win.

    The last tie-break makes every node choose the same value from the same set, whatever order it arrived in.
    """
    best: tuple[int, int, bytes] | None = None
    best_index = -1
    for index, value in enumerate(values):
        try:
            record = decode_record(key, value, now=now)
        except WireError:
            continue
        rank = (record.issued_at, record.expires_at, bytes(value))
        if best is None or rank > best:
            best, best_index = rank, index
    if best is None:
        raise WireError("no_valid_record", f"none of {len(values)} values for {key} is valid")
    return best_index


def _parse_key(key: str) -> tuple[str, str]:
    if type(key) is not str or len(key) > MAX_KEY_CHARS or not key.startswith(KEY_PREFIX):
        raise WireError("malformed", f"not a {KEY_PREFIX} key")
    parts = key.removeprefix(KEY_PREFIX).split("/")
    if len(parts) != 2:
        raise WireError("malformed", "a key is /meshp2p/<kind>/<subject>")
    kind, subject = parts
    if kind not in KINDS:
        raise WireError("unknown_kind", f"kind {kind!r}")
    if kind == KIND_MESH:
        parse_mesh_id_hex(subject)
    else:
        _check_peer_id_text(subject)
    return kind, subject


def _check_peer_id_text(peer_id: str) -> str:
    if type(peer_id) is not str or not 1 <= len(peer_id) <= MAX_TEXT_CHARS or not set(peer_id) <= _BASE58_ALPHABET:
        raise WireError("malformed", "a peer id is base58btc text")
    return peer_id


def _listing_to_map(body: MeshListing) -> dict[str, Any]:
    return {
        "name": body.name,
        "region": body.region,
        "public": body.public,
        "nodes": body.nodes,
        "clients": body.clients,
        "max_clients": body.max_clients,
        "served": list(body.served),
        "wanted": list(body.wanted),
        "capacity_mb": body.capacity_mb,
        "addrs": list(body.addrs),
        "version": body.version,
    }


def _listing_from_map(m: dict[str, Any]) -> MeshListing:
    require_keys(m, _LISTING_KEYS, where="mesh listing")
    return MeshListing(
        name=get_opt_text(m, "name", max_chars=MAX_TEXT_CHARS),
        region=get_opt_text(m, "region", max_chars=MAX_TEXT_CHARS),
        public=get_bool(m, "public"),
        nodes=get_int(m, "nodes"),
        clients=get_int(m, "clients"),
        max_clients=get_opt_int(m, "max_clients"),
        served=get_text_list(m, "served", max_items=MAX_LIST_ITEMS, max_chars=MAX_TEXT_CHARS),
        wanted=get_text_list(m, "wanted", max_items=MAX_LIST_ITEMS, max_chars=MAX_TEXT_CHARS),
        capacity_mb=get_int(m, "capacity_mb"),
        addrs=get_text_list(m, "addrs", max_items=MAX_ADDRS, max_chars=MAX_ADDR_CHARS),
        version=get_text(m, "version", max_chars=MAX_TEXT_CHARS),
    )


def _node_to_map(body: NodeRecord) -> dict[str, Any]:
    return {
        "mesh": body.mesh,
        "region": body.region,
        "role": str(body.role),
        "addrs": list(body.addrs),
        "models": list(body.models),
        "version": body.version,
    }


def _node_from_map(m: dict[str, Any]) -> NodeRecord:
    require_keys(m, _NODE_KEYS, where="node record")
    mesh = get_text(m, "mesh", max_chars=MAX_TEXT_CHARS)
    parse_mesh_id_hex(mesh)
    role = get_text(m, "role", max_chars=MAX_TEXT_CHARS)
    if role not in NODE_ROLES:
        raise WireError("malformed", f"node role {role!r}")
    return NodeRecord(
        mesh=mesh,
        region=get_opt_text(m, "region", max_chars=MAX_TEXT_CHARS),
        role=Role(role),
        addrs=get_text_list(m, "addrs", max_items=MAX_ADDRS, max_chars=MAX_ADDR_CHARS),
        models=get_text_list(m, "models", max_items=MAX_LIST_ITEMS, max_chars=MAX_TEXT_CHARS),
        version=get_text(m, "version", max_chars=MAX_TEXT_CHARS),
    )


_LISTING_KEYS = frozenset(_listing_to_map(MeshListing(None, None, False, 0, 0, None, (), (), 0, (), "")))
_NODE_KEYS = frozenset(_node_to_map(NodeRecord("", None, Role.HOST, (), (), "")))
