"""The SQLite store: persistence across restarts, duplicates, feeds, pruning, the sync digest, rejection counters."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from meshp2p.blackboard import STORE_FILE_NAME, BlackboardStore, BlackboardStoreError
from meshp2p.wire import Identity
from meshp2p.wire.blackboard import Post, decode_post, encode_post, make_digest

A = Identity.from_seed(bytes(range(32)))
B = Identity.from_seed(bytes(range(32, 64)))
NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)
TTL_S = 48 * 3600


def make(
    ident: Identity = A,
    text: str = "hello",
    *,
    at: float = NOW,
    name: str | None = None,
    tags: tuple[str, ...] = (),
    thread: bytes | None = None,
) -> tuple[Post, bytes]:
    raw = encode_post(ident, text=text, now=at, name=name, tags=tags, thread=thread)
    return decode_post(raw, now=at, ttl_s=TTL_S), raw


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / STORE_FILE_NAME


@pytest.fixture
def store(path: Path) -> BlackboardStore:
    return BlackboardStore(path)


def test_posts_survive_a_restart(path: Path) -> None:
    posts = [make(A, "first", at=NOW, name="alice", tags=("gpu", "llama")), make(B, "second", at=NOW + 1)]
    posts.append(make(A, "a reply", at=NOW + 2, thread=posts[0][0].id))
    with BlackboardStore(path) as store:
        for post, raw in posts:
            assert store.add(post, raw)
        before = store.feed(10)
    with BlackboardStore(path) as store:
        assert store.feed(10) == before == [p for p, _ in reversed(posts)]
        assert store.get(posts[0][0].id) == posts[0][0]
        assert store.raw([p.id for p, _ in posts]) == [raw for _, raw in reversed(posts)]
        assert not store.add(*posts[1]), "a replay after a restart is still a replay"
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_stored_bytes_decode_to_the_stored_post(store: BlackboardStore) -> None:
    post, raw = make(A, "héllo wörld", name="ägent", tags=("a-b", "c_d"), thread=bytes(range(16)))
    store.add(post, raw)
    (got_raw,) = store.raw([post.id])
    assert decode_post(got_raw, now=NOW, ttl_s=TTL_S) == store.get(post.id) == post


def test_duplicates_are_refused(store: BlackboardStore) -> None:
    post, raw = make()
    assert store.add(post, raw)
    assert not store.add(post, raw)
    assert store.count() == 1
    assert store.get(bytes(16)) is None


def test_feed_filters_and_order(store: BlackboardStore) -> None:
    for i in range(6):
        ident = A if i % 2 == 0 else B
        store.add(*make(ident, f"post {i}", at=NOW + i, tags=("even",) if i % 2 == 0 else ("odd", "x")))
    assert [p.text for p in store.feed(3)] == ["post 5", "post 4", "post 3"]
    assert [p.text for p in store.feed(10, since_ms=NOW_MS + 4000)] == ["post 5", "post 4"]
    assert [p.text for p in store.feed(10, author=A.peer_id)] == ["post 4", "post 2", "post 0"]
    assert [p.text for p in store.feed(10, tag="odd")] == ["post 5", "post 3", "post 1"]
    assert store.feed(10, tag="od") == [], "tags match whole"
    assert store.feed(10, tag="x", author=A.peer_id) == []
    assert store.feed(0) == []


def test_prune_drops_expired_then_keeps_the_newest(store: BlackboardStore) -> None:
    for i in range(10):
        store.add(*make(A, f"post {i}", at=NOW + i * 60))
    removed = store.prune(NOW_MS + 2 * 60_000 + TTL_S * 1000, TTL_S, 5)
    assert removed == 5
    assert [p.text for p in store.feed(10)] == [f"post {i}" for i in (9, 8, 7, 6, 5)]
    assert store.prune(NOW_MS + 8 * 60_000 + TTL_S * 1000, TTL_S, 5) == 3
    assert store.count() == 2


def test_digest_missing_and_horizon(store: BlackboardStore) -> None:
    posts = [make(A, f"post {i}", at=NOW + i) for i in range(5)]
    for post, raw in posts[:3]:
        store.add(post, raw)
    digest = store.digest(NOW_MS + 1000)
    assert digest == [(posts[i][0].id, NOW_MS + i * 1000) for i in (2, 1)]
    theirs = [p.id for p, _ in reversed(posts)]
    assert store.missing(theirs) == [posts[4][0].id, posts[3][0].id]
    assert store.missing(theirs + theirs) == [posts[4][0].id, posts[3][0].id]
    assert store.missing([]) == []
    # Not full: the TTL's edge. Full: the oldest post it keeps.
    assert store.horizon(NOW_MS, TTL_S, 10) == NOW_MS - TTL_S * 1000
    assert store.horizon(NOW_MS + 5000, TTL_S, 2) == NOW_MS + 1000
    assert make_digest(0, store.digest(0)).have[0] == (posts[2][0].id, NOW_MS + 2000)


def test_many_ids_are_chunked(store: BlackboardStore) -> None:
    post, raw = make()
    store.add(post, raw)
    ids = [i.to_bytes(16, "big") for i in range(2000)] + [post.id]
    assert len(store.missing(ids)) == 2000
    assert store.raw(ids) == [raw]


def test_find_by_id_prefix(store: BlackboardStore) -> None:
    post, raw = make()
    store.add(post, raw)
    assert store.find_prefix(post.id_hex[:6]) == [post]
    assert store.find_prefix(post.id_hex[:6].upper()) == [post]
    assert store.find_prefix("zz") == [] and store.find_prefix("") == []
    assert store.find_prefix("%") == []


def test_rejection_counters_persist(path: Path) -> None:
    with BlackboardStore(path) as store:
        assert store.rejections() == {}
        for reason in ("over_rate", "bad_signature", "over_rate"):
            store.count_rejection(reason)
    with BlackboardStore(path) as store:
        store.count_rejection("expired")
        assert store.rejections() == {"bad_signature": 1, "expired": 1, "over_rate": 2}


def test_concurrent_calls_from_threads(store: BlackboardStore) -> None:
    """trio.to_thread.run_sync may run calls on several worker threads at once."""
    posts = [make(A if i % 2 else B, f"post {i}", at=NOW + i) for i in range(40)]
    errors: list[BaseException] = []

    def work(chunk: list[tuple[Post, bytes]]) -> None:
        try:
            for post, raw in chunk:
                store.add(post, raw)
                store.feed(5)
                store.count_rejection("replay")
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(posts[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a store call hung"
    assert not errors
    assert store.count() == 40 and store.rejections() == {"replay": 40}


def test_unusable_files_give_a_hint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BlackboardStoreError) as info:
        BlackboardStore(garbage)
    assert info.value.hint
    newer = tmp_path / "newer.sqlite"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(BlackboardStoreError, match="newer meshp2p"):
        BlackboardStore(newer)
