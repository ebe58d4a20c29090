"""A provider lookup that stops once it has an answer: our own walk over Kademlia GET_PROVIDERS.

py-libp2p's `find_providers` (0.8.1) is two walks: a full FIND_NODE walk to the 20 closest peers, then
GET_PROVIDERS to every one of them, in batches of ten, until it holds 20 providers, which a topic with fewer
providers never reaches. On a 20-node network that asks every node twice (~80 KAD streams, ~0.45 s of a
~0.7 s `discover`), although each provider record is held by the ~20 peers closest to the key, so the first
holders reached already know it.

This walk is one Kademlia iterative lookup with GET_PROVIDERS as the query (a GET_PROVIDERS answer carries
closer peers too), always asking the closest peers not yet asked. One query is in flight at a time, and one more
is allowed for every LOOKUP_STALL_S without an answer, up to LOOKUP_ALPHA: a fresh client's queries are mostly
dials (a Noise handshake, CPU on both ends), so parallel queries to peers that answer promptly only burn CPU that
the one needed answer waits for (tools/bench/overlay_discover.py, loaded 2-core machine: p50 0.19 s with three in
flight, 0.10 s with one), while a dead or far peer still cannot hold the walk up for long. It ends
- once PROVIDER_HOLDERS peers have answered with providers (the union of their lists is the result), or
- once the LOOKUP_CONVERGED closest peers it knows of have all answered (or failed): nobody closer is known, so
  nobody holds a record (an absent topic costs a short walk, not the whole network), or
- when no peer is left to ask, or at the caller's deadline.
Two holders rather than one so that one stale or lying holder cannot hide a provider by itself; anything a
provider is said to be is checked later anyway (its signed node record or listing).

Every query is bounded by LOOKUP_RPC_TIMEOUT_S (dial included), so a dead peer holds one slot for a few seconds
while the others go on. Providers are not cached: py-libp2p's `find_providers` answers from its cache alone
once it has one, which would hide every provider added later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import MAX_DHT_MESSAGE_SIZE
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.utils import maybe_consume_signed_record, sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited
from multiaddr import Multiaddr

if TYPE_CHECKING:
    from libp2p.abc import IHost

log = logging.getLogger(__name__)

#: Queries in flight at most (Kademlia's alpha; py-libp2p uses 10, which only helps a walk that asks everyone).
LOOKUP_ALPHA = 3
#: Without an answer for this long, one more query may be in flight: longer than a LAN or loopback round trip with
#: its dial (tens of ms), about one dial plus round trip across the internet.
LOOKUP_STALL_S = 0.5
#: Peers that must have answered with providers before the walk stops.
PROVIDER_HOLDERS = 2
#: The walk also ends once this many of the closest peers it knows of have all answered.
LOOKUP_CONVERGED = 8
#: One GET_PROVIDERS round trip, dial included.
LOOKUP_RPC_TIMEOUT_S = 5.0
#: How long addresses learned from closer-peer lists stay in the peerstore (py-libp2p's own walks use 1 h).
ADDR_TTL_S = 3600
#: Providers and closer peers read from one answer, at most (a server sends up to 20 of each).
MAX_PEERS_PER_ANSWER = 64


class ProviderWalk:
    """One lookup of the providers of `key` (raw DHT key bytes) from `host`; `run` returns them deduplicated."""

    def __init__(self, host: IHost, key: bytes, start: list[ID], local: list[PeerInfo]) -> None:
        self.host = host
        self.key = key
        self.providers: dict[ID, PeerInfo] = {}
        #: Peers that answered (with or without providers) or failed: never asked again.
        self.done: set[ID] = set()
        self.holders = 0
        self._known: list[ID] = []
        self._asked: set[ID] = set()
        self._finished = trio.Event()
        self._changed = trio.Event()
        self._in_flight = 0
        for info in local:
            self.providers.setdefault(info.peer_id, info)
        if local:  # we hold the record ourselves: we are one of the holders
            self.holders += 1
        self._learn(start)

    def _learn(self, peers: list[ID]) -> None:
        own = self.host.get_id()
        new = [p for p in peers if p != own and p not in self._known]
        if new:
            self._known = sort_peer_ids_by_distance(self.key, self._known + new)

    def _should_stop(self) -> bool:
        if self.holders >= PROVIDER_HOLDERS:
            return True
        closest = self._known[:LOOKUP_CONVERGED]
        if all(p in self.done for p in closest):
            return True
        return self._in_flight == 0 and self._next() is None

    def _next(self) -> ID | None:
        return next((p for p in self._known if p not in self._asked), None)

    async def run(self) -> list[PeerInfo]:
        allowed = 1
        async with trio.open_nursery() as nursery:
            while not self._should_stop():
                peer = self._next() if self._in_flight < allowed else None
                if peer is None:
                    self._changed = trio.Event()
                    with trio.move_on_after(LOOKUP_STALL_S) as waited:
                        await self._changed.wait()
                    if waited.cancelled_caught:  # a slow or dead peer: let one more query go
                        allowed = min(allowed + 1, LOOKUP_ALPHA)
                    continue
                self._asked.add(peer)
                self._in_flight += 1
                nursery.start_soon(self._query, peer)
            nursery.cancel_scope.cancel()
        return list(self.providers.values())

    async def _query(self, peer: ID) -> None:
        providers: list[PeerInfo] = []
        closer: list[ID] = []
        try:
            with trio.fail_after(LOOKUP_RPC_TIMEOUT_S):
                providers, closer = await get_providers_rpc(self.host, peer, self.key)
        except Exception as exc:  # a dead, slow or confused peer: it simply does not count
            log.debug("GET_PROVIDERS to %s failed: %r", peer, exc)
        finally:
            self._in_flight -= 1
            self.done.add(peer)
        if providers:
            self.holders += 1
            for info in providers:
                self.providers.setdefault(info.peer_id, info)
        self._learn(closer)
        self._changed.set()


async def get_providers_rpc(host: IHost, peer: ID, key: bytes) -> tuple[list[PeerInfo], list[ID]]:
    """One GET_PROVIDERS round trip: the providers `peer` holds for `key` and the closer peers it knows.

    Closer peers' addresses go into the peerstore (the walk dials them next); py-libp2p's own GET_PROVIDERS
    helper drops them, which is why this is not built on it.
    """
    stream = await host.new_stream(peer, [TProtocol(KAD_PROTOCOL_ID)])
    try:
        request = Message()
        request.type = Message.MessageType.GET_PROVIDERS
        request.key = key
        request.senderRecord, _ = env_to_send_in_RPC(host)
        await stream.write(encode_varint_prefixed(request.SerializeToString()))
        response = Message()
        response.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_DHT_MESSAGE_SIZE))
    finally:
        await stream.close()
    if response.type != Message.MessageType.GET_PROVIDERS or not maybe_consume_signed_record(response, host, peer):
        raise ValueError("not a GET_PROVIDERS answer, or a bad sender record")
    providers = [info for info in (_peer_info(host, p) for p in response.providerPeers[:MAX_PEERS_PER_ANSWER])
                 if info is not None]
    closer: list[ID] = []
    for p in response.closerPeers[:MAX_PEERS_PER_ANSWER]:
        info = _peer_info(host, p)
        if info is not None and info.addrs:
            host.get_peerstore().add_addrs(info.peer_id, info.addrs, ADDR_TTL_S)
            closer.append(info.peer_id)
    return providers, closer


def _peer_info(host: IHost, proto: Any) -> PeerInfo | None:
    """A peer entry of an answer; None when its id is not a peer id or its signed peer record is bad."""
    try:
        if not maybe_consume_signed_record(proto, host):
            return None
        addrs = []
        for raw in proto.addrs:
            try:
                addrs.append(Multiaddr(raw))
            except Exception:  # multiaddr raises many types on junk; skip the one address
                continue
        return PeerInfo(ID(proto.id), addrs)
    except Exception:
        return None


async def find_providers(host: IHost, routing_table: Any, local: list[PeerInfo], key: bytes) -> list[PeerInfo]:
    """Providers of `key`, starting from the closest peers of our routing table (or whoever we are connected
    to: a fresh DHT client knows only its bootstrap peers)."""
    start = list(routing_table.find_local_closest_peers(key, 20))
    start += [p for p in host.get_connected_peers() if p not in start]
    return await ProviderWalk(host, key, start, local).run()
