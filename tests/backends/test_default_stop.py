"""A model's default stop strings (the embedded model's transcript turns) reach llama-server in the field each
family's endpoint reads: llama-server's /v1/messages ignores OpenAI's `stop` and reads only `stop_sequences`."""

from __future__ import annotations

import json

import pytest

from meshp2p.backends.base import BackendRequest
from meshp2p.backends.local import with_default_stop

STOPS = ("\nUser:", "\nAssistant:")


def request(path: str, **payload: object) -> BackendRequest:
    body = {"model": "m", **payload}
    return BackendRequest(path, body, json.dumps(body).encode(), "m")


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/chat/completions", "stop"), ("/v1/completions", "stop"), ("/v1/responses", "stop"),
    ("/v1/messages", "stop_sequences"),
])
def test_default_stop_goes_in_the_family_field(path, field):
    sent = with_default_stop(request(path), STOPS)
    assert sent.payload[field] == list(STOPS)
    assert json.loads(sent.raw) == sent.payload
    assert ("stop" if field == "stop_sequences" else "stop_sequences") not in sent.payload


@pytest.mark.parametrize(("path", "field"), [("/v1/chat/completions", "stop"), ("/v1/messages", "stop_sequences")])
def test_the_clients_own_stop_wins(path, field):
    mine = request(path, **{field: ["END"]})
    assert with_default_stop(mine, STOPS) is mine


def test_a_model_without_default_stops_is_left_alone():
    plain = request("/v1/messages")
    assert with_default_stop(plain, ()) is plain
