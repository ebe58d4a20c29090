"""Routing across the mesh, end to end: every node answers for every model wherever it runs.

Real `meshp2p up` processes on loopback with tiny models; the official `openai` client on an API-only node.
"""

from __future__ import annotations

import os
import signal

import httpx
import openai
import pytest
from helpers.processes import pid_alive, wait_for

ROUTING_TIMEOUT_S = 60.0
#: Orphaned models are taken up within 10 s of their last server vanishing from the view (itself ~8 s).
TAKEOVER_LIMIT_S = 20.0
#: Each read of a request (the openai client's default is 600 s).
REQUEST_TIMEOUT_S = 60.0


def client_for(node) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def model_ids(node) -> set[str]:
    return {m["id"] for m in httpx.get(node.base_url + "/models", timeout=10).json()["data"]
            if m["meshp2p"]["state"] != "wanted"}


def start_mesh(node_factory, bootstrap, mesh: str, *nodes: tuple[str, tuple[str, ...]]):
    started = []
    for name, args in nodes:
        node = node_factory(*args, "--mesh-name", mesh, "--bootstrap", bootstrap.addr, "--threads", "1", name=name)
        started.append(node)
    for node in started:
        node.wait_ready()
    return started


def chat(client, model: str, stream: bool = False, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me about meshes."}], temperature=0, seed=7,
        max_tokens=24, stream=stream, **kwargs)


def first_difference(got: str, expected: str) -> str:
    """Where two long answers part, with a little of each around it."""
    at = next((i for i, (x, y) in enumerate(zip(got, expected, strict=False)) if x != y), min(len(got), len(expected)))
    return (f"answers differ from character {at} (of {len(got)} got, {len(expected)} expected): "
            f"got {got[max(0, at - 40):at + 40]!r}, expected {expected[max(0, at - 40):at + 40]!r}")


def streamed_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_client_node_answers_for_every_model_like_the_serving_nodes(node_factory, tiny_models, bootstrap):
    a, b, c = start_mesh(node_factory, bootstrap, "routing-basic",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("b", ("--model", str(tiny_models.other))),
                         ("c", ("--client",)))
    wait_for(lambda: model_ids(c) == {"tiny-dense", "tiny-other"}, ROUTING_TIMEOUT_S, "C to list both models")
    listed = {m["id"]: m["meshp2p"] for m in httpx.get(c.base_url + "/models", timeout=10).json()["data"]}
    assert not listed["tiny-dense"]["local"] and listed["tiny-dense"]["nodes"] == [a.status()["mesh"]["peer_id"]]

    for model, owner in (("tiny-dense", a), ("tiny-other", b)):
        direct = chat(client_for(owner), model).choices[0].message.content
        via_c = chat(client_for(c), model)
        assert via_c.model == model
        assert via_c.choices[0].message.content == direct
        assert streamed_text(chat(client_for(c), model, stream=True)) == direct
        text = client_for(c).completions.create(model=model, prompt="abc", max_tokens=10, temperature=0)
        assert text.choices[0].text == client_for(owner).completions.create(
            model=model, prompt="abc", max_tokens=10, temperature=0).choices[0].text
    # A local model stays local: B answered its own model without asking anyone.
    served_by_a = {m["id"]: m["requests"] for m in a.status()["models"]}
    chat(client_for(b), "tiny-other")
    assert {m["id"]: m["requests"] for m in a.status()["models"]} == served_by_a


def _serving(nodes, model: str):
    counts = {n: next(m["requests"] for m in n.status()["models"] if m["id"] == model) for n in nodes}
    return counts


def test_sessions_stick_to_one_server(node_factory, tiny_models, bootstrap):
    a, d, c = start_mesh(node_factory, bootstrap, "routing-sticky",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("d", ("--model", str(tiny_models.dense))),
                         ("c", ("--client",)))
    wait_for(lambda: len(httpx.get(c.base_url + "/models", timeout=10).json()["data"][0]["meshp2p"]["nodes"]) == 2,
             ROUTING_TIMEOUT_S, "C to see both servers of tiny-dense")
    for user in ("alice", "bob", "carol"):
        before = _serving((a, d), "tiny-dense")
        for _ in range(5):
            chat(client_for(c), "tiny-dense", user=user)
        after = _serving((a, d), "tiny-dense")
        deltas = sorted(after[n] - before[n] for n in (a, d))
        assert deltas == [0, 5], f"session {user} moved between servers: {deltas}"


def test_stream_completes_when_its_server_dies_mid_answer(node_factory, tiny_models, bootstrap):
    a, d, c = start_mesh(node_factory, bootstrap, "routing-failover",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("d", ("--model", str(tiny_models.dense))),
                         ("c", ("--client",)))
    wait_for(lambda: len(httpx.get(c.base_url + "/models", timeout=10).json()["data"][0]["meshp2p"]["nodes"]) == 2,
             ROUTING_TIMEOUT_S, "C to see both servers of tiny-dense")
    max_tokens = 1500
    stream = client_for(c).completions.create(model="tiny-dense", prompt="Once", max_tokens=max_tokens,
                                              temperature=0, stream=True)
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if len(chunks) == 20:
            serving = [n for n, count in _serving((a, d), "tiny-dense").items() if count > 0]
            assert len(serving) == 1
            victim = serving[0]
            backend = victim.status()["models"][0]["pid"]
            # The whole machine dies: the node and its llama-server, without a word.
            victim.process.send_signal(signal.SIGKILL)
            os.kill(backend, signal.SIGKILL)
    pieces = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len({c.id for c in chunks}) == 1, "the client saw one stream"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert len(pieces) == max_tokens
    assert not pid_alive(backend)

    # The text, not only its length, against the survivor at temperature 0 (same binary and model, one thread: the
    # victim says the same). The stream is the victim's first `delivered` tokens, then the survivor's answer to the
    # continuation (prompt + their text). Re-tokenized, that text can give other tokens than the victim's (the tiny
    # vocabulary has byte and piece tokens for the same characters), so the rest is checked against that request.
    # How many tokens the survivor made: llama-server's own count, in its last event.
    continued = (chunks[-1].model_extra or {})["timings"]["predicted_n"]
    delivered = max_tokens - continued
    assert 20 <= delivered < max_tokens, delivered
    before, after = "".join(pieces[:delivered]), "".join(pieces[delivered:])
    survivor = client_for(d if victim is a else a)
    uninterrupted = survivor.completions.create(model="tiny-dense", prompt="Once", max_tokens=max_tokens,
                                                temperature=0, extra_body={"cache_prompt": False}).choices[0].text
    assert uninterrupted.startswith(before), first_difference(before, uninterrupted)
    continuation = survivor.completions.create(model="tiny-dense", prompt="Once" + before, max_tokens=continued,
                                               temperature=0, extra_body={"cache_prompt": False}).choices[0].text
    assert after == continuation, first_difference(after, continuation)


def test_demand_for_an_unserved_model_makes_a_standby_node_serve_it(node_factory, tiny_models, bootstrap):
    _, s, c = start_mesh(node_factory, bootstrap, "routing-promote",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("s", ("--standby", "--model", str(tiny_models.other))),
                         ("c", ("--client",)))
    wait_for(lambda: "tiny-dense" in model_ids(c), ROUTING_TIMEOUT_S, "C to list tiny-dense")
    assert "tiny-other" not in model_ids(c)
    assert s.status()["models"] == []

    # A standby node has tiny-other on disk: asking for it is demand, and the answer says "come back soon".
    def ask():
        return httpx.post(c.base_url + "/completions", timeout=30,
                          json={"model": "tiny-other", "prompt": "abc", "max_tokens": 4})

    first = ask()
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "model_loading" and int(first.headers["Retry-After"]) >= 1
    wait_for(lambda: ask().status_code == 200, ROUTING_TIMEOUT_S, "the standby node to serve tiny-other")
    assert [m["id"] for m in s.status()["models"]] == ["tiny-other"]


def test_last_server_leaving_hands_its_model_to_a_standby(node_factory, tiny_models, bootstrap):
    a, s, c = start_mesh(node_factory, bootstrap, "routing-orphan",
                         ("a", ("--model", str(tiny_models.dense))),
                         ("s", ("--standby", "--model", str(tiny_models.dense))),
                         ("c", ("--client",)))
    wait_for(lambda: "tiny-dense" in model_ids(c) and len(c.status()["mesh"]["peers"]) == 3, ROUTING_TIMEOUT_S,
             "the mesh to form")
    backend = a.status()["models"][0]["pid"]
    a.process.send_signal(signal.SIGKILL)
    os.kill(backend, signal.SIGKILL)
    took = wait_for(lambda: [m["id"] for m in s.status()["models"] if m["state"] == "ready"] == ["tiny-dense"],
                    60.0, "the standby to take tiny-dense up")
    assert took < TAKEOVER_LIMIT_S
    wait_for(lambda: httpx.get(c.base_url + "/models", timeout=10).json()["data"][0]["meshp2p"]["nodes"]
             == [s.status()["mesh"]["peer_id"]], ROUTING_TIMEOUT_S, "C to route tiny-dense to the standby")
    assert client_for(c).completions.create(model="tiny-dense", prompt="x", max_tokens=3).choices[0].text


def test_stream_ends_with_an_error_event_when_no_other_server_is_left(node_factory, tiny_models, bootstrap):
    a, c = start_mesh(node_factory, bootstrap, "routing-last",
                      ("a", ("--model", str(tiny_models.dense))),
                      ("c", ("--client",)))
    wait_for(lambda: "tiny-dense" in model_ids(c), ROUTING_TIMEOUT_S, "C to list tiny-dense")
    stream = client_for(c).completions.create(model="tiny-dense", prompt="Once", max_tokens=1500, temperature=0,
                                              stream=True)
    received = 0
    with pytest.raises(openai.APIError) as err:
        for _chunk in stream:
            received += 1
            if received == 20:
                backend = a.status()["models"][0]["pid"]
                a.process.send_signal(signal.SIGKILL)
                os.kill(backend, signal.SIGKILL)
    assert "no other is available" in str(err.value)
    assert 20 <= received < 1500
