"""Pure wire formats: DHT records, invite tokens, gossip messages and their bodies, and the join handshake.

Bytes or values in, values out, `now` passed in; no sockets, clocks or libp2p. Each format is specified
language-neutrally in `protocols/` with test vectors, and every decode failure is a `WireError`.
"""

from __future__ import annotations

from meshp2p.wire.errors import WIRE_REASONS, WireError, WireReason
from meshp2p.wire.gossip import (
    GossipMessage,
    ReplayGuard,
    SequenceCounter,
    decode_gossip,
    encode_gossip,
    topic_name,
)
from meshp2p.wire.identity import Identity, peer_id_bytes, peer_id_from_public_key, verify
from meshp2p.wire.join import FrameReader, JoinDialer, JoinListener, frame, rejection
from meshp2p.wire.mesh_id import named_mesh_id, new_mesh_secret, private_mesh_id
from meshp2p.wire.records import (
    MeshListing,
    NodeRecord,
    SignedRecord,
    decode_record,
    encode_record,
    mesh_key,
    node_key,
    provider_key,
    select_record,
)
from meshp2p.wire.status import Role, ShardOffer, StatusBody, status_from_body, status_to_body
from meshp2p.wire.token import InviteToken, decode_token, encode_token

__all__ = [
    "WIRE_REASONS",
    "FrameReader",
    "GossipMessage",
    "Identity",
    "InviteToken",
    "JoinDialer",
    "JoinListener",
    "MeshListing",
    "NodeRecord",
    "ReplayGuard",
    "Role",
    "SequenceCounter",
    "ShardOffer",
    "SignedRecord",
    "StatusBody",
    "WireError",
    "WireReason",
    "decode_gossip",
    "decode_record",
    "decode_token",
    "encode_gossip",
    "encode_record",
    "encode_token",
    "frame",
    "mesh_key",
    "named_mesh_id",
    "new_mesh_secret",
    "node_key",
    "peer_id_bytes",
    "peer_id_from_public_key",
    "private_mesh_id",
    "provider_key",
    "rejection",
    "select_record",
    "status_from_body",
    "status_to_body",
    "topic_name",
    "verify",
]
