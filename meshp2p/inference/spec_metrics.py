"""How well a model's speculation works: draft tokens proposed and accepted, read from its llama-server.

llama-server b11434 reports speculation three ways: each response's `timings` (`draft_n`, `draft_n_accepted`),
the per-slot log line `draft acceptance = ...`, and Prometheus counters on `/metrics` (which meshp2p always turns
on): `llamacpp:spec_decode_num_draft_tokens_total` and `llamacpp:spec_decode_num_accepted_tokens_total`, summed
over every request the process finished. The counters are read here, so no response has to be parsed on its way to
the client and requests through the tunnel count too.

The counters start from zero in every process: `SpeculationMeter` keeps what earlier processes of the same model
counted (a restart, a re-planned split), so the numbers in /api/status are the model's since the node started.
They are read every SPEC_METRICS_POLL_S while the server is ready (a request counts once it has finished).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from meshp2p.inference.models import Speculation

#: How often a ready server's counters are read (LlamaServer.watch_speculation).
SPEC_METRICS_POLL_S = 2.0
DRAFTED_METRIC = "llamacpp:spec_decode_num_draft_tokens_total"
ACCEPTED_METRIC = "llamacpp:spec_decode_num_accepted_tokens_total"
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)", re.M)


@dataclass(frozen=True)
class SpeculationStatus:
    """One model's speculation as /api/status shows it."""

    #: "draft" or "ngram".
    mode: str
    #: The draft model's id; None for n-gram lookup.
    draft: str | None
    #: Tokens proposed and tokens the main model accepted, since the node started.
    drafted: int
    accepted: int

    @property
    def acceptance_rate(self) -> float | None:
        return None if self.drafted == 0 else self.accepted / self.drafted

    def to_json(self) -> dict[str, Any]:
        rate = self.acceptance_rate
        return {"mode": self.mode, "draft": self.draft, "drafted_tokens": self.drafted,
                "accepted_tokens": self.accepted, "acceptance_rate": None if rate is None else round(rate, 4)}


def parse_spec_counters(text: str) -> tuple[int, int] | None:
    """(drafted, accepted) from a /metrics page, or None when it has no speculation counters."""
    values = {m["name"]: m["value"] for m in _SAMPLE.finditer(text)}
    try:
        return int(float(values[DRAFTED_METRIC])), int(float(values[ACCEPTED_METRIC]))
    except (KeyError, ValueError, OverflowError):
        return None


class SpeculationMeter:
    """The counters of one model's llama-server processes, added up across restarts."""

    def __init__(self, speculation: Speculation) -> None:
        self.speculation = speculation
        self._pid: int | None = None
        self._current = (0, 0)
        self._earlier = (0, 0)

    def observe(self, pid: int, drafted: int, accepted: int) -> None:
        """What process `pid` reports now; a new pid means the counters started again from zero."""
        if pid != self._pid:
            self._earlier = (self._earlier[0] + self._current[0], self._earlier[1] + self._current[1])
            self._pid, self._current = pid, (0, 0)
        self._current = (max(drafted, self._current[0]), max(accepted, self._current[1]))

    def status(self) -> SpeculationStatus:
        s = self.speculation
        return SpeculationStatus(mode=s.mode, draft=s.draft_id, drafted=self._earlier[0] + self._current[0],
                                 accepted=self._earlier[1] + self._current[1])
