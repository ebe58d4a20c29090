"""The libp2p side of a node: host, Kademlia DHT and gossipsub, with meshp2p's safe defaults.

(Long, ~580 lines: the DHT record handling and the py-libp2p patches are still here; they move to p2p/dht.py
and p2p/_libp2p_patches.py in the next step of issue 12.)

py-libp2p's defaults are unsafe or slow for us (see ../shared/notes/py-libp2p.md); this module is the one
place that overrides them:
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
  scorer the mesh stays within GOSSIP_DEGREE_LOW..GOSSIP_DEGREE_HIGH and changes only when members come and go;
- the DHT validates every `/meshp2p/...` value strictly (signed records, see protocols/dht-records.md);
- libp2p's loggers propagate again, silenced unless `-v` (py-libp2p logs routine network weather at ERROR);
- yamux sends DATA frames of up to `YAMUX_MAX_FRAME_BYTES` (py-libp2p: 64 KiB), and window updates per half
  window rather than per read, see below.

Yamux frame size. Bulk throughput over Noise + yamux is bound by per-frame work in Python (trio locks and
wake-ups, a window update per read, one or two Noise messages), not by crypto. py-libp2p caps a DATA frame at
64 KiB *including* its 12-byte header, so a 64 KiB tunnel BODY frame became two yamux frames and three Noise
messages, and a 256 KiB one five frames. With a cap above the tunnel's 256 KiB BODY frame, every BODY frame is one
yamux frame (tools/bench/tunnel_bench.py: CPU per GiB about halved on both ends). This is a sender-side choice only:
yamux never sends more than the window the receiver granted, and receivers size frames by that window (py-libp2p
accepts up to 16 MiB, jvm-libp2p 1 MiB), so peers need not agree on it. The price is head-of-line blocking: one frame
holds the connection's write lock for up to `YAMUX_MAX_FRAME_BYTES` (1-2 ms at the tunnel's loopback rate) before
another stream's frame can go.

Window updates. py-libp2p sends a WINDOW_UPDATE after every read that returned data (PY_YAMUX_RELEASE_ON_READ,
default on): one more frame, Noise message and syscall per gossip message received, and ~4 per MiB of bulk data.
Off, it follows go-yamux: an update when half the window is consumed. Measured: an idle member of a 7-member mesh
3.4 % -> 2.7 % CPU (tools/bench/idle_node.py --others 6), bulk tunnel 4.1 -> 0.4 updates per MiB and 289 -> 446
MB/s (tools/bench/tunnel_bench.py --skip-mesh, shared 2-core machine). It is the receiver's choice alone: the
sender only waits for window, so peers need not agree.

The initial window (`DEFAULT_WINDOW_SIZE`, 256 KiB) is left alone. Raising it would change what each side assumes
the other granted before any window update, so it is only safe when every peer raises it too, and it lets every
stream buffer more unread data; py-libp2p already grows a busy stream's window to 16 MiB, and the benchmark
measured no gain from a larger start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.exceptions import SwarmException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.records.utils import InvalidRecordType
from libp2p.records.validator import Validator
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.p2p import providers
from meshp2p.p2p.interfaces import is_loopback_host, lan_ipv4s
from meshp2p.p2p.liveness import ConnectionWatcher
from meshp2p.p2p.mdns import MdnsDiscovery, advertised_addrs
from meshp2p.p2p.members_gossip import MeshGossipSub, MeshPubsub, TopicGate
from meshp2p.wire.errors import WireError
from meshp2p.wire.identity import Identity
from meshp2p.wire.records import decode_record, select_record

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
DIAL_TIMEOUT_S = 10.0
#: Every other dial: one that a DHT lookup (ours or py-libp2p's) or a stream to a peer we are not connected to
#: makes. py-libp2p bounds none of them (ConnectionConfig.dial_timeout is read only by its auto-connector), so a
#: departed peer in a routing table could stall a lookup for the OS's TCP connect timeout (~2 min on Linux). 5 s
#: covers a TCP connect whose first two SYNs were lost (retransmits at 1 s and 3 s) plus the Noise and yamux
#: upgrade at internet round trips; loopback and LAN dials take milliseconds.
LOOKUP_DIAL_TIMEOUT_S = 5.0
#: The bound `_bound_dials` applies; `connect` (an address we were handed on purpose) raises it to DIAL_TIMEOUT_S.
_dial_timeout_s: ContextVar[float] = ContextVar("meshp2p_dial_timeout_s", default=LOOKUP_DIAL_TIMEOUT_S)
CLOSE_TIMEOUT_S = 5.0
#: How long addresses learned from a peer's status stay in the peerstore (statuses renew them every 20 s or less).
LEARNED_ADDR_TTL_S = 600
DHT_OP_TIMEOUT_S = 15.0
#: One retry of a failed dial, soon. py-libp2p's default (3 retries, 0.1/0.2/0.4 s backoff) spends ~0.7 s on
#: every departed peer a lookup is handed (a finished `discover` client stays in servers' routing tables).
DIAL_RETRIES = 1
DIAL_RETRY_DELAY_S = 0.05
#: A DHT value this node holds is answered from its own store only while younger than this (signed issue
#: time); an older one may have been replaced in the network, so the network is asked (see get_record).
LOCAL_RECORD_FRESH_S = 30.0
#: Valid answers a DHT read waits for before it stops asking (the newest of them wins). py-libp2p's default (0)
#: walks every candidate peer (~20 RPCs); 2 rather than 1 so one peer holding an older version cannot win alone.
GET_QUORUM = 2
DHT_NAMESPACE = "meshp2p"
#: What one bootstrap relay gives each relayed connection: enough for joins, gossip and API calls to pass
#: while hole punching is tried, not for bulk model traffic.
RELAY_LIMITS = RelayLimits(duration=3600, data=256 * 1024 * 1024, max_circuit_conns=64, max_reservations=128)
#: Largest yamux DATA frame we send, header included: above the tunnel's 256 KiB BODY frame plus headers, so one
#: write of a BODY frame is one yamux frame (see the module docstring).
YAMUX_MAX_FRAME_BYTES = 512 * 1024
#: "0": a WINDOW_UPDATE when half the receive window is consumed (go-yamux), not after every read (module docstring).
YAMUX_RELEASE_ON_READ_ENV = "PY_YAMUX_RELEASE_ON_READ"


def _tame_libp2p_logging() -> None:
    """`import libp2p` takes over its logger (and sets levels on its children); give it back to ours."""
    root = logging.getLogger("libp2p")
    root.propagate = True
    root.handlers.clear()
    # py-libp2p logs routine network weather (a peer without a protocol, a refused dial) at ERROR; what matters
    # to an operator, meshp2p logs itself. `meshp2p -v` turns libp2p's own logging back on.
    root.setLevel(logging.CRITICAL if logging.getLogger().level > logging.DEBUG else logging.DEBUG)
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("libp2p."):
            logging.getLogger(name).setLevel(logging.NOTSET)


def _tune_yamux() -> None:
    """Send larger yamux frames, and window updates only per half window (module docstring).

    py-libp2p reads both on every write/read: the frame cap from a module constant, the window-update rule from
    the environment (PY_YAMUX_RELEASE_ON_READ, its own tuning knob; an operator's setting is left alone).
    """
    yamux_module.MAX_MESSAGE_SIZE = max(yamux_module.MAX_MESSAGE_SIZE, YAMUX_MAX_FRAME_BYTES)
    os.environ.setdefault(YAMUX_RELEASE_ON_READ_ENV, "0")


def _bound_dials(swarm: Any) -> None:
    """Put a deadline on every dial of `swarm`: the one place all of them pass (host.connect, new_stream)."""
    dial_peer = swarm.dial_peer

    async def bounded_dial_peer(peer_id: ID) -> Any:
        timeout_s = _dial_timeout_s.get()
        try:
            with trio.fail_after(timeout_s):
                return await dial_peer(peer_id)
        except trio.TooSlowError:
            # A SwarmException, as py-libp2p's own dial failures are, so its callers handle it as one.
            raise SwarmException(f"dial to {peer_id} timed out after {timeout_s} s") from None

    swarm.dial_peer = bounded_dial_peer


def _interface_ipv4s() -> list[str]:
    """Where a wildcard listener can be reached: every interface's IPv4 address, loopback last (p2p/interfaces.py)."""
    return [*lan_ipv4s(), LOOPBACK_HOST]


@dataclass
class RejectCounter:
    """How many hostile or broken inputs were refused, by source and reason (`dht:expired`, ...)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, source: str, reason: str) -> None:
        self.counts[f"{source}:{reason}"] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)


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
        _tame_libp2p_logging()
        _tune_yamux()
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
        # new_host has no retry_config parameter; the swarm reads this attribute on every dial.
        swarm: Any = self.host.get_network()
        swarm.retry_config = RetryConfig(max_retries=DIAL_RETRIES, initial_delay=DIAL_RETRY_DELAY_S)
        #: TCP keepalive on every connection; `on_peer_lost` hears of peers whose last connection closed.
        self.connections = ConnectionWatcher(swarm)
        swarm.register_notifee(self.connections)
        _bound_dials(swarm)
        self.dht = KadDHT(self.host, DHTMode.SERVER if config.dht_server else DHTMode.CLIENT, strict_validation=True)
        self.dht.register_validator(DHT_NAMESPACE, RecordValidator(self.rejects))
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

    def serve(self, protocol: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Answer streams of `protocol` with `handler(stream)` (run in py-libp2p's own task: see ARCHITECTURE.md)."""
        self.host.set_stream_handler(TProtocol(protocol), handler)

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
        its connection close redials (mesh_service), and must find the port shut, not a host half torn down."""
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
                with trio.move_on_after(DHT_OP_TIMEOUT_S):
                    await self.dht.refresh_routing_table()

    def _bound_port(self) -> int:
        """The TCP port the host listens on (the configured one, or the one the OS picked for port 0)."""
        for addr in self.host.get_addrs():
            with contextlib.suppress(Exception):
                return int(addr.value_for_protocol("tcp"))
        return self.config.port

    def purge_dht_clients(self) -> list[ID]:
        """Drop routing-table peers that identify says serve no DHT; returns them.

        py-libp2p adds every peer that opens a KAD stream to us, DHT clients included (its inbound path skips
        the server-mode check), so each finished `discover` stayed in the servers' tables, and later lookups
        were handed it and dialed it in vain until a lookup happened to fail on it.
        """
        table, store = self.dht.routing_table, self.host.get_peerstore()
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
        bound = _dial_timeout_s.set(DIAL_TIMEOUT_S)
        try:
            with trio.fail_after(timeout_s):
                await self.host.connect(info)
                await self.dht.add_peer(info.peer_id)
        except Exception as exc:
            log.debug("dial %s failed: %s", addr, exc)
            return None
        finally:
            _dial_timeout_s.reset(bound)
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
            with trio.move_on_after(DHT_OP_TIMEOUT_S):
                await self.dht.refresh_routing_table()
        return reached

    # -- DHT ----------------------------------------------------------------------------------------

    async def put_record(self, key: str, value: bytes) -> bool:
        """Store a record in the DHT; False when a better one is already stored (or the put timed out).

        py-libp2p raises ValueError when the local store holds a value `select` prefers (say, another member's
        listing signed in the same second); that is not an error for us: the better record stands.
        """
        stored = False
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            try:
                await self.dht.put_value(key, value)
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
        store = self.dht.value_store
        local = store.get(key_bytes)
        kept: Any = None
        if local is not None:
            issued = self._issued_at(key, local.value)
            if issued is not None and time.time() - issued < LOCAL_RECORD_FRESH_S:
                return bytes(local.value)
            store.remove(key_bytes)
            kept = local if issued is not None else None
        value: bytes | None = None
        try:
            with trio.move_on_after(DHT_OP_TIMEOUT_S):
                value = await self.dht.get_value(key, quorum=GET_QUORUM)
        finally:
            if kept is not None and (value is None or self._prefer_first(key, kept.value, value)):
                store.put_record(key_bytes, kept)
                value = bytes(kept.value)
        return value

    @staticmethod
    def _prefer_first(key: str, first: bytes, second: bytes) -> bool:
        try:
            return select_record(key, [first, second], now=time.time()) == 0
        except WireError:  # neither is valid any more
            return False

    @staticmethod
    def _issued_at(key: str, value: bytes) -> int | None:
        """A record's signed issue time, or None when it is no longer valid (expired, malformed)."""
        try:
            return decode_record(key, value, now=time.time()).issued_at
        except WireError:
            return None

    async def provide(self, content_key: bytes) -> None:
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            await self.dht.provide(content_key.hex())

    async def find_providers(self, content_key: bytes) -> list[PeerInfo]:
        """Providers of a key, deduplicated: a walk that stops at the first holders (p2p/providers.py says
        why it is not py-libp2p's `find_providers`)."""
        found: list[PeerInfo] = []
        with trio.move_on_after(DHT_OP_TIMEOUT_S):
            found = await providers.find_providers(
                self.host, self.dht.routing_table, self.dht.provider_store.get_providers(content_key), content_key)
        return found

    # -- gossip -------------------------------------------------------------------------------------

    async def subscribe(self, topic: str, validator: Callable[[ID, Any], bool] | None = None) -> Any:
        """Subscribe with a validator run on every message before it is relayed. Keep validators synchronous:
        py-libp2p marks a message seen only after validating it, so an await there lets duplicates through."""
        if validator is not None:
            self.pubsub.set_topic_validator(topic, validator, False)
        return await self.pubsub.subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        await self.pubsub.publish(topic, data)
