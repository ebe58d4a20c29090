"""`GET /metrics` on a real node's console: Prometheus text that prometheus_client parses, whose counters move when
the API answers, with the tiny model's own llama-server metrics under our names; and the hardware in status."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families


def _scrape(node: Any) -> tuple[dict[str, Any], str]:
    response = httpx.get(node.console_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.text)}, response.text


def _value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    """The value of one sample (0 when the series does not exist yet)."""
    if family not in families:
        return 0.0
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return 0.0


def test_metrics_move_with_requests_and_carry_llama_servers_own(node_factory, tiny_models) -> None:
    node = node_factory("--model", str(tiny_models.dense), "--threads", "1", "--ctx-size", "2048")
    node.wait_ready()
    model = "tiny-dense"
    before, _ = _scrape(node)
    assert _value(before, "meshp2p_requests", "meshp2p_requests_total", model=model) == 0

    client = openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=60)
    whole = client.chat.completions.create(model=model, max_tokens=4,
                                           messages=[{"role": "user", "content": "hello"}])
    assert whole.usage is not None
    stream = client.chat.completions.create(model=model, max_tokens=4, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "hello again"}])
    assert list(stream)
    after, text = _scrape(node)

    local = {"model": model, "route": "local"}
    assert _value(after, "meshp2p_requests", "meshp2p_requests_total", **local, status_class="2xx") == 2
    assert _value(after, "meshp2p_input_tokens", "meshp2p_input_tokens_total", **local) >= whole.usage.prompt_tokens
    assert _value(after, "meshp2p_output_tokens", "meshp2p_output_tokens_total", **local) >= \
        whole.usage.completion_tokens + 1
    assert _value(after, "meshp2p_request_duration_seconds", "meshp2p_request_duration_seconds_count", **local) == 2
    assert _value(after, "meshp2p_request_duration_seconds", "meshp2p_request_duration_seconds_bucket", **local,
                  le="+Inf") == 2
    assert _value(after, "meshp2p_time_to_first_token_seconds", "meshp2p_time_to_first_token_seconds_count",
                  **local) == 1
    assert _value(after, "meshp2p_requests_in_flight", "meshp2p_requests_in_flight") == 0
    assert _value(after, "meshp2p_model_ready", "meshp2p_model_ready", model=model) == 1

    # llama-server's own counters, renamed and labelled with the model; they moved with the two requests.
    assert _value(after, "meshp2p_llama_server_up", "meshp2p_llama_server_up", model=model) == 1
    predicted = _value(after, "meshp2p_llamacpp_tokens_predicted", "meshp2p_llamacpp_tokens_predicted_total",
                       model=model)
    assert predicted > _value(before, "meshp2p_llamacpp_tokens_predicted", "meshp2p_llamacpp_tokens_predicted_total",
                              model=model)
    assert "llamacpp:" not in text

    # The machine's load, as gauges here and in status (no GPU on this machine: CPU and RAM).
    assert _value(after, "meshp2p_ram_total_bytes", "meshp2p_ram_total_bytes") > 0
    assert "meshp2p_cpu_utilization_percent" in after
    hardware = node.status()["hardware"]
    assert hardware["ram_total_mb"] > 0 and hardware["cpu_pct"] is not None and isinstance(hardware["gpus"], list)

    # A llama-server that does not answer (stopped, as a hung one would be) is left out of the page and counted.
    pid = node.status()["models"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        stuck, text = _scrape(node)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _value(stuck, "meshp2p_llama_server_up", "meshp2p_llama_server_up", model=model) == 0
    assert _value(stuck, "meshp2p_llama_server_scrape_failures", "meshp2p_llama_server_scrape_failures_total",
                  model=model) == 1
    assert "meshp2p_llamacpp_" not in text
    assert _value(stuck, "meshp2p_requests", "meshp2p_requests_total", **local, status_class="2xx") == 2
    again, _ = _scrape(node)
    assert _value(again, "meshp2p_llama_server_up", "meshp2p_llama_server_up", model=model) == 1
