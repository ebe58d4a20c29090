"""The node's Kademlia DHT as meshp2p uses it: signed value records in and out, provider records, and the
routing-table upkeep py-libp2p leaves undone.

- Every `/meshp2p/...` value is validated strictly (`RecordValidator`: signed records, protocols/dht-records.md);
  a refusal is counted as `dht:<reason>`, and `select` keeps the newest valid one.
- Reads do not trust py-libp2p's local store blindly (`get_record`) and wait for GET_QUORUM answers, not one.
- Provider lookups are our own walk (p2p/providers.py), which stops at the first holders.
- DHT clients (a finished `discover`) are dropped from the routing table (`purge_clients`).
Every network operation is bounded by DHT_OP_TIMEOUT_S.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IHost
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import Validator

from meshp2p.p2p import providers
from meshp2p.p2p.rejects import RejectCounter
from meshp2p.wire.errors import WireError
from meshp2p.wire.records import decode_record, select_record

log = logging.getLogger(__name__)

DHT_OP_TIMEOUT_S = 15.0
#: A DHT value this node holds is answered from its own store only while younger than this (signed issue
#: time); an older one may have been replaced in the network, so the network is asked (see get_record).
LOCAL_RECORD_FRESH_S = 30.0
#: Valid answers a DHT read waits for before it stops asking (the newest of them wins). py-libp2p's default (0)
#: walks every candidate peer (~20 RPCs); 2 rather than 1 so one peer holding an older version cannot win alone.
GET_QUORUM = 2
DHT_NAMESPACE = "meshp2p"


class RecordValidator(Validator):
    """Every `/meshp2p/...` DHT value must be a valid signed record (protocols/dht-records.md)."""

    def __init__(self, rejects: RejectCounter, clock: Callable[[], float] = time.time) -> None:
        self._rejects = rejects
        self._clock = clock

    def validate(self, key: str, value: bytes) -> None:
        try:
            decode_record(key, value, now=self._clock())
        except WireError as exc:
            self._rejects.add("dht", exc.reason)
            raise InvalidRecordType(f"{key}: {exc.message}") from exc

    def select(self, key: str, values: list[bytes]) -> int:
        try:
            return select_record(key, values, now=self._clock())
        except WireError:
            return 0


def _keep_clients_out_of_routing_table(dht: KadDHT, host: IHost) -> None:
    """Add a peer to `dht`'s routing table only once identify has shown that it serves the DHT.

    py-libp2p adds every peer that opens a KAD stream to us with `skip_server_mode_check=True` ("it opened one, so
    it must serve"), which is false of DHT clients: each lookup of a client (a `discover`, a node behind NAT)
    made us hand it to later lookups, which dialed it, so two clients of one bootstrap met through the DHT; and
    `purge_clients` removed them only seconds later. Here a peer whose protocols identify has not reported yet
    is left out too: its next KAD stream, or a lookup's answer, adds it once they are known.
    """
    add_to_table = dht.routing_table.add_peer

    async def add_peer(peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
        try:
            protocols = host.get_peerstore().get_protocols(peer_id)
        except Exception:  # py-libp2p raises PeerStoreError for a peer it knows nothing of
            protocols = []
        if str(KAD_PROTOCOL_ID) not in (protocols or []):
            return False
        return bool(await add_to_table(peer_id))

    dht.add_peer = add_peer  # type: ignore[method-assign]


class DhtRecords:
    """Records and providers in `kad`, py-libp2p's DHT of `host` (built here, with our validator registered)."""

    def __init__(self, host: IHost, *, server: bool, rejects: RejectCounter) -> None:
        self.host = host
        self.kad = KadDHT(host, DHTMode.SERVER if server else DHTMode.CLIENT, strict_validation=True)
        self.kad.register_validator(DHT_NAMESPACE, RecordValidator(rejects))
        _keep_clients_out_of_routing_table(self.kad, host)

    async def put_record(self, key: str, value: bytes) -> bool:
        """Store a record in the DHT; False when a better one is already stored (or the put timed out).

        py-libp2p raises ValueError when the local store holds a value `select` prefers (say, another member's
        listing signed in the same second); that is not an error for us: the better record stands.
        """
        stored = False
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            try:
                await self.kad.put_value(key, value)
                stored = True
            except ValueError as exc:
                log.debug("kept the stored record for %s: %s", key, exc)
        return stored

    async def get_record(self, key: str) -> bytes | None:
        """The newest of the first GET_QUORUM valid copies the network returns, or a fresh local one.

        py-libp2p's `get_value` answers from the local store without asking anyone whenever it holds a copy,
        and keeps fetched copies for 24 h whatever their own expiry. So a local copy is used only when valid
        and issued less than LOCAL_RECORD_FRESH_S ago; otherwise it is set aside for the network query and
        put back if the network has nothing better (an expired one is dropped).
        """
        key_bytes = key.encode("utf-8")
        store = self.kad.value_store
        local = store.get(key_bytes)
        kept: Any = None
        if local is not None:
            issued = _issued_at(key, local.value)
            if issued is not None and time.time() - issued < LOCAL_RECORD_FRESH_S:
                return bytes(local.value)
            store.remove(key_bytes)
            kept = local if issued is not None else None
        value: bytes | None = None
        try:
            with trio.move_on_after(DHT_OP_TIMEOUT_S):
                value = await self.kad.get_value(key, quorum=GET_QUORUM)
        finally:
            if kept is not None and (value is None or _prefer_first(key, kept.value, value)):
                store.put_record(key_bytes, kept)
                value = bytes(kept.value)
        return value

    async def provide(self, content_key: bytes) -> None:
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            await self.kad.provide(content_key.hex())

    async def find_providers(self, content_key: bytes) -> list[PeerInfo]:
        """Providers of a key, deduplicated: a walk that stops at the first holders (p2p/providers.py says
        why it is not py-libp2p's `find_providers`)."""
        found: list[PeerInfo] = []
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            found = await providers.find_providers(
                self.host, self.kad.routing_table, self.kad.provider_store.get_providers(content_key), content_key)
        return found

    async def refresh_routing_table(self) -> None:
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            await self.kad.refresh_routing_table()

    def purge_clients(self) -> list[ID]:
        """Drop routing-table peers that identify says serve no DHT; returns them.

        py-libp2p adds every peer that opens a KAD stream to us, DHT clients included (its inbound path skips
        the server-mode check), so each finished `discover` stayed in the servers' tables, and later lookups
        were handed it and dialed it in vain until a lookup happened to fail on it.
        """
        table, store = self.kad.routing_table, self.host.get_peerstore()
        clients = []
        for peer_id in table.get_peer_ids():
            try:
                protocols = store.get_protocols(peer_id)
            except Exception:  # nothing known about it (yet): keep it
                continue
            if protocols and str(KAD_PROTOCOL_ID) not in protocols:
                table.remove_peer(peer_id)
                clients.append(peer_id)
        return clients


def _prefer_first(key: str, first: bytes, second: bytes) -> bool:
    try:
        return select_record(key, [first, second], now=time.time()) == 0
    except WireError:  # neither is valid any more
        return False


def _issued_at(key: str, value: bytes) -> int | None:
    """A record's signed issue time, or None when it is no longer valid (expired, malformed)."""
    try:
        return decode_record(key, value, now=time.time()).issued_at
    except WireError:
        return None
