"""The OpenAI API of one real node (real llama-server processes on tiny models), driven by the official client."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

TINY_DENSE = "tiny-dense"
TINY_OTHER = "tiny-other"
TINY_EMBED = "tiny-embed"


@pytest.fixture(scope="module")
def client(tiny_node) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_node.base_url, api_key="unused", max_retries=0, timeout=60)


def test_models_lists_every_local_model_with_its_state(client):
    models = client.models.list().data
    assert [m.id for m in models] == [TINY_DENSE, TINY_OTHER, TINY_EMBED]
    assert all(m.model_extra["meshp2p"]["state"] == "ready" for m in models)
    assert client.models.retrieve(TINY_OTHER).id == TINY_OTHER


def chat(client, model, **kwargs):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say something."}], temperature=0, max_tokens=16,
        seed=1, **kwargs)


def test_chat_non_stream_answers_from_the_requested_model(client):
    dense = chat(client, TINY_DENSE)
    other = chat(client, TINY_OTHER)
    assert dense.model == TINY_DENSE and other.model == TINY_OTHER
    assert dense.choices[0].message.content, "empty answer"
    assert dense.usage.completion_tokens == 16
    # Two different random models answer differently: the request really was routed by `model`.
    assert dense.choices[0].message.content != other.choices[0].message.content


def test_chat_stream_equals_non_stream_at_temperature_zero(client):
    whole = chat(client, TINY_DENSE).choices[0].message.content
    chunks = list(chat(client, TINY_DENSE, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2
    assert text == whole
    assert chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "length" or any(
        c.choices and c.choices[0].finish_reason == "length" for c in chunks)


def test_completions_stream_and_non_stream(client):
    whole = client.completions.create(model=TINY_OTHER, prompt="Once upon", max_tokens=12, temperature=0)
    assert whole.choices[0].text
    streamed = client.completions.create(model=TINY_OTHER, prompt="Once upon", max_tokens=12, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text


def test_default_alias_and_missing_model_go_to_the_first_model(tiny_node, client):
    by_alias = chat(client, "default").choices[0].message.content
    explicit = chat(client, TINY_DENSE).choices[0].message.content
    missing = httpx.post(tiny_node.base_url + "/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": "Say something."}], "temperature": 0, "max_tokens": 16, "seed": 1})
    assert missing.status_code == 200
    assert by_alias == explicit == missing.json()["choices"][0]["message"]["content"]


def test_embeddings_from_an_embedding_model(client):
    result = client.embeddings.create(model=TINY_EMBED, input=["hello mesh", "goodbye mesh"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) == 64
    assert result.data[0].embedding != result.data[1].embedding


def test_embeddings_on_a_chat_model_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=TINY_DENSE, input="hello")
    assert err.value.body["code"] == "embeddings_not_supported"


def test_unknown_model_is_404_listing_the_available_ones(client):
    with pytest.raises(openai.NotFoundError) as err:
        chat(client, "no-such-model")
    message = err.value.body["message"]
    assert "no-such-model" in message
    for model_id in (TINY_DENSE, TINY_OTHER, TINY_EMBED):
        assert model_id in message
    assert err.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_is_400_in_openai_shape(tiny_node, body):
    r = httpx.post(tiny_node.base_url + "/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_model_of_wrong_type_is_400(tiny_node):
    r = httpx.post(tiny_node.base_url + "/chat/completions", json={"model": 7, "messages": []}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_body_too_large_is_413(tiny_node):
    huge = b'{"model": "tiny-dense", "prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    r = httpx.post(tiny_node.base_url + "/completions", content=huge,
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert "limit" in r.json()["error"]["message"]


def test_unknown_endpoint_and_wrong_method_are_openai_errors(tiny_node):
    r = httpx.post(tiny_node.base_url + "/no/such/thing", json={}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"]
    r = httpx.get(tiny_node.base_url + "/chat/completions", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_backend_errors_pass_through_with_their_status(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=TINY_DENSE, messages="not a list")  # type: ignore[arg-type]


def _requests_processing(metrics: str) -> float:
    match = re.search(r"^llamacpp:requests_processing\s+([0-9.e+-]+)$", metrics, re.M)
    assert match, "llama-server exposes requests_processing in /metrics"
    return float(match.group(1))


def test_stream_is_passed_through_while_generating_not_buffered(tiny_node):
    """The first event reaches the client while llama-server is still generating the rest."""
    backend = next(m for m in tiny_node.status()["models"] if m["id"] == TINY_DENSE)
    metrics_url = f"http://127.0.0.1:{backend['port']}/metrics"
    body = {"model": TINY_DENSE, "prompt": "Go", "max_tokens": 1900, "temperature": 0, "stream": True}
    with httpx.stream("POST", tiny_node.base_url + "/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[len("data: "):])["choices"]
        still_generating = _requests_processing(httpx.get(metrics_url, timeout=5).text)
        rest = [line for line in lines if line.startswith("data: ")]
    assert still_generating == 1, "the proxy held the stream back until generation finished"
    assert rest[-1] == "data: [DONE]"
