"""What one request adds to the API's counters (api/metrics.py), driven with answers as bytes and a clock we move."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from meshp2p.api.metrics import ApiMetrics
from meshp2p.backends.base import Reply
from meshp2p.errors import BackendUnavailable
from meshp2p.mesh.routing import ServerCandidate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _usage(prompt: int, completion: int) -> bytes:
    return json.dumps({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}).encode()


def _series(metrics: ApiMetrics, name: str) -> dict[tuple[str, ...], float]:
    return dict(getattr(metrics, name).values)


def test_a_whole_answer_counts_its_request_usage_and_latency_at_once() -> None:
    clock = Clock()
    metrics = ApiMetrics(clock)
    meter = metrics.start("tiny")
    meter.tracking(lambda c: None)(ServerCandidate("local", 0.0, 0.0, True))
    clock.now += 0.3
    meter.watch(Reply(200, {}, _usage(12, 5)))
    assert _series(metrics, "requests") == {("tiny", "local", "2xx"): 1.0}
    assert _series(metrics, "input_tokens") == {("tiny", "local"): 12.0}
    assert _series(metrics, "output_tokens") == {("tiny", "local"): 5.0}
    latency = metrics.latency.series[("tiny", "local")]
    assert latency.count == 1 and latency.total == pytest.approx(0.3)
    assert metrics.ttft.series == {}  # only streams have a first token to time


async def test_a_stream_times_its_first_event_and_reads_usage_from_its_last() -> None:
    clock = Clock()
    metrics = ApiMetrics(clock)
    meter = metrics.start("tiny")
    meter.tracking(lambda c: None)(ServerCandidate("12D3peer", 0.0, 0.0, False))

    async def events() -> AsyncIterator[bytes]:
        clock.now += 0.2
        yield b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
        clock.now += 1.0
        yield b"data: " + _usage(7, 2) + b"\n\ndata: [DONE]\n\n"

    reply = meter.watch(Reply(200, {}, None, events()))
    assert metrics.requests.values == {}  # not over yet
    assert await reply.read()
    assert _series(metrics, "requests") == {("tiny", "peer", "2xx"): 1.0}
    assert metrics.ttft.series[("tiny", "peer")].total == pytest.approx(0.2)
    assert metrics.latency.series[("tiny", "peer")].total == pytest.approx(1.2)
    assert _series(metrics, "output_tokens") == {("tiny", "peer"): 2.0}
    await reply.aclose()
    assert _series(metrics, "requests") == {("tiny", "peer", "2xx"): 1.0}  # counted once


async def test_a_stream_never_read_counts_when_closed() -> None:
    metrics = ApiMetrics(Clock())
    meter = metrics.start("tiny", "tunnel")

    async def events() -> AsyncIterator[bytes]:
        yield b"data: {}\n\n"

    await meter.watch(Reply(200, {}, None, events())).aclose()
    assert _series(metrics, "requests") == {("tiny", "tunnel", "2xx"): 1.0}


def test_failovers_and_failures_are_counted_with_the_error_status() -> None:
    metrics = ApiMetrics(Clock())
    meter = metrics.start("tiny")
    track = meter.tracking(lambda c: None)
    track(ServerCandidate("local", 0.0, 0.0, True))
    track(ServerCandidate("12D3peer", 0.0, 0.0, False))
    meter.failed(BackendUnavailable("nobody answers", retry_after_s=1))
    assert _series(metrics, "requests") == {("tiny", "peer", "5xx"): 1.0}
    assert _series(metrics, "failovers") == {("tiny",): 1.0}


def test_a_request_with_no_server_and_a_cancelled_one() -> None:
    metrics = ApiMetrics(Clock())
    metrics.start("tiny").failed(BackendUnavailable("no server", retry_after_s=1))
    assert _series(metrics, "requests") == {("tiny", "none", "5xx"): 1.0}
    metrics.start("tiny").failed(KeyboardInterrupt())  # not an Exception: the client went, nothing was answered
    assert sum(metrics.requests.values.values()) == 1


def test_gate_refusals_by_status_and_code() -> None:
    metrics = ApiMetrics(Clock())
    metrics.refusal(401, "missing_api_key")
    metrics.refusal(429, "rate_limited")
    metrics.refusal(429, "rate_limited")
    assert _series(metrics, "refused") == {("401", "missing_api_key"): 1.0, ("429", "rate_limited"): 2.0}
