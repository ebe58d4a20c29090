"""OpenAI's request rules where llama-server is lax: unit rules on plain dicts, then the official client on a node."""

from __future__ import annotations

import httpx
import openai
import pytest

from meshp2p.api.errors import ApiError
from meshp2p.api.validation import parse_request_body, validate_openai_request

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]

REFUSED = [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"n": 2}, "n"),
    ({"n": 0}, "n"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.01}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"messages": "hi"}, "messages"),
    ({"messages": {"role": "user"}}, "messages"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [1]}, "stop"),
    ({"stop": 7}, "stop"),
]


@pytest.mark.parametrize(("fields", "param"), REFUSED)
def test_refused_with_the_field_named(fields, param):
    with pytest.raises(ApiError) as caught:
        validate_openai_request(CHAT, {"model": "m", "messages": OK_MESSAGES, **fields})
    assert (caught.value.status, caught.value.param, caught.value.type) == (400, param, "invalid_request_error")


@pytest.mark.parametrize("fields", [
    {}, {"max_tokens": 1}, {"max_tokens": None}, {"n": 1}, {"temperature": 0}, {"temperature": 2},
    {"temperature": 0.7}, {"stop": "x"}, {"stop": ["a", "b", "c", "d"]}, {"stop": None},
])
def test_accepted(fields):
    validate_openai_request(CHAT, {"model": "m", "messages": OK_MESSAGES, **fields})


#: Bodies that are not a JSON object, the last two of which json.loads answers with ValueError and RecursionError.
NOT_AN_OBJECT = [b"", b"{", b"\xff\xfe", b"[1]", b'"text"', b"null", b"1" * 5000, b"[" * 100_000]


@pytest.mark.parametrize("raw", NOT_AN_OBJECT, ids=lambda r: repr(r[:12]))
def test_a_body_that_is_not_a_json_object_is_a_400(raw):
    with pytest.raises(ApiError) as caught:
        parse_request_body(raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_official_client_gets_bad_request_before_anything_is_proxied(tiny_node):
    client = openai.OpenAI(base_url=tiny_node.base_url, api_key="unused", max_retries=0, timeout=60)
    served = tiny_node.status()["models"][0]["requests"]
    for kwargs, param in (({"max_tokens": 0}, "max_tokens"), ({"n": 2}, "n"), ({"temperature": 3}, "temperature"),
                          ({"stop": ["1", "2", "3", "4", "5"]}, "stop")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny-dense", messages=OK_MESSAGES, **kwargs)
        assert caught.value.body["param"] == param
        assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny-dense", prompt="x", max_tokens=0)
    assert tiny_node.status()["models"][0]["requests"] == served, "a refused request reached llama-server"
    answer = client.chat.completions.create(model="tiny-dense", messages=OK_MESSAGES, max_tokens=3, temperature=0)
    assert answer.choices[0].message.content
    for raw in (b"1" * 5000, b"[" * 100_000):
        refused = httpx.post(f"{tiny_node.base_url}/chat/completions", content=raw,
                             headers={"content-type": "application/json"}, timeout=30)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_json"
