"""A client that leaves mid-stream stops the generation (api/model_requests.py: the disconnect cancels the answer,
whose generators close the upstream connection, and llama-server cancels the task), rather than leaving
llama-server to generate the rest of `max_tokens` for nobody. llama-server's own log says both: "cancel task",
and the tokens its slot held when it stopped."""

from __future__ import annotations

import re

import httpx
from helpers.processes import wait_for

MAX_TOKENS = 6000
STOPPED = re.compile(r"stop processing: n_tokens = (\d+)")


def test_a_client_that_leaves_mid_stream_stops_the_generation(node_factory, tiny_models):
    node = node_factory("--model", str(tiny_models.toolcall), "--ctx-size", "8192", "--threads", "1", "--solo")
    node.wait_ready()
    slots = f"http://127.0.0.1:{node.status()['models'][0]['port']}/slots"
    body = {"model": "tiny-toolcall", "prompt": "Tell me everything.", "max_tokens": MAX_TOKENS, "stream": True,
            "ignore_eos": True, "temperature": 0}
    with httpx.Client(timeout=30) as client, client.stream("POST", node.base_url + "/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for _ in range(4):  # a few tokens in, then the client is gone (the connection closes with the block)
            next(lines)

    def log_text() -> str:
        return "\n".join(p.read_text(errors="replace") for p in (node.home / "logs").glob("*.log"))

    wait_for(lambda: not any(s["is_processing"] for s in httpx.get(slots, timeout=5).json())
             and STOPPED.search(log_text()) is not None, 60, "llama-server to release its slot")
    text = log_text()
    held = [int(n) for n in STOPPED.findall(text)]
    assert "cancel task" in text
    assert held and max(held) < MAX_TOKENS // 2, held
