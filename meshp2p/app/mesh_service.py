"""A node's life in a mesh: find or create it, join it, gossip status, keep its DHT records fresh.

App-layer wiring: it joins the overlay (p2p/), the wire formats (wire/) and the pure mesh view (mesh/).
It is long (~590 lines) because it still wires five concerns in one class (join, gossip receive and status push,
liveness and redials, RTT, DHT records); their rules and timings already live in mesh/ (view, cadence, liveness,
records) and p2p/gossip.py, and splitting the wiring per concern is the next step of issue 12.

- Named mesh (`--mesh-name`): the id is derived from the name, the secret is empty. The node looks the listing
  up in the DHT and joins its addresses; if there is none it is the first and creates it.
- Private mesh: the id is derived from a 32-byte secret kept in `$MESHP2P_HOME/mesh.secret`, so the invite
  token stays valid across restarts. `--join TOKEN` joins someone else's. Gossip is encrypted with a key
  derived from the secret; the listing (only with `--publish`) never carries the secret.
- The serving node with the lowest PeerID in the view publishes the mesh listing (one writer per key; a
  joiner whose view does not hold the members yet never does: only the creator, or a node that could join none of
  the listed addresses, writes from a view of one); every node
  publishes its own node record and provider records (`meshes`, `region:R`, `model:M`) so `discover`
  needs only a few lookups. Records live RECORD_TTL_S and are republished well before (mesh/records.py).
- Every HEAL_SPLIT_S the leader looks the listing up again: two nodes that created the same named mesh at the
  same moment find each other and merge. One lookup per part of a split mesh is enough (the other members
  follow through the connections they then keep to every member), so the others do not spend DHT walks on it.
- Idle cost: each gossip message costs every member CPU, so status goes out when it changes, repeated only
  while the node is young, plus a rare keepalive; demand only while there is some (mesh/cadence.py has the
  rules and their timings). A member that appears gets our status straight, not through gossip
  (p2p/status_push.py says why).
- Departures are seen on connections, not in gossip silence: every member keeps a connection to every member
  of its view; when the last one to a member closes and a redial within REDIAL_TIMEOUT_S fails, the member
  leaves the view at once (mesh/view.py has the whole rule, p2p/liveness.py the kernel's side).

Over 400 lines, knowingly: it still carries eleven concerns (join, gossip checks, cadences, RTT, liveness, DHT
records...). Issue 12 splits it into p2p/gossip.py, the timed machines in mesh/ and a thin app/mesh_service.py;
doing that here, beside the healing work, would have mixed a rewrite into a fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from meshp2p import __version__
from meshp2p.mesh.cadence import DemandCadence, StatusCadence
from meshp2p.mesh.demand import DemandMap
from meshp2p.mesh.liveness import RedialSchedule
from meshp2p.mesh.records import RECORD_TTL_S, RecordSchedule
from meshp2p.mesh.view import EXPIRE_CHECK_S, PEER_TIMEOUT_S, MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.gossip import GossipTopic
from meshp2p.p2p.join_protocol import Membership
from meshp2p.p2p.listing_protocol import ListingServer
from meshp2p.p2p.overlay import DIAL_TIMEOUT_S, Overlay
from meshp2p.p2p.rtt import RttProbe
from meshp2p.p2p.status_push import StatusPush
from meshp2p.wire.demand import DEMAND_TYPE, demand_from_body, demand_to_body
from meshp2p.wire.errors import WireError
from meshp2p.wire.gossip import GossipMessage, ReplayGuard, SequenceCounter, topic_name
from meshp2p.wire.records import (
    KIND_MESH,
    KIND_NODE,
    MESHES_TOPIC,
    MeshListing,
    NodeRecord,
    decode_record,
    encode_record,
    mesh_key,
    model_topic,
    provider_key,
    region_topic,
)
from meshp2p.wire.status import Role, StatusBody, status_from_body, status_to_body
from meshp2p.wire.token import encode_token

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

RTT_INTERVAL_S = 30.0
#: How soon a peer without a measured RTT is probed again (the planner needs one to use it as a worker).
RTT_RETRY_S = 2.0
#: After a member's last connection closed: how long a redial may take before the member counts as gone.
#: A closed process refuses at once; a vanished machine takes the whole time.
REDIAL_TIMEOUT_S = 2.0
#: Addresses tried at once in a redial (a status lists up to 16).
MAX_REDIAL_ADDRS = 8
#: Connection losses waiting to be looked at; more at once (a whole LAN gone) fall back to status expiry.
_LOST_QUEUE = 256
#: Newcomers waiting for our status; more at once hear it at the next keepalive.
_NEWCOMER_QUEUE = 256


@dataclass(frozen=True)
class _Lost:
    """A member that left the view on a lost connection: when (trio clock), and what it last said."""

    at: float
    status: StatusBody


def _status_key(status: StatusBody) -> StatusBody:
    """What of a status is worth an early send: all but the figures that drift between keepalives."""
    return replace(status, rtt_ms={}, load=0.0)


def _parse_status(msg: GossipMessage) -> StatusBody:
    return status_from_body(msg.body)


def _parse_demand(msg: GossipMessage) -> dict[str, float]:
    return demand_from_body(msg.body)


@dataclass(frozen=True)
class MeshSettings:
    mesh_id: bytes
    #: b"" for a named (public) mesh.
    secret: bytes
    name: str | None = None
    #: Put the listing in the DHT (named meshes always are).
    publish: bool = False
    region: str | None = None
    max_clients: int | None = None
    role: Role = Role.HOST
    #: Where to join: from an invite token, or empty to look the mesh up (named) / create it.
    join_addrs: tuple[str, ...] = ()

    @property
    def private(self) -> bool:
        return self.secret != b""

    @property
    def listed(self) -> bool:
        return (self.name is not None and not self.private) or self.publish


class MeshService:
    def __init__(self, overlay: Overlay, settings: MeshSettings, local_status: Callable[[], StatusBody],
                 local_demand: Callable[[], dict[str, float]] = dict, clock: Callable[[], float] = time.time) -> None:
        self.overlay = overlay
        self.settings = settings
        self.local_status = local_status
        self.local_demand = local_demand
        self.clock = clock
        self.membership = Membership(overlay, settings.mesh_id, settings.secret)
        #: Answers `discover` directly with our records; installed only when the mesh is listed.
        self.listing_server = ListingServer(overlay, settings.mesh_id, clock)
        self.rtt = RttProbe(overlay, is_member=self.is_member)
        #: Our measured round trip to each peer of the view, in ms (gossiped in our status).
        self.rtt_ms: dict[str, float] = {}
        self.view = MeshView(settings.mesh_id, str(overlay.peer_id))
        self.status_topic = topic_name(settings.mesh_id, "status", settings.secret or None)
        self.demand_topic = topic_name(settings.mesh_id, "demand", settings.secret or None)
        #: Requests per minute per model, merged from every member's reports.
        self.demand = DemandMap()
        self._seq = SequenceCounter()
        secret = settings.secret or None

        def gossip_reject(reason: str) -> None:
            overlay.rejects.add("gossip", reason)

        self.status_gossip = GossipTopic(overlay, mesh_id=settings.mesh_id, secret=secret, topic=self.status_topic,
                                         parse=_parse_status, reject=gossip_reject, sequence=self._seq, clock=clock)
        self.demand_gossip = GossipTopic(overlay, mesh_id=settings.mesh_id, secret=secret, topic=self.demand_topic,
                                         parse=_parse_demand, reject=gossip_reject, sequence=self._seq, clock=clock)
        self._published_listing: MeshListing | None = None
        self._listing_published_at = 0.0
        self._records = RecordSchedule(clock(), listed=settings.listed, named=settings.name is not None)
        self.created = False
        #: Write the listing from a view of one: we created the mesh, or could join none of its listed addresses.
        self._list_alone = False
        self._announce = trio.Event()
        #: Members that appeared (or came back) and get our status straight away (p2p/status_push.py).
        self._newcomers_send, self._newcomers_receive = trio.open_memory_channel[str](_NEWCOMER_QUEUE)
        #: Members back in the view on a new connection whose next status has not come yet (`_apply_status`).
        self._returned: set[str] = set()
        self.status_push = StatusPush(overlay, self._apply_pushed_status)
        #: Highest `seq` accepted per sender, per topic: shared by gossip and direct status.
        self._replays = {self.status_topic: ReplayGuard(), self.demand_topic: ReplayGuard()}
        self._lost_send, self._lost_receive = trio.open_memory_channel[PeerID](_LOST_QUEUE)
        #: Members that left because their connection was lost, with when (trio clock) and their last status.
        #: Kept PEER_TIMEOUT_S: one we connect to again (it dials us, or our retries reach it) is back in the
        #: view at once; a late status of theirs brings them back only if we can connect to them again.
        self._lost: dict[str, _Lost] = {}

    # -- what the rest of the node reads ----------------------------------------------------------------

    @property
    def sequence(self) -> SequenceCounter:
        """This node's gossip `seq`, shared by every topic of the mesh (the blackboard's too)."""
        return self._seq

    def invite_token(self, *, ttl_s: int | None = None) -> str:
        return encode_token(self.overlay.identity, self.settings.mesh_id, self.settings.secret,
                            self.overlay.addrs()[:8], now=self.clock(), name=self.settings.name, ttl_s=ttl_s)

    def snapshot(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.view.snapshot(self.clock()),
            "name": s.name,
            "private": s.private,
            "listed": s.listed,
            "created": self.created,
            "region": s.region,
            "max_clients": s.max_clients,
            "peer_id": str(self.overlay.peer_id),
            "addrs": self.overlay.addrs(),
            "members": sorted(str(p) for p in self.membership.members),
            "rejected": self.overlay.rejects.as_dict(),
            "demand": self.demand.total(self.clock()),
            "wanted": self.wanted_models(),
        }

    def is_member(self, peer: PeerID) -> bool:
        """A joined peer, or one whose signed status we read on our mesh topic (on a private mesh that status was
        encrypted with the mesh key: reading it proves the sender has the secret). Every stream protocol but join
        and the listing serves only these."""
        return self.membership.is_member(peer) or peer.to_base58() in self.view.peers

    def wanted_models(self) -> list[str]:
        """Models asked for in the mesh that nobody serves, hottest first."""
        return self.demand.wanted(self.clock(), set(self.view.served_models()))

    def listing(self) -> MeshListing:
        s, v = self.settings, self.view
        wanted = tuple(self.wanted_models())
        return MeshListing(
            name=s.name, region=v.region() or s.region, public=not s.private, nodes=v.node_count(),
            clients=v.client_count(),
            max_clients=s.max_clients, served=v.served_models()[:64], wanted=wanted[:64],
            capacity_mb=v.capacity_mb(), addrs=tuple(self._join_addrs()), version=__version__,
        )

    # -- running ----------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.membership.install()
        self.rtt.install()
        self.status_push.install()
        if self.settings.listed:
            self.listing_server.install()
        await self.status_gossip.subscribe()
        await self.demand_gossip.subscribe()
        self.view.update(self.view.self_id, self.local_status(), self.clock())
        self.overlay.connections.on_peer_lost.append(self._peer_lost)
        self.overlay.connections.on_peer_connected.append(self._peer_connected)
        try:
            await self._find_and_join()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive, self.status_gossip, self._apply_status)
                nursery.start_soon(self._receive, self.demand_gossip, self._apply_demand)
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._push_status_to_newcomers)
                nursery.start_soon(self._gossip_demand)
                nursery.start_soon(self._measure_rtts)
                nursery.start_soon(self._expire)
                nursery.start_soon(self._watch_connections)
                nursery.start_soon(self._keep_connected)
                nursery.start_soon(self.membership.run_renewals)
                nursery.start_soon(self._keep_records)
                task_status.started()
        finally:
            self.overlay.connections.on_peer_lost.remove(self._peer_lost)
            self.overlay.connections.on_peer_connected.remove(self._peer_connected)
            self.membership.uninstall()

    async def _find_and_join(self) -> None:
        addrs = list(self.settings.join_addrs)
        if not addrs and self.settings.name is not None:
            listing = await self.lookup_listing()
            if listing is not None:
                addrs = list(listing.addrs)
        if not addrs:
            self.created = self._list_alone = True
            log.info("no existing mesh found: this node starts it")
            return
        joined = await self.join_addrs(addrs)
        if not joined:
            # Nobody answered (a mesh that died before its listing expired): list ourselves even alone, so later
            # nodes find us rather than the dead addresses; _heal_split merges if the others come back.
            self._list_alone = True
            log.warning("could not join any of the mesh's %d addresses; serving on our own until one answers",
                        len(addrs))

    async def join_addrs(self, addrs: list[str]) -> int:
        """Connect to and join every reachable address; returns how many peers accepted us."""
        reached = await self.overlay.connect_many([a for a in addrs if str(self.overlay.peer_id) not in a])
        accepted = 0
        for info in reached:
            if info.peer_id in self.membership.members or await self.membership.join(info.peer_id):
                accepted += 1
        return accepted

    async def lookup_listing(self) -> MeshListing | None:
        key = mesh_key(self.settings.mesh_id)
        value = await self.overlay.get_record(key)
        if value is None:
            return None
        try:
            body = decode_record(key, value, now=self.clock()).body
        except WireError as exc:
            self.overlay.rejects.add("dht", exc.reason)
            return None
        self.listing_server.offer_listing(value)
        return body if isinstance(body, MeshListing) else None

    # -- gossip -----------------------------------------------------------------------------------------

    async def _receive(self, topic: GossipTopic[T], apply: Callable[[str, T], None]) -> None:
        """Feed verified messages of one topic to `apply(sender, parsed body)`, once each, never our own."""
        replays = self._replays[topic.topic]
        while True:
            entry = await topic.receive()
            sender = entry.message.sender
            if sender == self.view.self_id:
                continue
            try:
                replays.accept(sender, entry.message.seq)
            except WireError as exc:
                topic.reject(exc.reason)
                continue
            apply(sender, entry.value)

    def _apply_status(self, sender: str, status: StatusBody) -> None:
        if self.view.update(sender, status, self.clock()):
            log.info("peer %s joined the mesh view", sender)
            self._queue_status_push(sender)
        elif sender in self._returned:
            # Its first status since it came back: if it restarted, its service runs now (the push made when its
            # connection opened may have found no handler yet, and our next keepalive is up to 20 s away).
            self._returned.discard(sender)
            self._queue_status_push(sender)

    def _apply_pushed_status(self, remote: PeerID, data: bytes) -> None:
        """A status sent straight to us (p2p/status_push.py): checked like gossip, and signed by the sender."""
        try:
            entry = self.status_gossip.check(data, remote.to_bytes())
        except WireError as exc:
            self.overlay.rejects.add("status_push", exc.reason)
            return
        sender = entry.message.sender
        try:
            self._replays[self.status_topic].accept(sender, entry.message.seq)
        except WireError:
            # Gossip brought a newer status first: nothing hostile, nothing to do.
            log.debug("a pushed status of %s was older than one we had", sender)
            return
        self._apply_status(sender, entry.value)

    def _queue_status_push(self, peer_id: str) -> None:
        try:
            self._newcomers_send.send_nowait(peer_id)
        except trio.WouldBlock:
            log.debug("too many newcomers at once; %s hears our status at the next keepalive", peer_id)

    async def _push_status_to_newcomers(self) -> None:
        """Our current status, signed now, straight to each member that appeared in our view."""
        async with trio.open_nursery() as nursery:
            async for peer_id in self._newcomers_receive:
                status = self.local_status()
                data = self.status_gossip.sign("status", status_to_body(status))
                nursery.start_soon(self.status_push.send, PeerID.from_base58(peer_id), data)

    def _apply_demand(self, sender: str, rates: dict[str, float]) -> None:
        self.demand.apply(sender, rates, self.clock())

    def announce_now(self) -> None:
        """Send our status at once instead of at the next heartbeat (we just changed what we serve)."""
        self._announce.set()

    async def _heartbeat(self) -> None:
        """Our status, as mesh/cadence.StatusCadence says: at start, on a change or `announce_now`, repeated while
        young, and the keepalive. (A member that appears gets it straight, from `_push_status_to_newcomers`.)"""
        cadence = StatusCadence(trio.current_time())
        while True:
            status = self.local_status()
            self.view.update(self.view.self_id, status, self.clock())
            cadence.observe(_status_key(status), trio.current_time())
            if cadence.due(trio.current_time()):
                await self.status_gossip.publish("status", status_to_body(status))
                cadence.sent(_status_key(status), trio.current_time())
            with trio.move_on_at(cadence.next_at(trio.current_time())):
                await self._announce.wait()
            if self._announce.is_set():
                self._announce = trio.Event()
                cadence.announce(trio.current_time())

    async def _gossip_demand(self) -> None:
        """Our request rates, as mesh/cadence.DemandCadence says."""
        cadence = DemandCadence(trio.current_time())
        while True:
            rates = self.local_demand()
            self.demand.apply(self.view.self_id, rates, self.clock())
            if cadence.report(bool(rates), trio.current_time()):
                await self.demand_gossip.publish(DEMAND_TYPE, demand_to_body(rates))
            await trio.sleep_until(cadence.next_at())

    async def _measure_rtts(self) -> None:
        """RTT to every peer of the view: new peers at once, known ones every RTT_INTERVAL_S, unmeasured ones (a
        probe failed, or the peer came back on a new connection) every RTT_RETRY_S, concurrently. The planner takes
        no unmeasured worker, so a worker restarted waited up to RTT_INTERVAL_S to be used again."""
        measured_at: dict[str, float] = {}

        async def one(peer_id: str) -> None:
            rtt = await self.rtt.measure(PeerID.from_base58(peer_id))
            measured_at[peer_id] = trio.current_time()
            if rtt is None:
                self.rtt_ms.pop(peer_id, None)
            else:
                self.rtt_ms[peer_id] = round(rtt, 3)

        while True:
            now = trio.current_time()
            due = [p for p in self.view.peers if p != self.view.self_id
                   and now - measured_at.get(p, -RTT_INTERVAL_S) >= (RTT_INTERVAL_S if p in self.rtt_ms
                                                                     else RTT_RETRY_S)]
            async with trio.open_nursery() as nursery:
                for peer_id in due:
                    nursery.start_soon(one, peer_id)
            for gone in set(measured_at) - set(self.view.peers):
                measured_at.pop(gone, None)
                self.rtt_ms.pop(gone, None)
            await trio.sleep(EXPIRE_CHECK_S)

    async def _expire(self) -> None:
        while True:
            await trio.sleep(EXPIRE_CHECK_S)
            for peer_id in self.view.expire(self.clock()):
                log.info("peer %s left the mesh view (silent for too long)", peer_id)
                self._returned.discard(peer_id)
            forget_before = trio.current_time() - PEER_TIMEOUT_S
            for peer_id in [p for p, lost in self._lost.items() if lost.at < forget_before]:
                del self._lost[peer_id]

    # -- connections: how departures are seen ------------------------------------------------------------

    def _peer_lost(self, peer: PeerID) -> None:
        """Overlay callback (synchronous, inside py-libp2p's cleanup): our last connection to `peer` closed."""
        if str(peer) in self.view.peers:
            try:
                self._lost_send.send_nowait(peer)
            except trio.WouldBlock:
                log.debug("too many connection losses at once; %s is left to status expiry", peer)

    def _peer_connected(self, peer: PeerID) -> None:
        """Overlay callback: a connection to `peer` opened. A member we counted as gone is back, and a member of
        the view proves membership again on the new connection (it may have restarted: p2p/join_protocol.py)."""
        if str(peer) in self.view.peers or str(peer) in self._lost:
            self.membership.renew(peer)
        lost = self._lost.pop(str(peer), None)
        if lost is not None and str(peer) not in self.view.peers:
            self.view.update(str(peer), lost.status, self.clock())
            log.info("peer %s is back in the mesh view (connected again)", peer)
            self._queue_status_push(str(peer))  # it may have restarted, and forgotten us
            self._returned.add(str(peer))
            self.rtt_ms.pop(str(peer), None)  # a new connection, perhaps a new process: measured again at once

    async def _watch_connections(self) -> None:
        """A member's last connection closed: redial it; if that fails, it left (the rule in mesh/view.py).
        A redial that failed only because this machine was too busy heals itself: `_keep_connected` keeps
        trying the lost, and `_peer_connected` puts them back."""

        async def confirm_gone(peer_id: str) -> None:
            if await self._redial(peer_id, REDIAL_TIMEOUT_S):
                return
            peer = self.view.peers.get(peer_id)
            if peer is not None and self.view.remove(peer_id):
                self._lost[peer_id] = _Lost(trio.current_time(), peer.status)
                log.info("peer %s left the mesh view (connection lost)", peer_id)

        async with trio.open_nursery() as nursery:
            async for peer in self._lost_receive:
                nursery.start_soon(confirm_gone, str(peer))

    async def _keep_connected(self) -> None:
        """Hold a connection to every member of the view (that is how we see it leave), and retry those that
        left on a lost connection for a while: dial those we are not connected to, with backoff while they
        fail. A member that left on a lost connection and came back in a late status message leaves again if
        it cannot be dialed."""
        schedule = RedialSchedule(trio.current_time())

        async def dial(peer_id: str) -> None:
            if await self._redial(peer_id, DIAL_TIMEOUT_S):
                schedule.reached(peer_id)
                return
            if peer_id in self._lost and self.view.remove(peer_id):
                log.info("peer %s left the mesh view again (gone, but a late status named it)", peer_id)
            schedule.failed(peer_id, trio.current_time())

        def connected(peer_id: str) -> bool:
            return self.overlay.is_connected(PeerID.from_base58(peer_id))

        while True:
            await trio.sleep_until(schedule.next_at())
            wanted = (set(self.view.peers) | set(self._lost)) - {self.view.self_id}
            due = schedule.due(wanted, connected, trio.current_time())
            async with trio.open_nursery() as nursery:
                for peer_id in due:
                    nursery.start_soon(dial, peer_id)

    async def _redial(self, peer_id: str, timeout_s: float) -> bool:
        """Connected to `peer_id` again (or still): by its own dial in the meantime, or ours to the addresses
        its status gave and those the peerstore knows."""
        peer_key = PeerID.from_base58(peer_id)
        if self.overlay.is_connected(peer_key):
            return True
        peer = self.view.peers.get(peer_id) or self._lost.get(peer_id)
        addrs = list(dict.fromkeys([*(peer.status.addrs if peer is not None else ()),
                                    *self.overlay.known_addrs(peer_key)]))
        if not addrs:
            return False
        reached = await self.overlay.connect_many(addrs[:MAX_REDIAL_ADDRS], refresh=False, timeout_s=timeout_s)
        return bool(reached) or self.overlay.is_connected(peer_key)

    # -- DHT records --------------------------------------------------------------------------------------

    async def _keep_records(self) -> None:
        """Node and provider records, the listing (leader only) and the look for split meshes (leader of a named
        mesh only), as mesh/records.RecordSchedule says."""
        schedule = self._records
        while True:
            now = self.clock()
            work = schedule.due(now, leader=self.view.leader() == self.view.self_id)
            if work.republish:
                await self._publish_node_and_providers()
            if work.check_listing:
                await self._maybe_publish_listing(now)
            if work.heal:
                await self._heal_split()
            await trio.sleep(max(0.0, schedule.next_at() - self.clock()))

    async def _publish_node_and_providers(self) -> None:
        status = self.local_status()
        record = NodeRecord(mesh=self.settings.mesh_id.hex(), region=self.settings.region, role=self.settings.role,
                            addrs=tuple(self.overlay.addrs()[:16]), models=status.loaded[:64], version=__version__)
        key, value = encode_record(self.overlay.identity, KIND_NODE, str(self.overlay.peer_id), record,
                                   now=self.clock(), ttl_s=RECORD_TTL_S)
        self.listing_server.offer_node_record(value)
        await self.overlay.put_record(key, value)
        topics = [MESHES_TOPIC] + ([region_topic(self.settings.region)] if self.settings.region else [])
        topics += [model_topic(m) for m in status.loaded]
        for topic in topics:
            await self.overlay.provide(provider_key(topic))

    async def _maybe_publish_listing(self, now: float) -> None:
        # A joiner's view holds only itself until the members' status arrives, so it would elect itself and
        # overwrite the listing with a one-node mesh at its own addresses: only the creator writes from a view of one.
        if self.view.leader() != self.view.self_id or (len(self.view.peers) < 2 and not self._list_alone):
            return
        listing = self.listing()
        stale = self._records.listing_stale(self._listing_published_at, now)
        if listing == self._published_listing and not stale:
            return
        # A full mesh (clients >= max_clients) is still written, so the stale "room left" listing is replaced
        # at once; discover shows it as not joinable and --auto never picks it.
        key, value = encode_record(self.overlay.identity, KIND_MESH, self.settings.mesh_id.hex(), listing,
                                   now=now, ttl_s=RECORD_TTL_S)
        self.listing_server.offer_listing(value)
        await self.overlay.put_record(key, value)
        self._published_listing, self._listing_published_at = listing, now

    async def _heal_split(self) -> None:
        """Join listed members we are not connected to (two nodes created the same named mesh at once)."""
        if self.settings.name is None:
            return
        listing = await self.lookup_listing()
        if listing is None:
            return
        missing = [a for a in listing.addrs if not any(str(p) in a for p in self.membership.members)
                   and str(self.overlay.peer_id) not in a]
        if missing:
            await self.join_addrs(missing)

    def _join_addrs(self) -> list[str]:
        """Where joiners should dial: the listing's writer (us), up to 16 addresses."""
        return self.overlay.addrs()[:16]
