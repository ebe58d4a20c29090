"""The libp2p overlay: identity, host with safe defaults, DHT records, gossip, stream protocols.

The only package that imports libp2p or multiaddr (tests/test_layers.py). The two libp2p types the layers above
hold on to, a peer's id and a peer's id with its addresses, cross the seam under these names.
"""

from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import PeerInfo

__all__ = ["PeerID", "PeerInfo"]
