"""`/metrics` across a mesh: a request a client node sends to a member counts as route `peer` there and as route
`tunnel` on the member whose server answered it; each sees the other in its peers gauge."""

from __future__ import annotations

from typing import Any

import httpx
import openai
from helpers.processes import wait_for
from prometheus_client.parser import text_string_to_metric_families

ROUTING_TIMEOUT_S = 60.0


def _samples(node: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(node.console_url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_request_through_the_mesh_counts_as_peer_on_the_asker_and_tunnel_on_the_server(
        node_factory, tiny_models, bootstrap) -> None:
    mesh = ("--mesh-name", "metrics-routes", "--bootstrap", bootstrap.addr, "--threads", "1")
    server = node_factory("--model", str(tiny_models.dense), *mesh, name="server")
    asker = node_factory("--client", *mesh, name="asker")
    server.wait_ready()
    asker.wait_ready()
    wait_for(lambda: any(m["id"] == "tiny-dense" for m in httpx.get(asker.base_url + "/models", timeout=10)
                         .json()["data"] if m["meshp2p"]["state"] != "wanted"), ROUTING_TIMEOUT_S,
             "the asker to list the server's model")

    client = openai.OpenAI(base_url=asker.base_url, api_key="unused", max_retries=0, timeout=60)
    answer = client.chat.completions.create(model="tiny-dense", max_tokens=4,
                                            messages=[{"role": "user", "content": "hello"}])
    assert answer.usage is not None

    def labels(route: str, *more: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((("model", "tiny-dense"), ("route", route), *more)))

    on_asker, on_server = _samples(asker), _samples(server)
    assert on_asker[("meshp2p_requests_total", labels("peer", ("status_class", "2xx")))] == 1
    assert on_asker[("meshp2p_output_tokens_total", labels("peer"))] == answer.usage.completion_tokens
    assert on_server[("meshp2p_requests_total", labels("tunnel", ("status_class", "2xx")))] == 1
    assert on_server[("meshp2p_input_tokens_total", labels("tunnel"))] == answer.usage.prompt_tokens
    assert ("meshp2p_requests_total", labels("local", ("status_class", "2xx"))) not in on_server
    assert on_asker[("meshp2p_peers", ())] >= 1 and on_server[("meshp2p_peers", ())] >= 1
    assert ("meshp2p_llama_server_up", (("model", "tiny-dense"),)) not in on_asker  # a client runs no llama-server
