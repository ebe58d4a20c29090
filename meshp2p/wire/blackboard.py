"""Agents' blackboard posts and the digest/reply maps of blackboard sync (protocols/blackboard.md).

A post is signed by its author's node key and carried, as opaque bytes, inside a gossip message of type
`blackboard` (and later in sync replies). It proves itself independently of whoever forwards it, so the same
bytes can be stored, re-served and checked again after a restart. Its id is derived from what the signature
covers, so nobody, the author included, can give one post two ids or two posts one id.

Pure: bytes and `now` in, values out. Policy that needs state (rate per author, capacity, replays across
restarts) lives in `meshp2p/blackboard/`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from meshp2p.wire._cbor import (
    INT64_MAX,
    check_keys,
    check_version,
    dumps,
    get_bool,
    get_bytes,
    get_int,
    loads_map,
)
from meshp2p.wire.errors import WireError
from meshp2p.wire.gossip import GossipMessage
from meshp2p.wire.identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    peer_id_from_public_key,
    sign_object,
    signed_bytes,
    verify_object,
)

BLACKBOARD_DOMAIN = b"meshp2p/blackboard/v1\x00"
#: The gossip message type (and topic name) posts travel under.
BLACKBOARD_TYPE = "blackboard"
#: A post's encoding, checked before decoding. The largest legal post is about 4.8 KB; the rest is slack that
#: still fits a post, its gossip envelope and the private-mesh seal in `MAX_GOSSIP_BYTES` (16384).
MAX_POST_BYTES = 8192
#: The text limit, in UTF-8 bytes (not characters): it is what bounds a post's size on the wire.
MAX_TEXT_BYTES = 4096
MAX_NAME_CHARS = 64
MAX_TAGS = 8
MAX_TAG_CHARS = 32
POST_ID_BYTES = 16
#: Clock skew allowed for a post's `ts`. Posts live for hours, so minutes of skew are harmless.
MAX_POST_AHEAD_S = 300
#: The default time posts are kept and accepted for (`BlackboardLimits.ttl_s` may change it per node).
DEFAULT_POST_TTL_S = 48 * 3600

#: The libp2p protocol a node asks a peer for the posts it lacks on (digest and reply frames, see the spec).
SYNC_PROTOCOL_ID = "/meshp2p/blackboard-sync/1.0.0"
#: Sync: one digest lists at most this many posts (twice the default capacity); see `make_digest`.
MAX_DIGEST_ITEMS = 1024
#: 1024 items of at most 27 bytes each, and the map around them.
MAX_DIGEST_BYTES = 32768
#: Sync: one reply carries at most this many posts; `more` says the peer has others to send.
MAX_SYNC_POSTS = 16
#: 16 posts of at most MAX_POST_BYTES, 1024 wanted ids, and the map around them.
MAX_SYNC_REPLY_BYTES = 163840

_POST_KEYS = frozenset({"v", "pk", "ts", "text", "name", "tags", "thread", "sig"})
_DIGEST_KEYS = frozenset({"v", "since", "have"})
_REPLY_KEYS = frozenset({"v", "posts", "want", "more"})
_TAG_RE = re.compile(r"[a-z0-9_-]{1,32}")
#: Newlines and tabs are text; every other control character (ESC, CR, NUL, C1) could rewrite a reader's terminal.
_TEXT_CONTROLS_ALLOWED = frozenset("\n\t")


@dataclass(frozen=True)
class Post:
    """A post that passed every check in `decode_post` (or was read back from the store, which only holds those)."""

    id: bytes
    author: str
    public_key: bytes
    ts: int
    text: str
    name: str | None = None
    tags: tuple[str, ...] = ()
    thread: bytes | None = None

    @property
    def id_hex(self) -> str:
        return self.id.hex()


@dataclass(frozen=True)
class SyncDigest:
    """What a node holds since `since_ms`: (post id, ts) pairs, newest first."""

    since_ms: int
    have: tuple[tuple[bytes, int], ...]


@dataclass(frozen=True)
class SyncReply:
    """The answer to a digest: posts the asker lacks (encoded, each checked with `decode_post` on receipt), the ids
    of the asker's posts the answerer lacks, and whether the answerer has more posts to send."""

    posts: tuple[bytes, ...]
    want: tuple[bytes, ...]
    more: bool


# ---------------------------------------------------------------- posts


def encode_post(
    identity: Identity,
    *,
    text: str,
    now: float,
    name: str | None = None,
    tags: tuple[str, ...] | list[str] = (),
    thread: bytes | None = None,
) -> bytes:
    """Sign a post dated `now` (unix seconds, rounded down to the millisecond).

    Tags are sorted and de-duplicated (their order carries no meaning, and one post has one encoding); text is
    taken as given, so run it through `normalize_text` and `meshp2p.blackboard.scrub` first. The result is run
    through `decode_post`, so a node never publishes what its peers would drop.
    """
    if type(tags) not in (tuple, list):
        raise WireError("malformed", "tags is not a sequence of text")
    if not math.isfinite(now):
        raise WireError("malformed", f"now={now}")
    m = sign_object(
        identity,
        BLACKBOARD_DOMAIN,
        {
            "v": 1,
            "pk": identity.public_key,
            "ts": math.floor(now * 1000),
            "text": text,
            "name": name,
            "tags": sorted(set(tags)) if all(type(t) is str for t in tags) else list(tags),
            "thread": thread,
        },
    )
    data = dumps(m)
    decode_post(data, now=now, ttl_s=MAX_POST_AHEAD_S)
    return data


def decode_post(data: bytes, *, now: float, ttl_s: float) -> Post:
    """Check a post against every rule of the spec, in its order; `ttl_s` is this node's post lifetime.

    Replays and rates are not checked here: that needs state (`meshp2p.blackboard.limits`, the store).
    """
    m = loads_map(data, max_bytes=MAX_POST_BYTES)
    check_version(m)
    check_keys(m, _POST_KEYS)
    public_key = get_bytes(m, "pk", size=PUBLIC_KEY_BYTES)
    ts = get_int(m, "ts")
    text = _check_post_text(m.get("text"))
    name = _check_name(m.get("name"))
    tags = _check_tags(m.get("tags"))
    thread = None if m.get("thread") is None else get_bytes(m, "thread", size=POST_ID_BYTES)
    get_bytes(m, "sig", size=SIGNATURE_BYTES)
    if not verify_object(BLACKBOARD_DOMAIN, m):
        raise WireError("bad_signature", "blackboard post")
    now_ms = now * 1000
    if ts < now_ms - ttl_s * 1000:
        raise WireError("expired", f"posted {(now_ms - ts) / 1000:.0f} s ago, older than {ttl_s} s")
    if ts > now_ms + MAX_POST_AHEAD_S * 1000:
        raise WireError("future", f"dated {(ts - now_ms) / 1000:.0f} s ahead")
    return Post(
        id=_post_id(m),
        author=peer_id_from_public_key(public_key),
        public_key=public_key,
        ts=ts,
        text=text,
        name=name,
        tags=tags,
        thread=thread,
    )


def _post_id(m: dict[str, Any]) -> bytes:
    """SHA-256 of exactly what the signature covers, first 16 bytes: fixed by content and author, not by `sig`."""
    return hashlib.sha256(signed_bytes(BLACKBOARD_DOMAIN, m)).digest()[:POST_ID_BYTES]


def _check_post_text(value: object) -> str:
    if type(value) is not str:
        raise WireError("malformed", "'text' is not text")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # only reachable from a caller's str (lone surrogates); CBOR text is valid UTF-8
        raise WireError("malformed", "'text' is not valid Unicode") from None
    if size == 0:
        raise WireError("malformed", "'text' is empty")
    if size > MAX_TEXT_BYTES:
        raise WireError("oversized", f"text is {size} UTF-8 bytes > {MAX_TEXT_BYTES}")
    if any(unicodedata.category(c) == "Cc" and c not in _TEXT_CONTROLS_ALLOWED for c in value):
        raise WireError("malformed", "'text' has control characters other than newline and tab")
    return value


def _check_name(value: object) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not 1 <= len(value) <= MAX_NAME_CHARS:
        raise WireError("malformed", f"'name' is not text of 1..{MAX_NAME_CHARS} characters")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise WireError("malformed", "'name' has control characters")
    return value


def _check_tags(value: object) -> tuple[str, ...]:
    if type(value) is not list or len(value) > MAX_TAGS:
        raise WireError("malformed", f"'tags' is not an array of at most {MAX_TAGS}")
    for tag in value:
        if type(tag) is not str or not _TAG_RE.fullmatch(tag):
            raise WireError("malformed", f"tag {tag!r} is not 1..{MAX_TAG_CHARS} of [a-z0-9_-]")
    if any(a >= b for a, b in itertools.pairwise(value)):
        raise WireError("malformed", "'tags' are not sorted and unique")
    return tuple(value)


def normalize_text(text: str) -> str:
    """What a user typed, made postable: CR LF and lone CR become LF; other control characters are dropped.

    The decoder refuses control characters other than newline and tab (a post must not be able to move a
    reader's cursor or recolour their terminal), so posting code run through this never fails for that.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in _TEXT_CONTROLS_ALLOWED or unicodedata.category(c) != "Cc")


def normalize_tag(tag: str) -> str:
    """`#GPU ` → `gpu`: what a CLI flag becomes before `encode_post` checks it against [a-z0-9_-]{1,32}."""
    return tag.strip().lstrip("#").lower()


# ---------------------------------------------------------------- inside gossip


def post_to_body(data: bytes) -> dict[str, Any]:
    """The gossip body of a `blackboard` message: the post's bytes, untouched, so its signature still covers them."""
    return {"post": data}


def post_from_gossip(msg: GossipMessage, *, now: float, ttl_s: float) -> tuple[Post, bytes]:
    """The post in a decoded gossip message, and its bytes for the store.

    On the gossip topic a node publishes only its own posts: the envelope's sender must be the author
    (`key_mismatch`), so the per-author rate limit is also a per-sender limit.
    """
    if msg.type != BLACKBOARD_TYPE:
        raise WireError("malformed", f"gossip type {msg.type!r} on the blackboard")
    data = msg.body.get("post")
    if type(data) is not bytes:
        raise WireError("malformed", "blackboard body has no 'post' byte string")
    post = decode_post(data, now=now, ttl_s=ttl_s)
    if post.public_key != msg.public_key:
        raise WireError("key_mismatch", "post relayed by a node other than its author")
    return post, data


# ---------------------------------------------------------------- sync


def make_digest(since_ms: int, items: list[tuple[bytes, int]]) -> SyncDigest:
    """A digest of `items` (id, ts) since `since_ms`: newest first, and when there are more than
    `MAX_DIGEST_ITEMS`, the newest ones with `since` raised to the oldest listed `ts`, so the digest still
    says exactly what the node holds in its window (posts at that `ts` not listed are sent again, harmlessly)."""
    ordered = sorted(((pid, ts) for pid, ts in items if ts >= since_ms), key=lambda item: (-item[1], item[0]))
    if len(ordered) > MAX_DIGEST_ITEMS:
        ordered = ordered[:MAX_DIGEST_ITEMS]
        since_ms = ordered[-1][1]
    return SyncDigest(since_ms, tuple(ordered))


def encode_digest(digest: SyncDigest) -> bytes:
    data = dumps({"v": 1, "since": digest.since_ms, "have": [[pid, ts] for pid, ts in digest.have]})
    decode_digest(data)
    return data


def decode_digest(data: bytes) -> SyncDigest:
    """A peer's digest: unsigned (sync runs on an authenticated stream between members; each post is signed)."""
    m = loads_map(data, max_bytes=MAX_DIGEST_BYTES)
    check_version(m)
    check_keys(m, _DIGEST_KEYS)
    since = get_int(m, "since")
    items = m["have"]
    if type(items) is not list or len(items) > MAX_DIGEST_ITEMS:
        raise WireError("malformed", f"'have' is not an array of at most {MAX_DIGEST_ITEMS}")
    have: list[tuple[bytes, int]] = []
    for item in items:
        if type(item) is not list or len(item) != 2:
            raise WireError("malformed", "a digest item is not [id, ts]")
        pid = _check_id(item[0], "have")
        ts = item[1]
        if type(ts) is not int or not since <= ts <= INT64_MAX:
            raise WireError("malformed", "a digest item's ts is not an integer at or after 'since'")
        have.append((pid, ts))
    if len({pid for pid, _ in have}) != len(have):
        raise WireError("malformed", "'have' lists an id twice")
    return SyncDigest(since, tuple(have))


def encode_sync_reply(reply: SyncReply) -> bytes:
    data = dumps({"v": 1, "posts": list(reply.posts), "want": list(reply.want), "more": reply.more})
    decode_sync_reply(data)
    return data


def decode_sync_reply(data: bytes) -> SyncReply:
    """The reply's shape only: each post is checked on its own with `decode_post`, so one bad post costs only itself."""
    m = loads_map(data, max_bytes=MAX_SYNC_REPLY_BYTES)
    check_version(m)
    check_keys(m, _REPLY_KEYS)
    posts, want = m["posts"], m["want"]
    if type(posts) is not list or len(posts) > MAX_SYNC_POSTS:
        raise WireError("malformed", f"'posts' is not an array of at most {MAX_SYNC_POSTS}")
    for post in posts:
        if type(post) is not bytes or not 0 < len(post) <= MAX_POST_BYTES:
            raise WireError("malformed", f"a post is not a byte string of 1..{MAX_POST_BYTES}")
    if type(want) is not list or len(want) > MAX_DIGEST_ITEMS:
        raise WireError("malformed", f"'want' is not an array of at most {MAX_DIGEST_ITEMS}")
    wanted = tuple(_check_id(pid, "want") for pid in want)
    if len(set(wanted)) != len(wanted):
        raise WireError("malformed", "'want' lists an id twice")
    return SyncReply(tuple(posts), wanted, get_bool(m, "more"))


def _check_id(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != POST_ID_BYTES:
        raise WireError("malformed", f"{what!r}: a post id is {POST_ID_BYTES} bytes")
    return value
