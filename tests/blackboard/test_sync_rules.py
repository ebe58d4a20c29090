"""What each side of a sync session sends next, on plain data (meshp2p/blackboard/sync.py)."""

from __future__ import annotations

from meshp2p.blackboard.sync import ids_to_want, posts_to_offer, posts_to_push
from meshp2p.wire.blackboard import MAX_SYNC_POSTS, SyncDigest


def pid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def test_offer_is_what_the_asker_did_not_list_newest_first_and_never_twice():
    held = [(pid(n), 1000 - n) for n in range(5)]  # newest first, as the store gives them
    digest = SyncDigest(since_ms=0, have=((pid(1), 999), (pid(3), 997)))
    sent: set[bytes] = set()
    offer, more = posts_to_offer(held, digest, sent)
    assert (offer, more) == ([pid(0), pid(2), pid(4)], False)
    assert posts_to_offer(held, digest, set(offer)) == ([], False)


def test_offer_respects_since_and_the_batch_size():
    held = [(pid(n), 10_000 - n) for n in range(40)]
    offer, more = posts_to_offer(held, SyncDigest(since_ms=0, have=()), set())
    assert offer == [pid(n) for n in range(MAX_SYNC_POSTS)] and more
    offer, more = posts_to_offer(held, SyncDigest(since_ms=10_000 - 3, have=()), set())
    assert (offer, more) == ([pid(0), pid(1), pid(2), pid(3)], False)


def test_want_only_what_would_be_kept_and_was_not_refused():
    digest = SyncDigest(since_ms=0, have=((pid(1), 500), (pid(2), 50), (pid(3), 400)))
    missing = [pid(1), pid(2), pid(3)]
    assert ids_to_want(digest, 100, missing, refused=set()) == [pid(1), pid(3)]  # pid(2) is past our horizon
    assert ids_to_want(digest, 100, missing, refused={pid(3)}) == [pid(1)]


def test_push_answers_a_want_in_batches_without_repeats():
    want = [pid(n) for n in range(20)] + [pid(0)]
    sent: set[bytes] = set()
    batch, more = posts_to_push(want, sent)
    assert batch == [pid(n) for n in range(MAX_SYNC_POSTS)] and more
    sent.update(batch)
    assert posts_to_push(want, sent) == ([pid(n) for n in range(MAX_SYNC_POSTS, 20)], False)
