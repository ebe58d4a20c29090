"""The mesh as this node sees it: one plain-data object the rest of the code reads.

It is fed status gossip (`update`), departures (`remove`) and ticks of time (`expire`); it does no I/O, so its
timing rules are tested with plain numbers.

How a member leaves the view (the goal: a vanished node leaves every view within 10 s):
- at once when our connection to it closes and a redial fails (meshp2p/app/mesh_liveness.py; p2p/liveness.py makes
  the kernel notice a vanished machine within a few seconds). Members hold a connection to every other member,
  so this is how departures are normally seen, at no CPU cost;
- otherwise after `PEER_TIMEOUT_S` without status: every node sends its status when it changes and at least every
  `STATUS_INTERVAL_S` (a keepalive; two may be lost without the peer being dropped), and expiry is checked
  every `EXPIRE_CHECK_S`. This catches a member we cannot connect to, and a process that hangs with its
  sockets open. The keepalive is slow on purpose: each status message costs every member CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshp2p.wire.status import Role, StatusBody

#: Keepalive: each status message costs every member CPU (receive, verify, forward ~D copies: ~2 ms each in
#: py-libp2p), so with departures seen on the connection it is sent rarely.
STATUS_INTERVAL_S = 20.0
PEER_TIMEOUT_S = 2 * STATUS_INTERVAL_S + 5.0
EXPIRE_CHECK_S = 1.0
SERVING_ROLES = frozenset({Role.HOST, Role.WORKER, Role.STANDBY})
#: Models remembered in `served_at` (the most recently served are kept).
SERVED_AT_MAX = 1024


@dataclass(frozen=True)
class PeerView:
    peer_id: str
    status: StatusBody
    last_seen: float


@dataclass
class MeshView:
    """Peers of one mesh (this node included, as `self_id`) and their last status."""

    mesh_id: bytes
    self_id: str
    peers: dict[str, PeerView] = field(default_factory=dict)
    #: When each model was last reported loaded by a serving member, kept after that member left: the election
    #: (mesh/election.py) takes up a model whose last server vanished even between two of its own looks.
    served_at: dict[str, float] = field(default_factory=dict)

    def update(self, peer_id: str, status: StatusBody, now: float) -> bool:
        """Record a status; True if the peer is new to the view."""
        is_new = peer_id not in self.peers
        self.peers[peer_id] = PeerView(peer_id, status, now)
        if status.role in SERVING_ROLES:
            for model_id in status.loaded:
                self.served_at[model_id] = now
        if len(self.served_at) > SERVED_AT_MAX:
            for model_id in sorted(self.served_at, key=self.served_at.__getitem__)[:-SERVED_AT_MAX]:
                del self.served_at[model_id]
        return is_new

    def remove(self, peer_id: str) -> bool:
        return self.peers.pop(peer_id, None) is not None

    def expire(self, now: float) -> list[str]:
        """Drop peers silent for longer than PEER_TIMEOUT_S (never ourselves); returns who was dropped."""
        gone = [p for p, v in self.peers.items() if p != self.self_id and now - v.last_seen > PEER_TIMEOUT_S]
        for peer_id in gone:
            del self.peers[peer_id]
        return gone

    # -- derived facts --------------------------------------------------------------------------------

    def node_count(self) -> int:
        return sum(1 for v in self.peers.values() if v.status.role != Role.CLIENT)

    def client_count(self) -> int:
        return sum(1 for v in self.peers.values() if v.status.role == Role.CLIENT)

    def served_models(self) -> tuple[str, ...]:
        return tuple(sorted({m for v in self.peers.values() for m in v.status.loaded}))

    def available_models(self) -> tuple[str, ...]:
        return tuple(sorted({m for v in self.peers.values() for m in v.status.available}))

    def capacity_mb(self) -> int:
        """What the serving nodes can hold: VRAM where they have it, else RAM."""
        return sum(v.status.vram_mb or v.status.ram_mb for v in self.peers.values()
                   if v.status.role in SERVING_ROLES)

    def region(self) -> str | None:
        """The mesh's region: the one most of its tagged nodes name (ties: alphabetical); None if none is tagged.

        Any member may write the listing, so the region comes from the whole view, not from the writer's flag.
        """
        counts: dict[str, int] = {}
        for v in self.peers.values():
            if v.status.region:
                counts[v.status.region] = counts.get(v.status.region, 0) + 1
        return min(counts, key=lambda r: (-counts[r], r)) if counts else None

    def leader(self) -> str:
        """The serving node with the lowest PeerID: it publishes the mesh listing, so the DHT sees one writer.

        Falls back to the lowest PeerID of any member (a mesh of clients still has a listing).
        """
        serving = [p for p, v in self.peers.items() if v.status.role in SERVING_ROLES]
        return min(serving or self.peers or [self.self_id])
