"""The `status` gossip body (protocols/gossip.md): what a node tells its mesh about itself every few seconds.

It travels in a signed gossip message (wire/gossip.py) on the mesh's status topic, or straight to a newcomer on
`/meshp2p/status/1.0.0`; either way the reader here runs on the verified message's body. `Role` names what a node
does in its mesh; its members are the role strings of the wire, written as plain CBOR text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meshp2p.wire._cbor import (
    check_float,
    check_text,
    get_float,
    get_int,
    get_map,
    get_opt_int,
    get_opt_text,
    get_text,
    get_text_list,
    require_keys,
)
from meshp2p.wire.errors import WireError
from meshp2p.wire.model_id import ContentId, parse_content_id

STATUS_TYPE = "status"
MAX_TEXT_CHARS = 128
MAX_LIST_ITEMS = 64
MAX_RTT_ENTRIES = 64
MAX_PORT = 65535
MAX_STATUS_ADDRS = 16
#: Relayed multiaddrs (`.../p2p-circuit/...`) run to ~180 characters.
MAX_ADDR_CHARS = 256
#: Splits a host asks workers for at once, and peers asked per split.
MAX_RECRUITS = 8
MAX_RECRUIT_PEERS = 16


class Role(StrEnum):
    """What a node does in its mesh. A member is its wire string (`Role.HOST == "host"`), and CBOR writes it so."""

    #: Serves models (or is ready to: an API node with llama.cpp that loaded nothing is a STANDBY).
    HOST = "host"
    #: Lends its memory to another node's pipeline.
    WORKER = "worker"
    #: Uses the mesh's API and serves nothing (`--client`, or no llama.cpp).
    CLIENT = "client"
    #: Has llama.cpp and models on disk but serves none yet: the first to promote (mesh/election.py).
    STANDBY = "standby"
    #: A DHT server and relay with no models (`meshp2p bootstrap`).
    BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class StatusBody:
    """What a node tells its mesh every few seconds: the planner's view of capacity and load."""

    role: Role
    ram_mb: int
    vram_mb: int
    gpu: str | None
    loaded: tuple[str, ...]
    available: tuple[str, ...]
    load: float
    api_port: int | None
    version: str
    region: str | None
    rtt_ms: dict[str, float]
    #: Where peers can dial this node (full multiaddrs). Added within v1, so optional to readers.
    addrs: tuple[str, ...] = ()
    #: Models this node is loading now (promotion in progress). Added within v1, optional to readers.
    loading: tuple[str, ...] = ()
    #: Content id of the file behind each model id offered (available or loaded) and hashed so far, so that peers
    #: match files, not names (protocols/model-id.md). Added within v1, optional to readers.
    files: dict[str, ContentId] = field(default_factory=dict)
    #: Splits this node would host but cannot with the members that hold the file: model id -> the file and the
    #: peers asked to fetch it so they can be workers (mesh/planner.py rule 6). Added within v1, optional to readers.
    recruit: dict[str, Recruit] = field(default_factory=dict)
    #: Files this node serves as a member of a `--moe shard` group (content id -> what it plans with).
    #: Added within v1, optional to readers.
    moe_shards: dict[ContentId, ShardOffer] = field(default_factory=dict)


@dataclass(frozen=True)
class Recruit:
    """A host's call: `peers`, fetch `file` from the members that hold it, and you can be my split's workers."""

    file: ContentId
    peers: tuple[str, ...]


@dataclass(frozen=True)
class ShardOffer:
    """A shard-mode member's part of the group's inputs: its memory for the shard and the expert usage it plans
    with (`<source>:<16 hex digest>`, inference/calibration.py); members plan only with members of equal usage."""

    capacity_bytes: int
    usage: str


def status_to_body(status: StatusBody) -> dict[str, Any]:
    """Floats are written as floats even when whole, so strict readers in any language see one type; the role is
    written as its plain string."""
    return {
        "role": str(status.role),
        "ram_mb": status.ram_mb,
        "vram_mb": status.vram_mb,
        "gpu": status.gpu,
        "loaded": list(status.loaded),
        "available": list(status.available),
        "load": float(status.load),
        "api_port": status.api_port,
        "version": status.version,
        "region": status.region,
        "rtt_ms": {peer: float(rtt) for peer, rtt in status.rtt_ms.items()},
        "addrs": list(status.addrs),
        "loading": list(status.loading),
        "files": {model: cid.text for model, cid in status.files.items()},
        "recruit": {model: {"file": call.file.text, "peers": list(call.peers)}
                    for model, call in status.recruit.items()},
        "moe_shards": {cid.text: {"cap_bytes": offer.capacity_bytes, "usage": offer.usage}
                       for cid, offer in status.moe_shards.items()},
    }


def status_from_body(body: dict[str, Any]) -> StatusBody:
    """Strict reader for a `status` body; keys it does not know are ignored (added by newer nodes)."""
    if type(body) is not dict:
        raise WireError("malformed", "status body is not a map")
    require_keys(body, _STATUS_KEYS, where="status body")
    role = _role(get_text(body, "role", max_chars=MAX_TEXT_CHARS))
    rtt = get_map(body, "rtt_ms")
    if len(rtt) > MAX_RTT_ENTRIES:
        raise WireError("malformed", f"rtt_ms has {len(rtt)} entries > {MAX_RTT_ENTRIES}")
    files = get_map(body, "files") if "files" in body else {}
    if len(files) > MAX_LIST_ITEMS:
        raise WireError("malformed", f"files has {len(files)} entries > {MAX_LIST_ITEMS}")
    recruit = get_map(body, "recruit") if "recruit" in body else {}
    if len(recruit) > MAX_RECRUITS:
        raise WireError("malformed", f"recruit has {len(recruit)} entries > {MAX_RECRUITS}")
    shards = get_map(body, "moe_shards") if "moe_shards" in body else {}
    if len(shards) > MAX_LIST_ITEMS:
        raise WireError("malformed", f"moe_shards has {len(shards)} entries > {MAX_LIST_ITEMS}")
    return StatusBody(
        role=role,
        ram_mb=get_int(body, "ram_mb"),
        vram_mb=get_int(body, "vram_mb"),
        gpu=get_opt_text(body, "gpu", max_chars=MAX_TEXT_CHARS),
        loaded=get_text_list(body, "loaded", max_items=MAX_LIST_ITEMS, max_chars=MAX_TEXT_CHARS),
        available=get_text_list(body, "available", max_items=MAX_LIST_ITEMS, max_chars=MAX_TEXT_CHARS),
        load=get_float(body, "load"),
        api_port=get_opt_int(body, "api_port", lo=1, hi=MAX_PORT),
        version=get_text(body, "version", max_chars=MAX_TEXT_CHARS),
        region=get_opt_text(body, "region", max_chars=MAX_TEXT_CHARS),
        rtt_ms={
            check_text(peer, "rtt_ms", min_chars=1, max_chars=MAX_TEXT_CHARS): check_float(value, "rtt_ms")
            for peer, value in rtt.items()
        },
        addrs=get_text_list(body, "addrs", max_items=MAX_STATUS_ADDRS, max_chars=MAX_ADDR_CHARS)
        if "addrs" in body else (),
        loading=get_text_list(body, "loading", max_items=MAX_LIST_ITEMS, max_chars=MAX_TEXT_CHARS)
        if "loading" in body else (),
        files={
            check_text(model, "files", min_chars=1, max_chars=MAX_TEXT_CHARS): parse_content_id(cid)
            for model, cid in files.items()
        },
        recruit={check_text(model, "recruit", min_chars=1, max_chars=MAX_TEXT_CHARS): _recruit(call)
                 for model, call in recruit.items()},
        moe_shards={parse_content_id(cid): _shard_offer(offer) for cid, offer in shards.items()},
    )


def _recruit(value: object) -> Recruit:
    if type(value) is not dict:
        raise WireError("malformed", "a recruit entry is not a map")
    return Recruit(file=parse_content_id(get_text(value, "file", max_chars=MAX_TEXT_CHARS)),
                   peers=get_text_list(value, "peers", max_items=MAX_RECRUIT_PEERS, max_chars=MAX_TEXT_CHARS))


def _shard_offer(value: object) -> ShardOffer:
    if type(value) is not dict:
        raise WireError("malformed", "a moe_shards entry is not a map")
    return ShardOffer(capacity_bytes=get_int(value, "cap_bytes"),
                      usage=get_text(value, "usage", min_chars=1, max_chars=MAX_TEXT_CHARS))


def _role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise WireError("malformed", f"status role {text!r}") from None


#: Keys every status body must carry; those added later within v1 are optional.
_OPTIONAL_STATUS_KEYS = frozenset({"addrs", "loading", "files", "recruit", "moe_shards"})
_STATUS_KEYS = frozenset(status_to_body(StatusBody(Role.HOST, 0, 0, None, (), (), 0.0, None, "", None, {}))) - (
    _OPTIONAL_STATUS_KEYS)
