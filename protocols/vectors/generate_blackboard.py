"""Write blackboard.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Same conventions as generate.py: seeds "A" = bytes(range(32)) and "B" = bytes(range(32, 64)), fixed times,
lowercase hex, deterministic Ed25519. Negative vectors are maps signed with the encoder's own helpers (or
bytes built by hand where no encoder would write them), and each is checked here to fail with its reason.

    /work/venv/bin/python protocols/vectors/generate_blackboard.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_blackboard.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2

from meshp2p.wire import blackboard as bb
from meshp2p.wire._cbor import dumps
from meshp2p.wire.framing import frame_bytes
from meshp2p.wire.gossip import GOSSIP_DOMAIN, decode_gossip, encode_gossip, topic_name
from meshp2p.wire.identity import Identity, sign_object
from meshp2p.wire.mesh_id import named_mesh_id

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import expect, pad_to, write_or_check

FILE_NAME = "blackboard.json"

SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
A = Identity.from_seed(SEED_A)
B = Identity.from_seed(SEED_B)
IDENTITIES = {"A": A, "B": B}
SEEDS = {name: ident.seed.hex() for name, ident in IDENTITIES.items()}
#: Seconds; half a second past a whole second shows the rounding down to milliseconds.
NOW = 1_750_000_000.5
NOW_MS = 1_750_000_000_500
TTL_S = bb.DEFAULT_POST_TTL_S
MESH_NAME = "Poker-Night"



def check(name: str, reason: str, fn: Callable[[], object]) -> None:
    expect(reason, fn, name)


def hex_or_none(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


# ---------------------------------------------------------------- posts


def post_fields(post: bb.Post) -> dict[str, Any]:
    return {
        "id": post.id.hex(),
        "author": post.author,
        "public_key": post.public_key.hex(),
        "ts": post.ts,
        "text": post.text,
        "display_name": post.name,
        "tags": list(post.tags),
        "thread": hex_or_none(post.thread),
    }


def valid_vectors() -> list[dict[str, Any]]:
    minimal = bb.encode_post(A, text="hello mesh", now=NOW)
    minimal_id = bb.decode_post(minimal, now=NOW, ttl_s=TTL_S).id
    cases = [
        # (name, seed, text, display name, tags as given, thread, decode_now)
        ("minimal", "A", "hello mesh", None, [], None, NOW),
        (
            "reply_with_name_and_tags",
            "A",
            "Re: llama.cpp b4500 is 12% faster on M2.\n\tTry -fa; ça marche 👍",
            "alice's agent",
            ["llama", "gpu", "llama"],
            minimal_id,
            NOW - bb.MAX_POST_AHEAD_S,  # decoded by a node whose clock is 5 min behind: the future edge
        ),
        (
            "largest",
            "B",
            "é" * (bb.MAX_TEXT_BYTES // 2),
            "ü" * bb.MAX_NAME_CHARS,
            [chr(ord("a") + i) * bb.MAX_TAG_CHARS for i in range(bb.MAX_TAGS)],
            bytes(range(16)),
            NOW + TTL_S,  # decoded exactly TTL later: the expiry edge
        ),
    ]
    out = []
    for name, seed, text, display_name, tags, thread, decode_now in cases:
        data = bb.encode_post(IDENTITIES[seed], text=text, now=NOW, name=display_name, tags=tags, thread=thread)
        post = bb.decode_post(data, now=decode_now, ttl_s=TTL_S)
        assert post.id == bb.decode_post(data, now=NOW, ttl_s=TTL_S).id
        out.append(
            {
                "name": name,
                "seed": seed,
                "now": NOW,
                "text": text,
                "display_name": display_name,
                "tags": tags,
                "thread": hex_or_none(thread),
                "hex": data.hex(),
                "decode_now": decode_now,
                "ttl_s": TTL_S,
                "post": post_fields(post),
            }
        )
    return out



def post_map(**changes: Any) -> dict[str, Any]:
    return {
        "v": 1,
        "pk": A.public_key,
        "ts": NOW_MS,
        "text": "hello mesh",
        "name": None,
        "tags": [],
        "thread": None,
        **changes,
    }


def signed(m: dict[str, Any], ident: Identity = A, domain: bytes = bb.BLACKBOARD_DOMAIN) -> bytes:
    return dumps(sign_object(ident, domain, m))


def invalid_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def bad(name: str, reason: str, data: bytes, *, now: float = NOW, ttl_s: int = TTL_S) -> None:
        check(name, reason, lambda: bb.decode_post(data, now=now, ttl_s=ttl_s))
        cases.append({"name": name, "data": data.hex(), "now": now, "ttl_s": ttl_s, "reason": reason})

    def bad_field(case: str, reason: str, **changes: Any) -> None:
        bad(case, reason, signed(post_map(**changes)))

    good = signed(post_map())
    bad("over_max_post_bytes", "oversized", pad_to(lambda pad: signed(post_map(text=pad)), bb.MAX_POST_BYTES + 1))
    bad("text_over_4096_bytes", "oversized", signed(post_map(text="é" * 2048 + "x")))
    bad("empty_input", "malformed", b"")
    bad("not_cbor", "malformed", b"\xff\x00")
    bad("not_a_map", "malformed", dumps([1, "hello mesh"]))
    bad("trailing_byte", "malformed", good + b"\x00")
    assert good[:4] == bytes.fromhex("a8617601")
    bad("version_not_shortest", "malformed", good[:3] + b"\x18\x01" + good[4:])
    unsorted = cbor2.dumps(sign_object(A, bb.BLACKBOARD_DOMAIN, post_map()))  # insertion order, not canonical
    assert unsorted != good
    bad("keys_not_sorted", "malformed", unsorted)
    bad("bad_version", "bad_version", signed(post_map(v=2)))
    bad("version_text", "malformed", signed(post_map(v="1")))
    bad("missing_thread", "malformed", signed({k: v for k, v in post_map().items() if k != "thread"}))
    bad("unknown_key", "malformed", signed(post_map(mesh=bytes(16))))
    bad_field("pk_31_bytes", "malformed", pk=A.public_key[:31])
    bad_field("ts_negative", "malformed", ts=-1)
    bad_field("ts_bool", "malformed", ts=True)
    bad_field("ts_float", "malformed", ts=float(NOW_MS))
    bad_field("ts_over_int64", "malformed", ts=2**63)
    bad_field("text_bytes", "malformed", text=b"hello mesh")
    bad_field("text_empty", "malformed", text="")
    bad_field("text_escape_sequence", "malformed", text="\x1b[31mred\x1b[0m")
    bad_field("text_carriage_return", "malformed", text="over\rwrite")
    bad_field("name_empty", "malformed", name="")
    bad_field("name_65_chars", "malformed", name="n" * (bb.MAX_NAME_CHARS + 1))
    bad_field("name_newline", "malformed", name="two\nlines")
    bad_field("name_integer", "malformed", name=7)
    bad_field("tags_text", "malformed", tags="gpu")
    bad_field("tags_nine", "malformed", tags=[f"t{i}" for i in range(bb.MAX_TAGS + 1)])
    bad_field("tags_unsorted", "malformed", tags=["llama", "gpu"])
    bad_field("tags_duplicate", "malformed", tags=["gpu", "gpu"])
    bad_field("tag_uppercase", "malformed", tags=["GPU"])
    bad_field("tag_33_chars", "malformed", tags=["t" * (bb.MAX_TAG_CHARS + 1)])
    bad_field("tag_empty", "malformed", tags=[""])
    bad_field("tag_space", "malformed", tags=["a b"])
    bad_field("tag_null", "malformed", tags=[None])
    bad_field("thread_15_bytes", "malformed", thread=bytes(15))
    bad_field("thread_hex_text", "malformed", thread="00" * 16)
    m = sign_object(A, bb.BLACKBOARD_DOMAIN, post_map())
    bad("sig_63_bytes", "malformed", dumps({**m, "sig": m["sig"][:63]}))
    bad("tampered_text", "bad_signature", dumps({**m, "text": "hello mash"}))
    bad("tampered_sig", "bad_signature", dumps({**m, "sig": m["sig"][:-1] + bytes([m["sig"][-1] ^ 1])}))
    bad("signed_by_other_key", "bad_signature", signed(post_map(), ident=B))
    bad("gossip_domain", "bad_signature", signed(post_map(), domain=GOSSIP_DOMAIN))
    bad("expired", "expired", good, now=NOW + TTL_S + 0.001)
    bad("expired_under_short_ttl", "expired", good, now=NOW + 7200, ttl_s=3600)
    bad("future", "future", signed(post_map(ts=NOW_MS + bb.MAX_POST_AHEAD_S * 1000 + 1)))
    return cases


# ---------------------------------------------------------------- inside gossip


def gossip_vectors() -> dict[str, Any]:
    mesh_id = named_mesh_id(MESH_NAME)
    topic = topic_name(mesh_id, bb.BLACKBOARD_TYPE)
    post = bb.encode_post(A, text="hello mesh", now=NOW, tags=["intro"])
    old = bb.encode_post(A, text="old news", now=NOW - TTL_S - 1)

    def envelope(ident: Identity, body: dict[str, Any], msg_type: str = bb.BLACKBOARD_TYPE, seq: int = 1) -> bytes:
        return encode_gossip(ident, mesh_id, topic, msg_type, body, seq=seq, now=NOW, secret=None)

    def read(data: bytes) -> tuple[bb.Post, bytes]:
        msg = decode_gossip(data, mesh_id=mesh_id, topic=topic, now=NOW, secret=None)
        return bb.post_from_gossip(msg, now=NOW, ttl_s=TTL_S)

    data = envelope(A, bb.post_to_body(post))
    got, raw = read(data)
    assert raw == post
    invalid: list[dict[str, Any]] = []

    def bad(name: str, reason: str, data: bytes) -> None:
        check(name, reason, lambda: read(data))
        invalid.append({"name": name, "data": data.hex(), "reason": reason})

    bad("relayed_by_other_node", "key_mismatch", envelope(B, bb.post_to_body(post)))
    bad("status_type", "malformed", envelope(A, bb.post_to_body(post), msg_type="status"))
    bad("no_post_key", "malformed", envelope(A, {"text": "hello mesh"}))
    bad("post_as_text", "malformed", envelope(A, {"post": post.hex()}))
    bad("fresh_envelope_expired_post", "expired", envelope(A, bb.post_to_body(old)))
    return {
        "mesh_name": MESH_NAME,
        "mesh_id": mesh_id.hex(),
        "topic": topic,
        "now": NOW,
        "ttl_s": TTL_S,
        "valid": [{"name": "own_post", "data": data.hex(), "post_hex": post.hex(), "post": post_fields(got)}],
        "invalid": invalid,
    }


# ---------------------------------------------------------------- sync


def sync_vectors() -> dict[str, Any]:
    ids = [bytes([i]) * bb.POST_ID_BYTES for i in range(1, 4)]
    post = bb.encode_post(A, text="hello mesh", now=NOW)
    since = NOW_MS - 3_600_000
    digests = [
        ("empty", bb.SyncDigest(since, ())),
        ("three", bb.SyncDigest(since, ((ids[0], NOW_MS), (ids[1], NOW_MS - 1000), (ids[2], since)))),
    ]
    replies = [
        ("nothing", bb.SyncReply((), (), False)),
        ("post_and_want", bb.SyncReply((post,), (ids[1], ids[2]), True)),
    ]
    digest_cases = []
    for name, value in digests:
        data = bb.encode_digest(value)
        assert bb.decode_digest(data) == value
        have = [[pid.hex(), ts] for pid, ts in value.have]
        digest_cases.append({"name": name, "since_ms": value.since_ms, "have": have, "hex": data.hex()})
    reply_cases = []
    for name, answer in replies:
        data = bb.encode_sync_reply(answer)
        assert bb.decode_sync_reply(data) == answer
        reply_cases.append(
            {
                "name": name,
                "posts": [p.hex() for p in answer.posts],
                "want": [pid.hex() for pid in answer.want],
                "more": answer.more,
                "hex": data.hex(),
            }
        )

    invalid: list[dict[str, Any]] = []

    def bad(name: str, reason: str, kind: str, data: bytes) -> None:
        decode: Callable[[bytes], object] = bb.decode_digest if kind == "digest" else bb.decode_sync_reply
        check(name, reason, lambda: decode(data))
        invalid.append({"name": name, "kind": kind, "data": data.hex(), "reason": reason})

    def too_long(name: str, kind: str, size: int) -> None:
        """Size is checked before decoding, so any bytes do: written as a count of zero bytes, not as hex."""
        decode: Callable[[bytes], object] = bb.decode_digest if kind == "digest" else bb.decode_sync_reply
        check(name, "oversized", lambda: decode(bytes(size)))
        invalid.append({"name": name, "kind": kind, "zero_bytes": size, "reason": "oversized"})

    def digest(**changes: Any) -> bytes:
        return dumps({"v": 1, "since": since, "have": [[ids[0], NOW_MS]], **changes})

    def reply(**changes: Any) -> bytes:
        return dumps({"v": 1, "posts": [post], "want": [ids[0]], "more": False, **changes})

    too_long("digest_oversized", "digest", bb.MAX_DIGEST_BYTES + 1)
    bad("digest_bad_version", "bad_version", "digest", digest(v=2))
    bad("digest_unknown_key", "malformed", "digest", digest(want=[]))
    bad("digest_have_map", "malformed", "digest", digest(have={}))
    bad("digest_item_not_pair", "malformed", "digest", digest(have=[[ids[0]]]))
    bad("digest_id_15_bytes", "malformed", "digest", digest(have=[[ids[0][:15], NOW_MS]]))
    bad("digest_ts_before_since", "malformed", "digest", digest(have=[[ids[0], since - 1]]))
    bad("digest_ts_bool", "malformed", "digest", digest(have=[[ids[0], True]]))
    bad("digest_duplicate_id", "malformed", "digest", digest(have=[[ids[0], NOW_MS], [ids[0], NOW_MS - 1]]))
    many = [[i.to_bytes(bb.POST_ID_BYTES, "big"), 0] for i in range(bb.MAX_DIGEST_ITEMS + 1)]
    bad("digest_too_many", "malformed", "digest", digest(since=0, have=many))
    bad("digest_is_a_reply", "malformed", "digest", reply())
    too_long("reply_oversized", "reply", bb.MAX_SYNC_REPLY_BYTES + 1)
    bad("reply_bad_version", "bad_version", "reply", reply(v=2))
    bad("reply_missing_more", "malformed", "reply", dumps({"v": 1, "posts": [], "want": []}))
    bad("reply_more_integer", "malformed", "reply", reply(more=1))
    bad("reply_post_text", "malformed", "reply", reply(posts=[post.hex()]))
    bad("reply_post_empty", "malformed", "reply", reply(posts=[b""]))
    bad("reply_post_too_long", "malformed", "reply", reply(posts=[bytes(bb.MAX_POST_BYTES + 1)]))
    bad("reply_too_many_posts", "malformed", "reply", reply(posts=[b"x"] * (bb.MAX_SYNC_POSTS + 1)))
    bad("reply_want_17_bytes", "malformed", "reply", reply(want=[bytes(17)]))
    bad("reply_want_duplicate", "malformed", "reply", reply(want=[ids[0], ids[0]]))
    bad("reply_is_a_digest", "malformed", "reply", digest())
    return {"digests": digest_cases, "replies": reply_cases, "invalid": invalid, "session": session_vector(post)}


def session_vector(post: bytes) -> dict[str, Any]:
    """A whole session on the stream: the asker holds nothing, the peer holds one post, neither has more."""
    horizon = NOW_MS - TTL_S * 1000
    messages = [
        ("asker", bb.encode_digest(bb.SyncDigest(horizon, ()))),
        ("peer", bb.encode_sync_reply(bb.SyncReply((post,), (), False))),
        ("asker", bb.encode_sync_reply(bb.SyncReply((), (), False))),
    ]
    frames = [{"from": side, "hex": frame_bytes(data, max_bytes=bb.MAX_SYNC_REPLY_BYTES).hex()}
              for side, data in messages]
    return {"protocol": bb.SYNC_PROTOCOL_ID, "max_frame_bytes": bb.MAX_SYNC_REPLY_BYTES, "frames": frames}


def build() -> dict[str, Any]:
    return {
        "format": "blackboard",
        "spec": "protocols/blackboard.md",
        "constants": {
            "domain": bb.BLACKBOARD_DOMAIN.hex(),
            "max_post_bytes": bb.MAX_POST_BYTES,
            "max_text_bytes": bb.MAX_TEXT_BYTES,
            "max_name_chars": bb.MAX_NAME_CHARS,
            "max_tags": bb.MAX_TAGS,
            "max_tag_chars": bb.MAX_TAG_CHARS,
            "post_id_bytes": bb.POST_ID_BYTES,
            "max_post_ahead_s": bb.MAX_POST_AHEAD_S,
            "default_post_ttl_s": bb.DEFAULT_POST_TTL_S,
            "max_digest_items": bb.MAX_DIGEST_ITEMS,
            "max_digest_bytes": bb.MAX_DIGEST_BYTES,
            "max_sync_posts": bb.MAX_SYNC_POSTS,
            "max_sync_reply_bytes": bb.MAX_SYNC_REPLY_BYTES,
        },
        "seeds": SEEDS,
        "valid": valid_vectors(),
        "invalid": invalid_vectors(),
        "gossip": gossip_vectors(),
        "sync": sync_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", lambda: {FILE_NAME: build()}, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
