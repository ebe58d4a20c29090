"""Which of a model's servers takes one request, and where to retry when it fails.

Rules, in order:
1. Sessions stick. A request with a session key (the OpenAI `user` field or a session id header) goes to the
   server with the highest rendezvous weight sha256(session_key, peer_id) (highest-random-weight hashing), so the
   same conversation keeps hitting the same llama-server and its KV cache stays warm. Adding or removing any
   other server never moves a session; it moves only when its own server disappears, and then to the server that
   was its second choice. Load does not move a session: a cold cache costs more than a short queue.
2. Local first. Without a session key, this node's own server is used when its in-flight count is at most one
   more than the least busy remote server's: a tunnel hop costs about as much as one queued request.
3. Cheapest otherwise: cost = in_flight + rtt_ms / RTT_MS_PER_REQUEST (50 ms of round trip weighs as much as
   one queued request); an unknown RTT counts as UNKNOWN_RTT_MS, the local server's as 0.
Ties break on peer_id, so the choice is deterministic. A candidate is local when `local` is set or its peer_id
is `local_id`. Nonsense numbers (negative, NaN) are read as "unknown RTT" and "busiest possible" respectively.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

RTT_MS_PER_REQUEST = 50.0
UNKNOWN_RTT_MS = 20.0
#: How many more requests the local server may have in flight than the best remote and still be preferred.
LOCAL_SLACK_REQUESTS = 1.0


@dataclass(frozen=True)
class ServerCandidate:
    peer_id: str
    in_flight: float
    rtt_ms: float | None
    local: bool


def _is_local(candidate: ServerCandidate, local_id: str) -> bool:
    return candidate.local or candidate.peer_id == local_id


def _in_flight(candidate: ServerCandidate) -> float:
    value = candidate.in_flight
    return value if math.isfinite(value) and value >= 0 else math.inf


def cost(candidate: ServerCandidate, *, local_id: str) -> float:
    """Queued requests plus the round trip expressed in queued requests (rule 3)."""
    if _is_local(candidate, local_id):
        rtt_ms = 0.0
    elif candidate.rtt_ms is None or not math.isfinite(candidate.rtt_ms) or candidate.rtt_ms < 0:
        rtt_ms = UNKNOWN_RTT_MS
    else:
        rtt_ms = candidate.rtt_ms
    return _in_flight(candidate) + rtt_ms / RTT_MS_PER_REQUEST


def rendezvous_weight(session_key: str, peer_id: str) -> int:
    """The session's affinity for a server; stable across processes and versions (no Python `hash`)."""
    digest = hashlib.sha256(f"{session_key}\x00{peer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _by_rendezvous(candidates: Sequence[ServerCandidate], session_key: str) -> list[ServerCandidate]:
    return sorted(candidates, key=lambda c: (-rendezvous_weight(session_key, c.peer_id), c.peer_id))


def _by_cost(candidates: Sequence[ServerCandidate], local_id: str) -> list[ServerCandidate]:
    return sorted(candidates, key=lambda c: (cost(c, local_id=local_id), c.peer_id))


def choose_server(candidates: Sequence[ServerCandidate], *, session_key: str | None,
                  local_id: str) -> ServerCandidate:
    """The server for one request (rules in the module docstring); ValueError when there is none."""
    if not candidates:
        raise ValueError("no server for this model")
    if session_key:
        return _by_rendezvous(candidates, session_key)[0]
    locals_ = sorted((c for c in candidates if _is_local(c, local_id)), key=lambda c: (_in_flight(c), c.peer_id))
    remotes = [c for c in candidates if not _is_local(c, local_id)]
    if locals_ and (not remotes or
                    _in_flight(locals_[0]) <= min(_in_flight(c) for c in remotes) + LOCAL_SLACK_REQUESTS):
        return locals_[0]
    return _by_cost(candidates, local_id)[0]


def failover_order(candidates: Sequence[ServerCandidate], *, failed: Collection[str], session_key: str | None,
                   local_id: str) -> list[ServerCandidate]:
    """The servers not in `failed`, best first: where to retry a request that failed on a server.

    The first is what `choose_server` would pick among them; with a session key the rest follow the session's
    rendezvous order (where it would move next), otherwise cost order.
    """
    remaining = [c for c in candidates if c.peer_id not in failed]
    if not remaining:
        return []
    if session_key:
        return _by_rendezvous(remaining, session_key)
    first = choose_server(remaining, session_key=None, local_id=local_id)
    return [first, *(c for c in _by_cost(remaining, local_id) if c is not first)]
