"""Whose expert usage a `--moe shard` member plans with: a pure rule over the usage tags its peers gossip.

Members of a shard group must plan from one set of counts (a group is the members announcing the same
`<source>:<digest>` tag for a file, protocols/gossip.md `moe_shards`). Measured counts (llama-imatrix) beat the
weight-norm estimate, and a member that cannot measure asks a peer that did (`/meshp2p/moe-usage/1.0.0`,
protocols/moe-usage.md). Rules, for one content id:

1. Only measured tags count (source `imatrix`); an unparsable tag is ignored.
2. The target is the measured tag of the lowest peer id among the members announcing one, this node included
   with its own. When that is this node's tag there is nothing to do. So two members that measured different
   counts (another llama.cpp build) converge on one: the lowest peer id's, which that member never gives up.
3. Otherwise ask the peers announcing the target tag, lowest peer id first; an answer counts only if its digest
   is the target's.
4. When no member announces a measured tag and this node has none: ask the holders of the file (peers whose
   `files` name the content id and that announce no shard entry for it: a node that calibrated it once and
   serves it another way), lowest peer id first; any measured answer is taken, and rule 2 takes over from there.
5. A peer that failed (unreachable, `not_have`, a bad answer) is not asked again before its retry time
   (`AskBackoff`, `now` passed in): 10 s for a member announcing the tag, 60 s for a holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from meshp2p.wire.moe_usage import SOURCE_IMATRIX, parse_usage_tag

#: Rule 5: how long a peer that failed to give usage is left alone.
MEMBER_RETRY_S = 10.0
HOLDER_RETRY_S = 60.0


@dataclass(frozen=True)
class UsageAsk:
    """Whom to ask, in order, and for which digest (None: any measured counts, rule 4)."""

    peers: tuple[str, ...]
    digest: str | None
    retry_s: float


def _measured_digest(tag: str | None) -> str | None:
    parsed = None if tag is None else parse_usage_tag(tag)
    return parsed[1] if parsed is not None and parsed[0] == SOURCE_IMATRIX else None


def usage_to_ask(self_id: str, own_tag: str, announced: Mapping[str, str],
                 holders: Iterable[str] = ()) -> UsageAsk | None:
    """Rules 1-4: `announced` maps each peer announcing this content id to its usage tag, `holders` are the
    peers holding the file without announcing it. None: this node's usage is the one to plan with."""
    measured = {peer: d for peer, tag in announced.items() if peer != self_id
                and (d := _measured_digest(tag)) is not None}
    own = _measured_digest(own_tag)
    if own is not None:
        measured[self_id] = own
    if measured:
        lowest = min(measured)
        target = measured[lowest]
        if target == own:
            return None
        return UsageAsk(tuple(sorted(p for p, d in measured.items() if d == target and p != self_id)), target,
                        MEMBER_RETRY_S)
    others = sorted(set(holders) - set(announced) - {self_id})
    return UsageAsk(tuple(others), None, HOLDER_RETRY_S) if others else None


@dataclass
class AskBackoff:
    """Rule 5: when each peer that failed may be asked again."""

    retry_at: dict[str, float] = field(default_factory=dict)

    def ready(self, peer: str, now: float) -> bool:
        return self.retry_at.get(peer, now) <= now

    def failed(self, peer: str, now: float, retry_s: float) -> None:
        self.retry_at[peer] = now + retry_s
