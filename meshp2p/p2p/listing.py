"""`/meshp2p/listing/1.0.0` over libp2p streams (protocols/listing.md): the I/O around wire/listing.py.

A member of a listed mesh answers with its own node record and the newest listing of its mesh it holds, from
memory (no network I/O on behalf of an anonymous asker); `discover` asks providers directly instead of walking
the DHT twice per provider. A member of an unlisted mesh (private, no `--publish`) never installs the handler,
so there is nothing to ask it. Bad answers and requests are counted (`listing:<reason>`), never fatal.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo

from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import read_one_frame
from meshp2p.wire.errors import WireError
from meshp2p.wire.listing import (
    LISTING_PROTOCOL_ID,
    ListingAnswer,
    SingleFrameReader,
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)
from meshp2p.wire.records import decode_record, mesh_key, node_key, select_record

log = logging.getLogger(__name__)

LISTING_PROTOCOL = TProtocol(LISTING_PROTOCOL_ID)
#: One exchange as the asker sees it, dial included (Overlay bounds the dial itself by LOOKUP_DIAL_TIMEOUT_S).
FETCH_TIMEOUT_S = 5.0
#: Tries per provider (see fetch_records).
FETCH_ATTEMPTS = 2
#: How long a member waits for the request on a stream it accepted.
SERVE_TIMEOUT_S = 5.0
#: How long a provider's addresses from a provider record stay in the peerstore.
PROVIDER_ADDR_TTL_S = 600


class ListingServer:
    """A member's answers: its node record and its mesh's newest listing, as offered by the mesh service.

    The listing answered is the newest valid one among the last one this node wrote or read (`offer_listing`)
    and the copy its DHT store holds, so a member that is not the listing's writer still answers with a
    recent one. Nothing is answered until a node record was offered: a listed mesh publishes one at start.
    """

    def __init__(self, overlay: Overlay, mesh_id: bytes, clock: Callable[[], float] = time.time) -> None:
        self.overlay = overlay
        self.mesh_key = mesh_key(mesh_id)
        self.clock = clock
        self._node: bytes | None = None
        self._listing: bytes | None = None

    def install(self) -> None:
        self.overlay.serve(LISTING_PROTOCOL, self._handle, timeout_s=SERVE_TIMEOUT_S, rejects_as="listing")

    def offer_node_record(self, value: bytes) -> None:
        self._node = value

    def offer_listing(self, value: bytes) -> None:
        self._listing = value

    def answer(self) -> tuple[bytes | None, bytes | None]:
        """What we would send now: (node record, listing), each None when we hold no valid one."""
        now = self.clock()
        node = self._node
        if node is not None and not _valid(node_key(str(self.overlay.peer_id)), node, now):
            node = None
        if node is None:
            return None, None
        stored = self.overlay.dht.value_store.get(self.mesh_key.encode("utf-8"))
        candidates = [v for v in (self._listing, None if stored is None else bytes(stored.value)) if v is not None]
        try:
            listing: bytes | None = candidates[select_record(self.mesh_key, candidates, now=now)]
        except WireError:  # none, or none valid any more
            listing = None
        return node, listing

    async def _handle(self, stream: Any) -> None:
        """One request, one answer; a bad request is counted and reset by Overlay.serve."""
        decode_request(await read_one_frame(stream, SingleFrameReader()))
        await stream.write(encode_answer(*self.answer()))


async def fetch_records(overlay: Overlay, provider: PeerInfo, *, now: Callable[[], float] = time.time
                        ) -> ListingAnswer | None:
    """Ask a provider for its node record and its mesh's listing; None when it cannot be reached, does not speak
    the protocol (an older node, or a member of an unlisted mesh), or sends an answer that fails verification
    (counted in `overlay.rejects` as `listing:<reason>`).

    A try that failed without an answer is repeated once, on a fresh connection, within the same FETCH_TIMEOUT_S:
    now and then (one ask in 25-50 in tools/bench/overlay_discover.py on a loaded machine) the provider drops a
    connection just opened and py-libp2p fails the stream's protocol negotiation (`StreamFailure`: "handshake
    read failed"); the DHT reads that would replace the answer take about a second. A bad answer is never asked
    again.
    """
    if provider.addrs:
        overlay.host.get_peerstore().add_addrs(provider.peer_id, provider.addrs, PROVIDER_ADDR_TTL_S)
    deadline = trio.current_time() + FETCH_TIMEOUT_S
    for attempt in range(FETCH_ATTEMPTS):
        if attempt:
            await _forget_connection(overlay, provider)
        try:
            with trio.fail_at(deadline):
                payload = await _exchange(overlay, provider)
            return decode_answer(payload, peer_id=str(provider.peer_id), now=now())
        except WireError as exc:
            overlay.rejects.add("listing", exc.reason)
            log.info("ignored the listing answer of %s: %s", provider.peer_id, exc.message)
            return None
        except trio.TooSlowError:
            log.debug("%s did not answer within %s s", provider.peer_id, FETCH_TIMEOUT_S)
            return None
        except Exception as exc:  # unreachable, refused the protocol, a stream that failed to open
            log.debug("asking %s for its listing failed: %r (%r)", provider.peer_id, exc, exc.__cause__)
    return None


async def _forget_connection(overlay: Overlay, provider: PeerInfo) -> None:
    """Before a second try: py-libp2p keeps a connection the other end dropped and then fails every new stream on
    it without redialing ("No valid connections available"), and remembers a failed dial for 60 s."""
    swarm: Any = overlay.host.get_network()
    with contextlib.suppress(Exception), trio.move_on_after(FETCH_TIMEOUT_S):
        await swarm.close_peer(provider.peer_id)
    swarm.unblock_peer(provider.peer_id)


async def _exchange(overlay: Overlay, provider: PeerInfo) -> bytes:
    stream = await overlay.host.new_stream(provider.peer_id, [LISTING_PROTOCOL])
    try:
        await stream.write(encode_request())
        return await read_one_frame(stream, SingleFrameReader())
    finally:
        await stream.close()


def _valid(key: str, value: bytes, now: float) -> bool:
    try:
        decode_record(key, value, now=now)
    except WireError:
        return False
    return True
