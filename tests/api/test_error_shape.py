"""One error shape on both ports: the console's refusals, a blackboard refusal and an unknown path answer
`{"error": {"message", "type", "param", "code", "hint"}}` like the OpenAI API does (quart's test client, no port)."""

from __future__ import annotations

from meshp2p.api.console_app import create_console_app
from meshp2p.api.errors import api_error
from meshp2p.errors import PostRefused

KEYS = {"message", "type", "param", "code", "hint"}


async def _no_drop(model_id: str) -> bool:
    return False


async def test_the_console_answers_every_error_in_the_api_shape():
    client = create_console_app(lambda: {"ok": True}, _no_drop, None).test_client()
    for method, path, status in (("POST", "/api/models/nope/drop", 404), ("GET", "/no/such/page", 404),
                                 ("DELETE", "/api/status", 405), ("GET", "/api/blackboard", 503)):
        response = await client.open(path, method=method, scope_base={"client": ("127.0.0.1", 50000)})
        body = await response.get_json()
        assert response.status_code == status, (path, body)
        assert set(body["error"]) == KEYS and body["error"]["message"], (path, body)
    solo = await (await client.get("/api/blackboard", scope_base={"client": ("127.0.0.1", 50000)})).get_json()
    assert "--solo" in solo["error"]["message"] and solo["error"]["hint"]
    # A client address in the request scope only (TEST-NET-1): nothing is ever sent to it.
    stranger = await client.post("/api/models/nope/drop", scope_base={"client": ("192.0.2.7", 50000)})
    assert stranger.status_code == 403 and set((await stranger.get_json())["error"]) == KEYS


def test_a_refused_post_gets_its_status_from_its_reason():
    statuses = {reason: api_error(PostRefused("no", reason=reason)).status
                for reason in ("empty", "too_long", "bad_tags", "rate_limited", "not_found", "ambiguous")}
    assert statuses == {"empty": 400, "too_long": 413, "bad_tags": 400, "rate_limited": 429, "not_found": 404,
                        "ambiguous": 400}
