"""What the model API counts for `/metrics`: requests, tokens, time to first token, latency, failovers, refusals.

One `ApiMetrics` per node, plain counters and histograms in memory, updated on the request path and written out by
api/prometheus.py when `/metrics` is read. Each request gets a `RequestMeter` (`ApiMetrics.start`) that follows it to
its end:

- `route` is where it was answered: `local` (this node's llama-server for this node's client), `peer` (another
  member's, through the tunnel) or `tunnel` (this node's server for another member's client). A request that fails
  over keeps the route of the server that first answered; one no server answered has the route it was last sent to
  (`none` when there was no server to send it to).
- `status_class` (`2xx`, `4xx`, `5xx`) is the status the answer started with; a stream that breaks later still
  counts as what it began as (its error is an event inside a 200).
- Tokens are the `usage` the answer carries (access/tokens.py reads it, whole or streamed).
- Time to first token is measured for streamed answers only, to their first event; latency to the last byte (or to
  the client going away).
- Failovers are the servers a request moved off, before or during its answer.

Requests turned away before a model was chosen (a bad body, an unknown model) are counted only by the gate's and
the error's own numbers, not here: a label per unknown model name would let any client grow this page.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from meshp2p.access.tokens import TokenCounter
from meshp2p.api.errors import api_error
from meshp2p.api.prometheus import Family, Labels, Sample, labels_of
from meshp2p.backends.base import Backend, Reply
from meshp2p.errors import MeshP2PError
from meshp2p.mesh.routing import ServerCandidate

PREFIX = "meshp2p_"
#: Seconds. TTFT on a CPU node is seconds; on a GPU tens of milliseconds.
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds. A long answer from a slow model takes minutes.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)

LOCAL, PEER, TUNNEL = "local", "peer", "tunnel"
#: A request with no server to send it to.
NO_ROUTE = "none"


@dataclass
class Counter:
    """A counter family: one float per label values."""

    name: str
    help: str
    labelnames: tuple[str, ...]
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Family:
        return Family(self.name, "counter", self.help, [
            Sample(self.name, labels_of(self.labelnames, key), value) for key, value in sorted(self.values.items())])


@dataclass
class _Buckets:
    counts: list[int]
    total: float = 0.0
    count: int = 0


@dataclass
class Histogram:
    """A histogram family: cumulative buckets (upper bounds in `buckets`, then +Inf), sum and count per labels."""

    name: str
    help: str
    labelnames: tuple[str, ...]
    buckets: tuple[float, ...]
    series: dict[tuple[str, ...], _Buckets] = field(default_factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.setdefault(labels, _Buckets([0] * len(self.buckets)))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                series.counts[i] += 1
        series.total += value
        series.count += 1

    def family(self) -> Family:
        samples: list[Sample] = []
        for key, s in sorted(self.series.items()):
            labels = labels_of(self.labelnames, key)
            for bound, n in zip(self.buckets, s.counts, strict=True):
                samples.append(Sample(f"{self.name}_bucket", (*labels, ("le", _bound(bound))), n))
            samples.append(Sample(f"{self.name}_bucket", (*labels, ("le", "+Inf")), s.count))
            samples.append(Sample(f"{self.name}_sum", labels, s.total))
            samples.append(Sample(f"{self.name}_count", labels, s.count))
        return Family(self.name, "histogram", self.help, samples)


def _bound(value: float) -> str:
    return repr(float(value))


def gauge(name: str, help: str, values: Sequence[tuple[Labels, float]]) -> Family:
    """A gauge family read at scrape time (the in-flight count, peers, hardware)."""
    return Family(name, "gauge", help, [Sample(name, labels, value) for labels, value in values])


class ApiMetrics:
    """The counters the request path moves (the module docstring says what each means)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        p = PREFIX
        self.requests = Counter(f"{p}requests_total", "Model requests answered, by model, route and status class.",
                                ("model", "route", "status_class"))
        self.input_tokens = Counter(f"{p}input_tokens_total", "Prompt tokens of answered requests (their usage).",
                                    ("model", "route"))
        self.output_tokens = Counter(f"{p}output_tokens_total", "Generated tokens of answered requests (their usage).",
                                     ("model", "route"))
        self.ttft = Histogram(f"{p}time_to_first_token_seconds", "Seconds from request to a stream's first event.",
                              ("model", "route"), TTFT_BUCKETS_S)
        self.latency = Histogram(f"{p}request_duration_seconds", "Seconds from request to the answer's last byte.",
                                 ("model", "route"), LATENCY_BUCKETS_S)
        self.failovers = Counter(f"{p}failovers_total", "Servers a request moved off (before or during its answer).",
                                 ("model",))
        self.refused = Counter(f"{p}api_refusals_total", "Requests the API gate turned away: 401 (no or bad key) and "
                               "429 (a rate or concurrency limit), by status and code.", ("status", "code"))

    def start(self, model: str, route: str | None = None) -> RequestMeter:
        """A meter for one request to `model`, started now; `route` now, or learnt from `tracking`."""
        return RequestMeter(self, model, route, self.clock())

    def refusal(self, status: int, code: str) -> None:
        self.refused.inc(str(status), code)

    def families(self) -> list[Family]:
        return [m.family() for m in (self.requests, self.input_tokens, self.output_tokens, self.ttft, self.latency,
                                     self.failovers, self.refused)]


class RequestMeter:
    """One request, from `ApiMetrics.start` to its end: counted once, when its answer is over or it failed."""

    def __init__(self, metrics: ApiMetrics, model: str, route: str | None, started: float) -> None:
        self.metrics = metrics
        self.model = model
        self.route = route
        self.started = started
        self.servers_asked = 0
        self._answered_route: str | None = None
        self._done = False

    def tracking(self, backend_for: Callable[[ServerCandidate], Backend]) -> Callable[[ServerCandidate], Backend]:
        """`backend_for` that notes each server the request is sent to (its route, and every move a failover)."""

        def tracked(candidate: ServerCandidate) -> Backend:
            self.servers_asked += 1
            self.route = LOCAL if candidate.local else PEER
            return backend_for(candidate)

        return tracked

    def failed(self, exc: BaseException) -> None:
        """No answer: the error's status (api/errors.py's table); a cancelled request (client gone) is not one."""
        if not isinstance(exc, Exception):
            return
        status = api_error(exc).status if isinstance(exc, MeshP2PError) else 500
        self._finish(status, None)

    def watch(self, reply: Reply) -> Reply:
        """`reply`, counted when it is over: a whole body at once, a stream at its end (or its reader's going)."""
        self._answered_route = self.route
        if reply.chunks is None:
            counter = TokenCounter(stream=False)
            counter.feed(reply.body or b"")
            self._finish(reply.status, counter)
            return reply
        status = reply.status

        async def close() -> None:
            self._finish(status, None)  # a stream never read (its reader went first): no usage to read
            await reply.aclose()

        return Reply(status, reply.headers, None, self.watch_chunks(status, reply.chunks), close)

    async def watch_chunks(self, status: int, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks` passed on, its first one timed and its usage read; counted when it ends however it ends."""
        counter = TokenCounter(stream=True)
        first = True
        try:
            async for chunk in chunks:
                if first and chunk:
                    first = False
                    self.metrics.ttft.observe(self.metrics.clock() - self.started, self.model, self._route())
                counter.feed(chunk)
                yield chunk
        finally:
            self._finish(status, counter)

    def answered(self, status: int, body: bytes | None) -> None:
        """A whole answer given by other means than a Reply (the tunnel's serving side)."""
        counter = TokenCounter(stream=False)
        counter.feed(body or b"")
        self._finish(status, counter)

    def _route(self) -> str:
        return self._answered_route or self.route or NO_ROUTE

    def _finish(self, status: int, counter: TokenCounter | None) -> None:
        if self._done:
            return
        self._done = True
        m, route = self.metrics, self._route()
        m.requests.inc(self.model, route, f"{status // 100}xx")
        m.latency.observe(m.clock() - self.started, self.model, route)
        if self.servers_asked > 1:
            m.failovers.inc(self.model, amount=self.servers_asked - 1)
        if counter is not None:
            tokens_in, tokens_out = counter.result()
            m.input_tokens.inc(self.model, route, amount=tokens_in)
            m.output_tokens.inc(self.model, route, amount=tokens_out)
