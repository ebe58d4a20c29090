"""One gossip topic of one mesh, as the services use it: status, demand and the blackboard all go through this.

- Validation before relay: gossipsub runs `GossipTopic`'s validator on every message before it forwards or
  delivers it, so a forged, expired or malformed message goes no further; each refusal is counted by its reason
  (`reject`). The validator is synchronous on purpose: py-libp2p marks a message seen only after validating it,
  so an await there would let two copies of one message (from two neighbours) both pass its duplicate check.
- What the validator decoded is kept for delivery (oldest dropped first past DECODED_CACHE_MAX; delivery then
  decodes again), so a message is verified once.
- Gossip is anonymous (an empty `from`, protocols/gossip.md); where a sender is named (a status pushed on a stream
  names the stream's peer) it must be the signer (`key_mismatch`).
- Publishing signs with the node's identity and its one sequence counter (`SequenceCounter`, shared by every topic
  of the node: replay guards are per topic, the counter is per node).
Replays are the caller's rule (status and demand keep a ReplayGuard; the blackboard's store is its own guard).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from libp2p.peer.id import ID

from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.errors import WireError
from meshp2p.wire.gossip import GossipMessage, SequenceCounter, decode_gossip, encode_gossip

log = logging.getLogger(__name__)

T = TypeVar("T")

DECODED_CACHE_MAX = 1024

#: Turns a verified message into what the service wants (a status, a demand map, a post); raises WireError (or
#: anything, counted as `malformed`) to refuse it.
Parse = Callable[[GossipMessage], T]
#: The service's own admission rule after parsing (a post's rate, say): a reason to refuse, or None.
Admit = Callable[[GossipMessage, T], str | None]


@dataclass(frozen=True)
class Delivered(Generic[T]):
    message: GossipMessage
    value: T


class GossipTopic(Generic[T]):
    def __init__(self, overlay: Overlay, *, mesh_id: bytes, secret: bytes | None, topic: str, parse: Parse[T],
                 reject: Callable[[str], None], sequence: SequenceCounter, clock: Callable[[], float],
                 admit: Admit[T] | None = None) -> None:
        self.overlay = overlay
        self.mesh_id, self.secret, self.topic = mesh_id, secret or None, topic
        self.parse, self.admit, self.reject = parse, admit, reject
        self.sequence, self.clock = sequence, clock
        self._decoded: dict[bytes, Delivered[T]] = {}
        self._subscription: Any = None

    def check(self, data: bytes, from_id: bytes | None = None) -> Delivered[T]:
        """Decode, verify and parse one message of this topic; WireError says why it is refused."""
        try:
            decoded = decode_gossip(data, mesh_id=self.mesh_id, topic=self.topic, now=self.clock(),
                                    secret=self.secret)
            if from_id and ID(from_id).to_base58() != decoded.sender:
                raise WireError("key_mismatch", "the gossip sender is not the message's signer")
            return Delivered(decoded, self.parse(decoded))
        except WireError:
            raise
        except Exception as exc:
            raise WireError("malformed", f"gossip body: {exc}") from exc

    def _admitted(self, data: bytes, from_id: bytes | None) -> Delivered[T] | None:
        """`check`, then the service's own rule; None (counted) when refused."""
        try:
            entry = self.check(data, from_id)
        except WireError as exc:
            self.reject(exc.reason)
            return None
        reason = self.admit(entry.message, entry.value) if self.admit is not None else None
        if reason is not None:
            self.reject(reason)
            return None
        return entry

    def _validate(self, forwarder: ID, msg: Any) -> bool:
        entry = self._admitted(msg.data, msg.from_id)
        if entry is None:
            return False
        if len(self._decoded) >= DECODED_CACHE_MAX:
            del self._decoded[next(iter(self._decoded))]
        self._decoded[msg.data] = entry
        return True

    async def subscribe(self) -> None:
        self._subscription = await self.overlay.subscribe(self.topic, self._validate)

    async def receive(self) -> Delivered[T]:
        """The next message the validator let through (verified again if it fell out of the cache)."""
        assert self._subscription is not None, "subscribe first"
        while True:
            msg = await self._subscription.get()
            entry = self._decoded.pop(msg.data, None) or self._admitted(msg.data, msg.from_id)
            if entry is not None:
                return entry

    def sign(self, msg_type: str, body: dict[str, Any]) -> bytes:
        now = self.clock()
        return encode_gossip(self.overlay.identity, self.mesh_id, self.topic, msg_type, body,
                             seq=self.sequence.next(now=now), now=now, secret=self.secret)

    async def publish(self, msg_type: str, body: dict[str, Any]) -> bool:
        """Sign and send; False (logged) when the overlay could not."""
        data = self.sign(msg_type, body)
        try:
            await self.overlay.publish(self.topic, data)
        except Exception as exc:  # gossipsub raises a handful of types when it has no peers or is stopping
            log.debug("%s publish on %s failed: %s", msg_type, self.topic, exc)
            return False
        return True
