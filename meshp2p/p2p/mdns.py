"""LAN discovery over mDNS: find meshp2p peers on the local network without any bootstrap peer (`up --mdns`).

py-libp2p's mDNS (zeroconf) only puts what it hears into the peerstore and calls a process-wide hook; it
dials nobody. This module advertises our TCP addresses, turns each discovery into an address on a trio
channel, and the overlay dials it (connect + DHT add_peer), which is what makes a named mesh form.

Why not `new_host(enable_mDNS=True)`: that advertises the host's transport addresses as they are bound, so a
node listening on 0.0.0.0 would tell the LAN to dial 0.0.0.0; it also registers the service (a blocking ~1 s
zeroconf announcement) on the trio thread. Here the addresses are each interface's, and every blocking zeroconf
call runs in a worker thread.

zeroconf runs its own threads: discoveries arrive on one of them and are handed to trio with
`trio.from_thread`. We advertise under a private service type (`_p2p-meshp2p._udp.local.`), so other libp2p
software on the LAN (an IPFS node, say) is neither dialed nor added to our routing table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery, create_mdns_discovery
from libp2p.peer.peerinfo import PeerInfo

from meshp2p.hosts import ALL_HOSTS
from meshp2p.p2p.interfaces import is_loopback_host, lan_ipv4s

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

#: The service type is `_p2p-<this>._udp.local.`: only meshp2p nodes answer and are dialed.
MDNS_NETWORK_NAME = "meshp2p"
#: How long a discovered address stays in the peerstore (py-libp2p's default).
MDNS_ADDR_TTL_S = 120
#: Discoveries waiting to be dialed; more than this at once on one LAN are dropped (the next announcement
#: brings them back).
MDNS_QUEUE = 64


def advertised_addrs(listen_host: str, port: int) -> list[str]:
    """TCP multiaddrs (without /p2p/) to announce: each LAN interface for a wildcard bind, else the bound one."""
    hosts = lan_ipv4s() if listen_host == ALL_HOSTS else [listen_host]
    return [f"/ip4/{host}/tcp/{port}" for host in hosts if not is_loopback_host(host)]


class MdnsDiscovery:
    """Announce this node on the LAN and hand every meshp2p peer heard there to `dial`."""

    def __init__(self, swarm: Any, dial: Callable[[str], Awaitable[object]]) -> None:
        self._swarm = swarm
        self._dial = dial

    async def run(self, addrs: Sequence[str], *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; `addrs` are what we announce (see `advertised_addrs`)."""
        if not addrs:
            log.warning("mDNS is off: no LAN address to announce (listening on loopback only?)")
            task_status.started()
            return
        send, receive = trio.open_memory_channel[str](MDNS_QUEUE)
        token = trio.lowlevel.current_trio_token()
        own = str(self._swarm.get_peer_id())

        def queue(addr: str) -> None:
            try:
                send.send_nowait(addr)
            except (trio.WouldBlock, trio.ClosedResourceError):
                log.debug("mDNS: dropped %s (queue full or stopping)", addr)

        def on_found(info: PeerInfo) -> None:  # on a zeroconf thread
            if str(info.peer_id) == own:
                return
            for addr in info.addrs:
                try:
                    trio.from_thread.run_sync(queue, f"{addr}/p2p/{info.peer_id}", trio_token=token)
                except trio.RunFinishedError:
                    return

        # Before zeroconf starts: its browser reports each peer once, possibly before the announcement returns.
        peerDiscovery.register_peer_discovered_handler(on_found)
        discovery: MDNSDiscovery | None = None
        try:
            discovery = await trio.to_thread.run_sync(self._start, list(addrs))
            log.info("mDNS: announcing %s on the LAN", ", ".join(addrs))
            task_status.started()
            async with receive, trio.open_nursery() as nursery:
                async for addr in receive:
                    # Concurrently: one silent address (another interface's) must not hold up the rest.
                    nursery.start_soon(self._dial, addr)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(on_found)
            send.close()
            if discovery is not None:
                with trio.CancelScope(shield=True):  # the goodbye packet; zeroconf bounds its own waits
                    await trio.to_thread.run_sync(discovery.stop)

    def _start(self, addrs: list[str]) -> MDNSDiscovery:
        """Open zeroconf (binds UDP 5353 on every interface) and announce; blocking, so run in a thread."""
        discovery = create_mdns_discovery(self._swarm, listen_addrs=addrs, ttl=MDNS_ADDR_TTL_S,
                                          private_network_fingerprint=MDNS_NETWORK_NAME)
        discovery.broadcaster.register()
        return discovery
