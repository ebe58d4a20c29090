"""The libp2p overlay: identity, host with safe defaults, DHT records, gossip, stream protocols."""
