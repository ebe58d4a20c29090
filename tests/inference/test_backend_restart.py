"""A llama-server that dies is restarted with backoff, and the API recovers without restarting meshp2p."""

from __future__ import annotations

import os
import signal
import time

import anthropic
import httpx
import openai
from helpers.processes import pid_alive

RECOVERY_TIMEOUT_S = 60.0


def test_killed_backend_is_restarted_and_the_api_recovers(node_factory, tiny_models, llama_binaries):
    node = node_factory("--model", str(tiny_models.dense), "--threads", "1")
    before = node.wait_ready()["models"][0]
    client = openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=60)
    prompt = {"model": "tiny-dense", "prompt": "abc", "max_tokens": 8, "temperature": 0}
    answer = client.completions.create(**prompt).choices[0].text

    os.kill(before["pid"], signal.SIGKILL)
    # Right after the crash the API says "come back later", in OpenAI's shape, instead of hanging or 500.
    r = httpx.post(node.base_url + "/completions", json=prompt, timeout=10)
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "model_unavailable"
    # Anthropic's clients get Anthropic's word for it: 529 overloaded_error, which their SDK raises as its own class
    # (and Claude Code retries).
    claude = anthropic.Anthropic(base_url=f"http://127.0.0.1:{node.api_port}", api_key="unused", max_retries=0,
                                 timeout=10)
    try:
        claude.messages.create(model="tiny-dense", max_tokens=4, messages=[{"role": "user", "content": "abc"}])
    except anthropic.OverloadedError as exc:
        assert exc.body["error"]["type"] == "overloaded_error" and int(exc.response.headers["retry-after"]) >= 1
    else:
        raise AssertionError("the restarting model answered /v1/messages")

    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while (after := node.status()["models"][0])["state"] != "ready" or after["pid"] == before["pid"]:
        assert time.monotonic() < deadline, f"not recovered: {after}"
        time.sleep(0.05)
    assert after["restarts"] == 1
    assert not pid_alive(before["pid"])
    assert client.completions.create(**prompt).choices[0].text == answer
    assert node.process.poll() is None, "meshp2p itself kept running"
