"""What each side of a blackboard sync session sends next (protocols/blackboard.md, "Sync"), on plain data.

A session is rounds of digest → reply → reply on one stream. Both sides remember what they already sent on
it, so a post the other side refused (too old for its TTL, say) is never sent twice, and every round either
moves posts or ends the session. The trio code in `meshp2p/app/blackboard_service.py` moves the bytes and calls
the store; the choices are made here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from meshp2p.wire.blackboard import MAX_DIGEST_ITEMS, MAX_SYNC_POSTS, SyncDigest

#: Digest/reply rounds in one session; a peer still sending after that is cut off (and the next session
#: continues where this one stopped).
MAX_SYNC_ROUNDS = 64


def posts_to_offer(held: Sequence[tuple[bytes, int]], digest: SyncDigest, sent: set[bytes]) -> tuple[list[bytes], bool]:
    """The answerer's choice: ids of held posts (newest first) the asker did not list and that were not sent on this
    session yet, at most `MAX_SYNC_POSTS`; and whether more such posts remain (`more`)."""
    listed = {pid for pid, _ in digest.have}
    fresh = [pid for pid, ts in held if ts >= digest.since_ms and pid not in listed and pid not in sent]
    return fresh[:MAX_SYNC_POSTS], len(fresh) > MAX_SYNC_POSTS


def ids_to_want(digest: SyncDigest, horizon_ms: int, missing: Iterable[bytes], refused: set[bytes]) -> list[bytes]:
    """The answerer's `want`: listed posts it lacks (`missing`, in digest order) that it would keep (at or after
    its own horizon) and has not already been sent and refused on this session."""
    keepable = {pid for pid, ts in digest.have if ts >= horizon_ms}
    return [pid for pid in missing if pid in keepable and pid not in refused][:MAX_DIGEST_ITEMS]


def posts_to_push(want: Sequence[bytes], sent: set[bytes]) -> tuple[list[bytes], bool]:
    """The asker's answer to a `want`: ids not sent on this session yet, at most `MAX_SYNC_POSTS`; and whether
    wanted posts remain after these."""
    fresh = [pid for pid in dict.fromkeys(want) if pid not in sent]
    return fresh[:MAX_SYNC_POSTS], len(fresh) > MAX_SYNC_POSTS
