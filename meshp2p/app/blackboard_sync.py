"""Blackboard sync on `/meshp2p/blackboard-sync/1.0.0`: a node catches up on posts it missed while offline.

Gossipsub does not replay history, so a node that joins late (or restarts) asks each peer that appears in its
view for what it lacks, and sends back what the peer lacks, in rounds on one stream (protocols/blackboard.md,
"Sync"):

    asker → peer   digest   every post the asker holds since its horizon
    peer  → asker  reply    posts the asker did not list (≤ 16), ids the peer wants, `more`
    asker → peer   reply    the wanted posts (≤ 16), `more` if wanted posts remain

until neither side has more. Every post is checked like a gossiped one (signature, expiry, size, replay), but
not rate-limited: sync carries old posts, bounded by the reply size. Only mesh members are answered.

`BoardSync` moves bytes and reads the store; what to send is decided in `meshp2p/blackboard/sync.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from meshp2p.blackboard.store import BlackboardStore
from meshp2p.blackboard.sync import MAX_SYNC_ROUNDS, ids_to_want, posts_to_offer, posts_to_push
from meshp2p.p2p import PeerID
from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import FramedStream
from meshp2p.wire.blackboard import (
    MAX_SYNC_REPLY_BYTES,
    SYNC_PROTOCOL_ID,
    SyncReply,
    decode_digest,
    decode_sync_reply,
    encode_digest,
    encode_sync_reply,
    make_digest,
)
from meshp2p.wire.errors import WireError

log = logging.getLogger(__name__)

SYNC_PROTOCOL = SYNC_PROTOCOL_ID
#: One whole session, either side: a peer that stalls is dropped, the next session picks up.
SYNC_TIMEOUT_S = 60.0

#: `accept(raw posts) -> (how many were stored, ids of those refused)`: checks each post (wire rules and node
#: policy, without the rate) and stores it.
AcceptPosts = Callable[[list[bytes]], Awaitable[tuple[int, set[bytes]]]]


class BoardSync:
    """Both ends of blackboard sync for one node."""

    def __init__(self, overlay: Overlay, store: BlackboardStore, *, horizon: Callable[[], int],
                 accept: AcceptPosts, is_member: Callable[[PeerID], bool]) -> None:
        self.overlay = overlay
        self.store = store
        #: The oldest `ts` (unix ms) this node would keep: the digest's `since`.
        self.horizon = horizon
        self.accept = accept
        self.is_member = is_member
        #: Posts received by sync (and accepted), for status and tests.
        self.received = 0
        self.sessions = 0

    def install(self) -> None:
        self.overlay.serve(SYNC_PROTOCOL, self._answer)

    # -- asking --------------------------------------------------------------------------------------

    async def sync_with(self, peer: PeerID) -> bool:
        """One session with `peer`: fetch what we lack, send what it lacks. False if it failed (logged)."""
        try:
            with trio.fail_after(SYNC_TIMEOUT_S):
                stream = await self.overlay.open_stream(peer, SYNC_PROTOCOL)
                try:
                    await self._ask(_frames(stream))
                finally:
                    await stream.close()
        except WireError as exc:
            self.overlay.rejects.add("blackboard_sync", exc.reason)
            log.info("blackboard sync with %s failed: %s", peer, exc.message)
            return False
        except Exception as exc:
            log.debug("blackboard sync with %s failed: %s", peer, exc)
            return False
        self.sessions += 1
        return True

    async def _ask(self, frames: FramedStream) -> None:
        sent: set[bytes] = set()
        for _ in range(MAX_SYNC_ROUNDS):
            since = self.horizon()
            held = await trio.to_thread.run_sync(self.store.digest, since)
            await frames.send(encode_digest(make_digest(since, held)))
            reply = decode_sync_reply(await frames.expect())
            await self._take(list(reply.posts))
            push, more = posts_to_push(reply.want, sent)
            sent.update(push)
            raw = await trio.to_thread.run_sync(self.store.raw, push)
            await frames.send(encode_sync_reply(SyncReply(tuple(raw), (), more)))
            if not reply.more and not more:
                return

    # -- answering -----------------------------------------------------------------------------------

    async def _answer(self, stream: Any) -> None:
        remote: PeerID = stream.muxed_conn.peer_id
        if not self.is_member(remote):
            self.overlay.rejects.add("blackboard_sync", "not_member")
            log.info("refused blackboard sync from %s: not a member of the mesh", remote)
            await stream.close()
            return
        try:
            with trio.fail_after(SYNC_TIMEOUT_S):
                await self._serve(_frames(stream))
        except WireError as exc:
            self.overlay.rejects.add("blackboard_sync", exc.reason)
            log.info("refused blackboard sync from %s: %s", remote, exc.message)
        except Exception as exc:
            log.debug("blackboard sync from %s failed: %s", remote, exc)
        finally:
            await stream.close()

    async def _serve(self, frames: FramedStream) -> None:
        sent: set[bytes] = set()
        refused: set[bytes] = set()
        for _ in range(MAX_SYNC_ROUNDS):
            payload = await frames.receive()
            if payload is None:
                return
            digest = decode_digest(payload)
            held = await trio.to_thread.run_sync(self.store.digest, digest.since_ms)
            offer, more = posts_to_offer(held, digest, sent)
            sent.update(offer)
            raw = await trio.to_thread.run_sync(self.store.raw, offer)
            missing = await trio.to_thread.run_sync(self.store.missing, [pid for pid, _ in digest.have])
            want = ids_to_want(digest, self.horizon(), missing, refused)
            await frames.send(encode_sync_reply(SyncReply(tuple(raw), tuple(want), more)))
            pushed = decode_sync_reply(await frames.expect())
            refused |= await self._take(list(pushed.posts))

    async def _take(self, posts: list[bytes]) -> set[bytes]:
        """Check and store posts from a reply; the ids (when decodable) of those refused."""
        if not posts:
            return set()
        stored, refused = await self.accept(posts)
        self.received += stored
        return refused


def _frames(stream: Any) -> FramedStream:
    return FramedStream(stream, max_bytes=MAX_SYNC_REPLY_BYTES)
