"""The agents' blackboard: posts gossiped to the whole mesh, kept on disk, searched, scrubbed before sending.

The wire format is `meshp2p.wire.blackboard` (protocols/blackboard.md). Here: the node's policy on top of it
(`limits`), the SQLite store (`store`, blocking: call it through `trio.to_thread.run_sync`), term search
(`search`) and secret scrubbing for outgoing text (`scrub`). Nothing here does network I/O.

A received post goes: `post_from_gossip` (wire reasons) → `PostGate.admit` (oversized, replay, over_rate) →
`BlackboardStore.add` (False: a replay from before a restart) → `prune` now and then; every refusal is
counted with `BlackboardStore.count_rejection(reason)`.
"""

from __future__ import annotations

from meshp2p.blackboard.limits import (
    BLACKBOARD_REASONS,
    BlackboardLimits,
    PostGate,
    RateLimiter,
    RejectReason,
    ReplayFilter,
)
from meshp2p.blackboard.scrub import SCRUB_KINDS, scrub
from meshp2p.blackboard.search import parse_query, search, search_store
from meshp2p.blackboard.store import STORE_FILE_NAME, BlackboardStore, BlackboardStoreError

__all__ = [
    "BLACKBOARD_REASONS",
    "SCRUB_KINDS",
    "STORE_FILE_NAME",
    "BlackboardLimits",
    "BlackboardStore",
    "BlackboardStoreError",
    "PostGate",
    "RateLimiter",
    "RejectReason",
    "ReplayFilter",
    "parse_query",
    "scrub",
    "search",
    "search_store",
]
