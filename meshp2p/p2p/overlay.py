"""The libp2p side of a node: the host with meshp2p's safe defaults, its connections and gossipsub, and the
`Overlay` facade the layers above talk to libp2p through.

py-libp2p's defaults are unsafe or slow for us (see ../shared/notes/py-libp2p.md); this module is the one
place that overrides them for the host and pubsub:
- security: Noise only (the default host also accepts plaintext and secio), muxer: yamux only;
- `max_connections_per_peer=1` removes a 250 ms floor on every dial;
- gossipsub heartbeat 1 s (default 120 s), a higher per-topic rate limit, and no IP-diversity "eclipse
  protection", which on a LAN or loopback (every peer on one address) would keep the mesh from forming;
- gossipsub without peer scoring, "adaptive gossip" or a 60 s prune backoff. With py-libp2p's default score
  parameters (all weights 0) every score is 0, which only drives "opportunistic grafting": +2 mesh peers per
  heartbeat until a member passes degree_high and prunes back to degree_low..degree, every few seconds. A pruned
  peer kept the pruner in backoff for 60 s, but py-libp2p's pruner sets no backoff of its own and re-grafted, was
  refused and backed off in turn; meanwhile adaptive gossip, seeing a poor "health score", stretched the heartbeat
  to 30-60 s. At 20 members some ended with mesh degree 0 and missed status changes for a minute. Without the
  scorer the mesh stays within GOSSIP_DEGREE_LOW..GOSSIP_DEGREE_HIGH and changes only when members come and go.

Beside it: p2p/dht.py (records, providers, the validator), p2p/_libp2p_patches.py (what we change inside
py-libp2p: logging, how Noise and yamux move bytes, bounded dials), p2p/streams.py (`serve`'s error ladder).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.p2p._libp2p_patches import dial_timeout, tame_logging, tune_dials, tune_noise, tune_yamux
from meshp2p.p2p.dht import DhtRecords
from meshp2p.p2p.interfaces import is_loopback_host, lan_ipv4s
from meshp2p.p2p.liveness import ConnectionWatcher
from meshp2p.p2p.mdns import MdnsDiscovery, advertised_addrs
from meshp2p.p2p.members_gossip import MeshGossipSub, MeshPubsub, TopicGate
from meshp2p.p2p.rejects import RejectCounter
from meshp2p.p2p.streams import Handler, serve_stream
from meshp2p.wire.identity import Identity

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

GOSSIP_HEARTBEAT_S = 1
#: Gossipsub mesh degree: a member grafts up to GOSSIP_DEGREE peers when it has fewer than GOSSIP_DEGREE_LOW and
#: prunes back to GOSSIP_DEGREE above GOSSIP_DEGREE_HIGH. Every member receives (and forwards) about GOSSIP_DEGREE
#: copies of each message, the bulk of an idle member's CPU, hence 4 rather than py-libp2p's 6 (a 7-member mesh at
#: degree 6 is a flood). The upper bound is wider than py-libp2p's 12 because early members collect the grafts of
#: later joiners (~D ln N) and pruning is what isolated members (module docstring); the total copies a message
#: costs (~2 per mesh link) do not grow with the bound.
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW, GOSSIP_DEGREE_HIGH = 4, 3, 32
#: After a PRUNE, how long a peer waits before grafting us again (py-libp2p: 60 s).
GOSSIP_PRUNE_BACKOFF_S = 5
#: Per peer per topic; status heartbeats and blackboard bursts stay far below, a flood does not.
GOSSIP_MAX_MESSAGES_PER_TOPIC_PER_S = 50.0
#: Our own routing-table refresh (py-libp2p's runs every 10 min): each is ~10-20 KAD RPCs that every peer answers.
DHT_REFRESH_S = 120.0
#: How often DHT clients (a finished `discover`) are dropped from our routing table (a local scan, no I/O).
DHT_CLIENT_PURGE_S = 5.0
#: A dial of an address we were handed on purpose (bootstrap, token, listing); others are bounded by
#: _libp2p_patches.LOOKUP_DIAL_TIMEOUT_S.
DIAL_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
#: How long addresses learned from a peer's status stay in the peerstore (statuses renew them every 20 s or less).
LEARNED_ADDR_TTL_S = 600
#: What one bootstrap relay gives each relayed connection: enough for joins, gossip and API calls to pass
#: while hole punching is tried, not for bulk model traffic.
RELAY_LIMITS = RelayLimits(duration=3600, data=256 * 1024 * 1024, max_circuit_conns=64, max_reservations=128)


def _interface_ipv4s() -> list[str]:
    """Where a wildcard listener can be reached: every interface's IPv4 address, loopback last (p2p/interfaces.py)."""
    return [*lan_ipv4s(), LOOPBACK_HOST]


@dataclass(frozen=True)
class OverlayConfig:
    listen_host: str = LOOPBACK_HOST
    #: 0 picks a free port.
    port: int = 0
    bootstrap: tuple[str, ...] = ()
    #: Bootstrap nodes and hosts serve DHT queries; API-only clients need not.
    dht_server: bool = True
    #: Act as a circuit-relay v2 hop (bootstrap nodes): peers behind NAT reserve a slot and are dialed through it.
    relay_hop: bool = False
    #: Announce this node on the LAN over mDNS and dial the meshp2p peers heard there (p2p/mdns.py): a mesh
    #: forms without bootstrap peers. Needs a non-loopback `listen_host`; off by default (it sends multicast).
    mdns: bool = False


class Overlay:
    """Runs the libp2p host, DHT and pubsub for one node; the rest of meshp2p talks to libp2p through it."""

    def __init__(self, identity: Identity, config: OverlayConfig, rejects: RejectCounter | None = None) -> None:
        tame_logging()
        tune_yamux()
        tune_noise()
        # tune_locks() is not applied: see its docstring.
        self.identity = identity
        self.config = config
        self.rejects = rejects or RejectCounter()
        key_pair = create_new_key_pair(identity.seed)
        self.host = new_host(
            key_pair=key_pair,
            sec_opt={NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            connection_config=ConnectionConfig(max_connections_per_peer=1),
        )
        swarm: Any = self.host.get_network()
        tune_dials(swarm)
        #: TCP keepalive on every connection; `on_peer_lost` hears of peers whose last connection closed.
        self.connections = ConnectionWatcher(swarm)
        swarm.register_notifee(self.connections)
        #: Records and providers (p2p/dht.py); `dht` is py-libp2p's KadDHT under it.
        self.records = DhtRecords(self.host, server=config.dht_server, rejects=self.rejects)
        self.dht = self.records.kad
        #: Private meshes' topics and who may hear them (p2p/members_gossip.py); `Membership` fills it.
        self.gossip_gate = TopicGate()
        self.gossipsub = MeshGossipSub(
            protocols=[PROTOCOL_ID_V11], degree=GOSSIP_DEGREE, degree_low=GOSSIP_DEGREE_LOW,
            degree_high=GOSSIP_DEGREE_HIGH, prune_back_off=GOSSIP_PRUNE_BACKOFF_S,
            heartbeat_interval=GOSSIP_HEARTBEAT_S, heartbeat_initial_delay=0.1,
            max_messages_per_topic_per_second=GOSSIP_MAX_MESSAGES_PER_TOPIC_PER_S,
            eclipse_protection_enabled=False, adaptive_gossip_enabled=False,
        )
        # Typed `PeerScorer | None` and checked before every use in py-libp2p: None turns scoring off (above).
        self.gossipsub.scorer = None
        self.gossipsub.gate = self.gossip_gate
        self.pubsub = MeshPubsub(self.host, self.gossipsub, self.gossip_gate)
        self.relay: CircuitV2Protocol | None = None
        if config.relay_hop:
            self.relay = CircuitV2Protocol(self.host, limits=RELAY_LIMITS, allow_hop=True)
            self.relay_transport = CircuitV2Transport(
                self.host, self.relay, RelayConfig(roles=RelayRole.HOP | RelayRole.STOP | RelayRole.CLIENT,
                                                   limits=RELAY_LIMITS))
        self.mdns: MdnsDiscovery | None = None
        if config.mdns:
            if is_loopback_host(config.listen_host):
                log.warning("mDNS is off: the overlay listens on %s only, which no LAN peer can reach "
                            "(listen on 0.0.0.0, `--listen-all`)", config.listen_host)
            else:
                self.mdns = MdnsDiscovery(self.host.get_network(), self.connect)

    @property
    def peer_id(self) -> ID:
        return self.host.get_id()

    def addrs(self) -> list[str]:
        """Full multiaddrs (with /p2p/ID) peers can dial: a wildcard listen address becomes each interface's."""
        own = f"/p2p/{self.peer_id}"
        out: list[str] = []
        for addr in (str(x) for x in self.host.get_addrs()):
            base = addr.split("/p2p/")[0]
            if base.startswith("/ip4/0.0.0.0/"):
                rest = base.removeprefix("/ip4/0.0.0.0")
                out += [f"/ip4/{ip}{rest}{own}" for ip in _interface_ipv4s()]
            else:
                out.append(base + own)
        return list(dict.fromkeys(out))

    def connected_peers(self) -> list[ID]:
        return list(self.host.get_connected_peers())

    def is_connected(self, peer_id: ID) -> bool:
        return bool(self.host.get_network().get_connections(peer_id))

    def serve(self, protocol: str, handler: Handler, *, timeout_s: float = math.inf,
              rejects_as: str | None = None) -> None:
        """Answer streams of `protocol` with `handler(stream)`, through the one error ladder (streams.serve_stream):
        within `timeout_s`, the stream closed when the handler returns and reset when it fails, a WireError counted
        as `<rejects_as>:<reason>`. py-libp2p runs it in its own task, not under our nursery (ARCHITECTURE.md)."""
        reject = None if rejects_as is None else functools.partial(self.rejects.add, rejects_as)

        async def answer(stream: Any) -> None:
            await serve_stream(stream, handler, protocol=protocol, timeout_s=timeout_s, reject=reject)

        self.host.set_stream_handler(TProtocol(protocol), answer)

    async def open_stream(self, peer_id: ID, protocol: str) -> Any:
        """A new stream to `peer_id` speaking `protocol` (dialing it first if need be; bound it by the caller's
        timeout). Raises when the peer cannot be reached or does not speak the protocol."""
        return await self.host.new_stream(peer_id, [TProtocol(protocol)])

    def learn_addrs(self, peer_id: ID, addrs: Sequence[str], ttl_s: int = LEARNED_ADDR_TTL_S) -> None:
        """Tell the peerstore where `peer_id` listens, from full multiaddrs a signed status carried (a peer we know
        only through gossip relays can then be dialed). Addresses of other peers, or unreadable ones, are skipped."""
        for addr in addrs:
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            except Exception:  # py-libp2p and multiaddr raise a handful of types for a bad address
                continue
            if info.peer_id == peer_id:
                self.host.get_peerstore().add_addrs(peer_id, info.addrs, ttl_s)

    def known_addrs(self, peer_id: ID) -> list[str]:
        """Full multiaddrs the peerstore holds for a peer (what identify and the DHT told us), for a redial."""
        try:
            addrs = self.host.get_peerstore().addrs(peer_id)
        except Exception:  # py-libp2p raises when it knows nothing of the peer
            return []
        own = f"/p2p/{peer_id}"
        return [str(a) if "/p2p/" in str(a) else f"{a}{own}" for a in addrs]

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listen = multiaddr.Multiaddr(f"/ip4/{self.config.listen_host}/tcp/{self.config.port}")
        try:
            await self._run(listen, task_status)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await self._stop_system_tasks()

    async def _close_connections(self) -> None:
        """Close every connection, as an exiting process would. py-libp2p does not when its host is cancelled:
        the connections stay up with nobody serving them, and a stream a peer opens on one stalls for the
        10 s protocol-negotiation timeout. Once `host.run` has exited they are no longer tracked, so this runs
        inside it, shielded from the cancellation that stops us. The listeners close first: a peer that sees
        its connection close redials (app/mesh_liveness.py), and must find the port shut, not a host half torn down."""
        swarm: Any = self.host.get_network()
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
            await self._close_listeners()
            async with trio.open_nursery() as nursery:  # concurrently: swarm.close() closes one at a time
                for conns in list(swarm.connections.values()):
                    for conn in list(conns):
                        nursery.start_soon(self._close_quietly, conn)
            await self._close_quietly(swarm)
        leaked = self.connections.close_sockets()
        if leaked:
            log.debug("closed %d socket(s) py-libp2p had lost track of", leaked)

    @staticmethod
    async def _close_quietly(closable: Any) -> None:
        try:
            await closable.close()
        except Exception as exc:  # a connection the peer already dropped; nothing to do
            log.debug("closing %r failed: %s", closable, exc)

    async def _stop_system_tasks(self) -> None:
        """py-libp2p runs its TCP listener and identify exchanges as trio *system* tasks, outside our nurseries:
        cancelling the host leaves the port listening. Close them ourselves so a stopped overlay frees its port."""
        for scope in list(getattr(self.host, "_identify_tasks", ())):
            scope.cancel()
        await self._close_listeners()

    async def _close_listeners(self) -> None:
        for listener in list(self.host.get_network().listeners.values()):
            with contextlib.suppress(Exception):
                await listener.close()

    async def _run(self, listen: multiaddr.Multiaddr, task_status: TaskStatus[None]) -> None:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.host.run([listen]))
            await stack.enter_async_context(background_trio_service(self.dht))
            await stack.enter_async_context(background_trio_service(self.pubsub))
            await stack.enter_async_context(background_trio_service(self.gossipsub))
            if self.relay is not None:
                await stack.enter_async_context(background_trio_service(self.relay))
            # Registered last, so it runs first on the way out, while the host still tracks its connections.
            stack.push_async_callback(self._close_connections)
            await self.pubsub.wait_until_ready()
            if self.mdns is not None:
                nursery = await stack.enter_async_context(trio.open_nursery())
                await nursery.start(self.mdns.run, advertised_addrs(self.config.listen_host, self._bound_port()))
            # A DHT client serves nobody: its lookups start from the bootstrap peers and walk the network, so
            # the ~1 s routing-table refresh would only delay a one-shot `discover`.
            reached = await self.connect_many(self.config.bootstrap, refresh=self.config.dht_server)
            if self.config.bootstrap and not reached:
                log.warning("none of the %d bootstrap peers answered; serving locally until one does",
                            len(self.config.bootstrap))
            task_status.started()
            refreshed_at = trio.current_time()
            while True:
                await trio.sleep(DHT_CLIENT_PURGE_S)
                self.purge_dht_clients()
                if trio.current_time() - refreshed_at < DHT_REFRESH_S:
                    continue
                refreshed_at = trio.current_time()
                if not self.connected_peers():
                    await self.connect_many(self.config.bootstrap)
                await self.records.refresh_routing_table()

    def _bound_port(self) -> int:
        """The TCP port the host listens on (the configured one, or the one the OS picked for port 0)."""
        for addr in self.host.get_addrs():
            with contextlib.suppress(Exception):
                return int(addr.value_for_protocol("tcp"))
        return self.config.port

    def purge_dht_clients(self) -> list[ID]:
        """Drop DHT clients from the routing table; returns them (DhtRecords.purge_clients)."""
        return self.records.purge_clients()

    async def connect(self, addr: str, *, timeout_s: float = DIAL_TIMEOUT_S) -> PeerInfo | None:
        """Dial a full multiaddr and add the peer to the DHT routing table; None if it did not answer."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except Exception as exc:  # multiaddr raises a zoo of types on bad input
            log.warning("ignoring malformed peer address %r: %s", addr, exc)
            return None
        if info.peer_id == self.peer_id:
            return None
        # py-libp2p refuses to dial a peer for 60 s after one failed dial (its negative cache), say a lookup's
        # dial that lost a race; an address we were just handed (listing, token, bootstrap) deserves a try.
        swarm: Any = self.host.get_network()
        swarm.unblock_peer(info.peer_id)
        try:
            with dial_timeout(DIAL_TIMEOUT_S), trio.fail_after(timeout_s):
                await self.host.connect(info)
                # An address handed to us on purpose is taken for a DHT server until identify says otherwise
                # (purge_dht_clients); only peers that reach us are held back until it has spoken.
                await self.dht.routing_table.add_peer(info.peer_id)
        except Exception as exc:
            log.debug("dial %s failed: %s", addr, exc)
            return None
        return info

    async def connect_many(self, addrs: Sequence[str], *, refresh: bool = True,
                           timeout_s: float = DIAL_TIMEOUT_S) -> list[PeerInfo]:
        """Dial peers concurrently, then (with `refresh`) refresh the routing table once; returns those reached."""
        reached: list[PeerInfo] = []

        async def one(addr: str) -> None:
            info = await self.connect(addr, timeout_s=timeout_s)
            if info is not None:
                reached.append(info)

        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(one, addr)
        if reached and refresh:
            await self.records.refresh_routing_table()
        return reached

    # -- DHT (p2p/dht.py) ------------------------------------------------------------------------

    async def put_record(self, key: str, value: bytes) -> bool:
        """Store a record in the DHT; False when a better one is already stored (or the put timed out)."""
        return await self.records.put_record(key, value)

    async def get_record(self, key: str) -> bytes | None:
        """The newest valid copy of a record the network (or a fresh local copy) holds; None when none."""
        return await self.records.get_record(key)

    async def provide(self, content_key: bytes) -> None:
        await self.records.provide(content_key)

    async def find_providers(self, content_key: bytes) -> list[PeerInfo]:
        """Providers of a key, deduplicated (a walk that stops at the first holders: p2p/providers.py)."""
        return await self.records.find_providers(content_key)

    # -- gossip -------------------------------------------------------------------------------------

    async def subscribe(self, topic: str, validator: Callable[[ID, Any], bool] | None = None) -> Any:
        """Subscribe with a validator run on every message before it is relayed. Keep validators synchronous:
        py-libp2p marks a message seen only after validating it, so an await there lets duplicates through."""
        if validator is not None:
            self.pubsub.set_topic_validator(topic, validator, False)
        return await self.pubsub.subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        await self.pubsub.publish(topic, data)
