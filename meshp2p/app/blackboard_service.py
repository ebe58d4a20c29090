"""The agents' blackboard on a mesh: post, receive, keep, search, watch, and catch up after being away.

App-layer wiring of the pieces in `meshp2p/blackboard/` (policy, store, search, scrubbing) to the overlay:

- Posts travel on the mesh's `blackboard` gossip topic inside the usual signed (and, on a private mesh,
  encrypted) envelope. The topic validator is where a post is admitted: wire checks, then the node's policy
  (size, replay, rate per author). A refused post is counted and never relayed; an admitted one is stored as
  gossipsub delivers it (the store catches replays from before a restart).
- A node's own posts are scrubbed of obvious secrets (on by default), held to the node's own rate, stored,
  then published.
- Peers that appear in the view are synced with (`meshp2p/app/blackboard_sync.py`), so a late or restarted node
  gets what it missed; every peer is synced with again every `RESYNC_INTERVAL_S` to heal any gap.
- Watchers (the console's live feed) get each newly stored post, from gossip, sync or this node.

One store per mesh (`$MESHP2P_HOME/blackboard/<mesh id>.sqlite`): a node that moves to another mesh must
not hand the old mesh's posts to the new one through sync.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from meshp2p.app.blackboard_sync import BoardSync
from meshp2p.app.config import BlackboardConfig
from meshp2p.app.status import BlackboardStatus
from meshp2p.blackboard.limits import PostGate, RejectReason
from meshp2p.blackboard.scrub import scrub as scrub_text
from meshp2p.blackboard.search import DEFAULT_LIMIT, MAX_SCAN, search_store
from meshp2p.blackboard.store import BlackboardStore
from meshp2p.errors import PostRefused
from meshp2p.home import meshp2p_home
from meshp2p.p2p import PeerID
from meshp2p.p2p.gossip import GossipTopic
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.blackboard import (
    BLACKBOARD_TYPE,
    POST_ID_BYTES,
    Post,
    decode_post,
    encode_post,
    normalize_tag,
    normalize_text,
    post_from_gossip,
    post_to_body,
)
from meshp2p.wire.errors import WireError
from meshp2p.wire.gossip import GossipMessage, SequenceCounter, topic_name

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0
#: How often the view is checked for peers to sync with.
SYNC_CHECK_S = 1.0
#: Every peer is synced with again after this long, which heals anything gossip dropped.
RESYNC_INTERVAL_S = 600.0
#: After a failed session with a peer, the next try.
SYNC_RETRY_S = 3.0
MAX_CONCURRENT_SYNCS = 2
#: Posts a slow watcher may fall behind by before it is cut off (it reconnects and reads the feed).
WATCH_BUFFER = 256
#: Admitted gossip waiting to be stored; more means the receive loop is far behind (the excess is dropped, and
#: comes back by sync).
#: Rejection counts are written to the store this often (not on each refusal: a flood must not cost writes).
FLUSH_REJECTIONS_S = 5.0


def store_path(mesh_id: bytes) -> Path:
    return meshp2p_home() / "blackboard" / f"{mesh_id.hex()[:32]}.sqlite"


class BlackboardService:
    """One node's blackboard on one mesh; the console's routes call `post`, `search`, `watch` and `stats`."""

    def __init__(self, overlay: Overlay, *, mesh_id: bytes, secret: bytes, store: BlackboardStore,
                 config: BlackboardConfig, sequence: SequenceCounter, is_member: Callable[[PeerID], bool],
                 peers: Callable[[], Iterable[str]], clock: Callable[[], float] = time.time) -> None:
        self.overlay = overlay
        self.mesh_id = mesh_id
        self.secret = secret
        self.store = store
        self.config = config
        self.limits = config.limits
        self.sequence = sequence
        self.peers = peers
        self.clock = clock
        self.self_id = str(overlay.peer_id)
        self.topic = topic_name(mesh_id, "blackboard", secret or None)
        self.gate = PostGate(self.limits)
        self.sync = BoardSync(overlay, store, horizon=self._horizon, accept=self._accept_synced,
                              is_member=is_member)
        self._watchers: set[trio.MemorySendChannel[Post]] = set()
        self._listeners: list[Callable[[Post], None]] = []
        self._unflushed: dict[str, int] = {}
        #: The topic: a post is admitted in its validator (wire checks, then this node's policy), so one refused
        #: is never relayed; it is stored when gossipsub delivers it (`_receive`).
        self.gossip = GossipTopic(overlay, mesh_id=mesh_id, secret=secret or None, topic=self.topic,
                                  parse=self._parse, admit=self._admit, reject=self._reject, sequence=sequence,
                                  clock=clock)

    # -- what the console calls ---------------------------------------------------------------------

    async def post(self, text: str, *, name: str | None = None, tags: Iterable[str] = (),
                   thread: str | None = None, scrub: bool | None = None) -> tuple[Post, list[str]]:
        """Sign, store and gossip a post of this node's; returns it and the kinds of secrets redacted."""
        text = normalize_text(text)
        redacted: list[str] = []
        if self.config.scrub if scrub is None else scrub:
            text, redacted = scrub_text(text)
        if not text.strip():
            raise PostRefused("the post has no text", reason="empty", hint="write something to post")
        size = len(text.encode("utf-8"))
        if size > self.limits.max_text_bytes:
            raise PostRefused(f"the post is {size} bytes; this mesh takes {self.limits.max_text_bytes}",
                              reason="too_long", hint="shorten it, or split it into a thread (reply to the first part)")
        thread_id = None if thread is None else await self._resolve_thread(thread)
        now = self.clock()
        try:
            raw = encode_post(self.overlay.identity, text=text, now=now, name=name or None,
                              tags=sorted({normalize_tag(t) for t in tags if t.strip()}), thread=thread_id)
        except WireError as exc:
            raise PostRefused(exc.message, reason="bad_tags", hint="tags are 1-32 of a-z 0-9 _ - (at most 8); "
                              "a name is 1-64 characters") from None
        post = decode_post(raw, now=now, ttl_s=self.limits.ttl_s)
        reason = self.gate.admit(post, now=now)
        if reason == "over_rate":
            raise PostRefused(f"this node posts at most {self.limits.rate_per_min} times a minute",
                              reason="rate_limited",
                              hint="wait a little; every member refuses posts over the mesh's rate")
        if reason is None:  # "replay": the same post made twice in one millisecond, already stored and sent
            await self._store(post, raw)
            await self._publish(raw)
        return post, redacted

    async def feed(self, *, limit: int = DEFAULT_LIMIT, since_ms: int | None = None, author: str | None = None,
                   tag: str | None = None) -> list[Post]:
        return await self.search("", limit=limit, since_ms=since_ms, author=author, tag=tag)

    async def search(self, query: str, *, limit: int = DEFAULT_LIMIT, since_ms: int | None = None,
                     author: str | None = None, tag: str | None = None) -> list[Post]:
        """Ranked search (meshp2p/blackboard/search.py). `author` is a PeerID, or else a display name (any case):
        names are unverified claims, so that filter is a convenience, not an identity check."""
        tag = None if tag is None else normalize_tag(tag)
        if author is None or _looks_like_peer_id(author):
            return await trio.to_thread.run_sync(
                lambda: search_store(self.store, query, author=author, since_ms=since_ms, tag=tag, limit=limit))
        wanted = author.casefold()
        found = await trio.to_thread.run_sync(
            lambda: search_store(self.store, query, since_ms=since_ms, tag=tag, limit=MAX_SCAN))
        return [p for p in found if (p.name or "").casefold() == wanted][:limit]

    @contextmanager
    def watch(self) -> Iterator[trio.MemoryReceiveChannel[Post]]:
        """Every post stored from now on, as it is stored, while the block runs."""
        send, receive = trio.open_memory_channel[Post](WATCH_BUFFER)
        self._watchers.add(send)
        try:
            yield receive
        finally:
            self._watchers.discard(send)
            send.close()

    def listen(self, listener: Callable[[Post], None]) -> None:
        """Call `listener` with every post stored from now on, on the event loop, for the node's whole life: the
        console's event ring keeps posts while no console is open (a watcher is a live feed, counted and cut off
        when it falls behind; a listener is neither). `listener` must not block."""
        self._listeners.append(listener)

    def snapshot(self) -> BlackboardStatus:
        """For /api/status (counts are read from memory: this runs on the event loop)."""
        return BlackboardStatus(
            topic=self.topic, store=str(self.store.path), limits=self.limits, scrub=self.config.scrub,
            watchers=len(self._watchers), synced_posts=self.sync.received, sync_sessions=self.sync.sessions,
            rejected={k.split(":", 1)[1]: v for k, v in self.overlay.rejects.as_dict().items()
                      if k.startswith("blackboard:")},
        )

    async def stats(self) -> dict[str, Any]:
        """The snapshot plus what needs the store: post count, rejections over the store's whole life."""
        count = await trio.to_thread.run_sync(self.store.count)
        persisted = await trio.to_thread.run_sync(self.store.rejections)
        for reason, n in self._unflushed.items():
            persisted[reason] = persisted.get(reason, 0) + n
        return {**self.snapshot().to_json(), "posts": count, "rejected_all_time": persisted}

    # -- running ------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.sync.install()
        await self.gossip.subscribe()
        await trio.to_thread.run_sync(self._prune)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive)
                nursery.start_soon(self._sync_peers)
                nursery.start_soon(self._housekeeping)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._flush_rejections)

    async def _publish(self, raw: bytes) -> None:
        if not await self.gossip.publish(BLACKBOARD_TYPE, post_to_body(raw)):
            # The post is stored: peers get it by sync when gossip cannot reach them.
            log.warning("could not gossip a blackboard post (peers will sync it)")

    def _parse(self, msg: GossipMessage) -> tuple[Post, bytes]:
        return post_from_gossip(msg, now=self.clock(), ttl_s=self.limits.ttl_s)

    def _admit(self, msg: GossipMessage, parsed: tuple[Post, bytes]) -> str | None:
        """This node's policy for a gossiped post (its author's rate, the limits); ours pass: stored when made."""
        if msg.sender == self.self_id:
            return None
        return self.gate.admit(parsed[0], now=self.clock())

    async def _receive(self) -> None:
        """Store each post the validator admitted, as gossipsub delivers it."""
        while True:
            entry = await self.gossip.receive()
            if entry.message.sender == self.self_id:
                continue
            if not await self._store(*entry.value):
                self._reject("replay")  # held since before a restart

    async def _accept_synced(self, posts: list[bytes]) -> tuple[int, set[bytes]]:
        stored, refused = 0, set()
        for raw in posts:
            now = self.clock()
            try:
                post = decode_post(raw, now=now, ttl_s=self.limits.ttl_s)
            except WireError as exc:
                self._reject(exc.reason)
                continue
            reason: RejectReason | None = self.gate.admit(post, now=now, rate_limited=False)
            if reason is None and not await self._store(post, raw):
                reason = "replay"
            if reason is None:
                stored += 1
            else:
                refused.add(post.id)
                if reason != "replay":  # two peers offering the same post at once is how sync works, not an attack
                    self._reject(reason)
        return stored, refused

    async def _store(self, post: Post, raw: bytes) -> bool:
        """Keep an admitted post and hand it to watchers; False if the store already held it."""
        if not await trio.to_thread.run_sync(self.store.add, post, raw):
            return False
        self._deliver(post)
        return True

    def _reject(self, reason: str) -> None:
        self.overlay.rejects.add("blackboard", reason)
        self._unflushed[reason] = self._unflushed.get(reason, 0) + 1

    def _deliver(self, post: Post) -> None:
        for listener in self._listeners:
            listener(post)
        for send in list(self._watchers):
            try:
                send.send_nowait(post)
            except trio.WouldBlock:
                log.info("a blackboard watcher fell %d posts behind; closing its feed", WATCH_BUFFER)
                self._watchers.discard(send)
                send.close()
            except trio.BrokenResourceError:
                self._watchers.discard(send)

    async def _sync_peers(self) -> None:
        """Sync with each peer when it appears in the view (again if it left and came back), and every
        RESYNC_INTERVAL_S after that."""
        synced_at: dict[str, float] = {}
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_SYNCS)

        async def one(peer: str) -> None:
            async with limiter:
                if not await self.sync.sync_with(PeerID.from_base58(peer)) and peer in synced_at:
                    # Its blackboard may not be up yet (it is still starting): try again soon, not in 10 minutes.
                    synced_at[peer] = trio.current_time() - RESYNC_INTERVAL_S + SYNC_RETRY_S

        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                present = {p for p in self.peers() if p != self.self_id}
                for gone in set(synced_at) - present:
                    del synced_at[gone]
                for peer in present:
                    if now - synced_at.get(peer, -RESYNC_INTERVAL_S) >= RESYNC_INTERVAL_S:
                        synced_at[peer] = now
                        nursery.start_soon(one, peer)
                await trio.sleep(SYNC_CHECK_S)

    async def _housekeeping(self) -> None:
        last_prune = trio.current_time()
        while True:
            await trio.sleep(FLUSH_REJECTIONS_S)
            if self._unflushed:  # an idle node spends no thread (nor disk write) on this
                await trio.to_thread.run_sync(self._flush_rejections)
            if trio.current_time() - last_prune >= PRUNE_INTERVAL_S:
                await trio.to_thread.run_sync(self._prune)
                last_prune = trio.current_time()

    def _prune(self) -> None:
        gone = self.store.prune(int(self.clock() * 1000), self.limits.ttl_s, self.limits.capacity)
        if gone:
            log.debug("pruned %d old blackboard posts", gone)

    def _flush_rejections(self) -> None:
        pending, self._unflushed = self._unflushed, {}
        for reason, n in pending.items():
            self.store.count_rejection(reason, n)

    def _horizon(self) -> int:
        return self.store.horizon(int(self.clock() * 1000), self.limits.ttl_s, self.limits.capacity)

    async def _resolve_thread(self, ref: str) -> bytes:
        """A reply's target from a full hex id or an unambiguous prefix of one this node holds."""
        ref = ref.strip().lower()
        if len(ref) == 2 * POST_ID_BYTES:
            try:
                return bytes.fromhex(ref)
            except ValueError:
                pass
        matches = await trio.to_thread.run_sync(self.store.find_prefix, ref)
        if len(matches) == 1:
            return matches[0].id
        if not matches:
            raise PostRefused(f"no post with an id starting {ref!r} on this blackboard", reason="not_found",
                              hint="use an id from `meshp2p blackboard read`")
        raise PostRefused(f"{len(matches)} posts have ids starting {ref!r}", reason="ambiguous",
                          hint="give more digits of the id")


def _looks_like_peer_id(value: str) -> bool:
    """Ed25519 PeerIDs in base58 start `12D3KooW`; older RSA/secp ones `Qm`/`16U`. Names rarely do."""
    return value.startswith(("12D3KooW", "Qm", "16U")) and len(value) >= 46

