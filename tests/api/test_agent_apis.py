"""Every model endpoint of backends/endpoints.py, driven by the official clients (openai, anthropic), on a serving
node and on a `--client` node that reaches the model only through the tunnel: both must answer alike.

Real `meshp2p up` processes and a real bootstrap on loopback, real llama-server on tiny models.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from helpers.processes import BootstrapProcess, NodeProcess, TinyModels, start_bootstrap, start_node, stop_all, wait_for

from meshp2p.backends.endpoints import ENDPOINTS

TINY_DENSE = "tiny-dense"
TINY_EMBED = "tiny-embed"
MESH_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
SIDES = ("serving", "client")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels, llama_binaries):
    """A serving node (dense + embedding model) and an API-only node of the same mesh."""
    root = tmp_path_factory.mktemp("agent-mesh")
    boot: BootstrapProcess = start_bootstrap(root / "bootstrap")
    nodes: list[NodeProcess] = []
    try:
        common = ("--mesh-name", "agents", "--bootstrap", boot.addr, "--threads", "1")
        nodes.append(start_node(root / "serving", "--model", str(tiny_models.dense), "--model",
                                str(tiny_models.embed), *common))
        nodes.append(start_node(root / "client", "--client", *common))
        for node in nodes:
            node.wait_ready()
        client = nodes[1]
        wait_for(lambda: {TINY_DENSE, TINY_EMBED} <= {
            m["id"] for m in httpx.get(client.base_url + "/models", timeout=10).json()["data"]},
            MESH_TIMEOUT_S, "the client node to see both models")
        yield dict(zip(SIDES, nodes, strict=True))
    finally:
        try:
            stop_all(nodes)
        finally:
            assert boot.stop() == 0, boot.log_path.read_text()


def openai_client(node: NodeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S)


def anthropic_client(node: NodeProcess) -> anthropic.Anthropic:
    # The Anthropic SDK appends /v1/messages itself: its base URL is the server's root.
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{node.api_port}", api_key="unused", max_retries=0,
                               timeout=REQUEST_TIMEOUT_S)


def root_url(node: NodeProcess) -> str:
    return f"http://127.0.0.1:{node.api_port}"


QUESTION = "Tell me about meshes."


def responses_text(client: openai.OpenAI, **kwargs) -> str:
    return client.responses.create(model=TINY_DENSE, input=QUESTION, temperature=0, max_output_tokens=20,
                                   **kwargs).output_text


@pytest.mark.parametrize("side", SIDES)
def test_responses_stream_and_not_give_the_same_text_on_both_nodes(mesh, side):
    client = openai_client(mesh[side])
    whole = client.responses.create(model=TINY_DENSE, input=QUESTION, temperature=0, max_output_tokens=20)
    assert whole.status == "completed" and whole.output_text
    assert whole.usage is not None and whole.usage.output_tokens == 20
    with client.responses.stream(model=TINY_DENSE, input=QUESTION, temperature=0, max_output_tokens=20) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) > 2
    assert "".join(deltas) == whole.output_text == final.output_text
    if side == "client":  # the tunnel changes nothing
        assert whole.output_text == responses_text(openai_client(mesh["serving"]))


@pytest.mark.parametrize("side", SIDES)
def test_responses_input_tokens_counts_the_prompt(mesh, side):
    short = httpx.post(mesh[side].base_url + "/responses/input_tokens",
                       json={"model": TINY_DENSE, "input": "hi"}, timeout=REQUEST_TIMEOUT_S)
    longer = httpx.post(mesh[side].base_url + "/responses/input_tokens",
                        json={"model": TINY_DENSE, "input": "hi " * 40}, timeout=REQUEST_TIMEOUT_S)
    assert short.status_code == longer.status_code == 200, short.text
    assert 0 < short.json()["input_tokens"] < longer.json()["input_tokens"]


def messages_text(message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.parametrize("side", SIDES)
def test_anthropic_messages_stream_and_not_on_both_nodes(mesh, side):
    client = anthropic_client(mesh[side])
    # anthropic>=2 takes no `temperature` argument (newer Claude models fix it); llama-server still reads it.
    ask = dict(model=TINY_DENSE, max_tokens=20, extra_body={"temperature": 0},
               messages=[{"role": "user", "content": QUESTION}])
    whole = client.messages.create(**ask)
    assert whole.type == "message" and whole.role == "assistant"
    assert whole.stop_reason == "max_tokens" and whole.usage.output_tokens == 20
    text = messages_text(whole)
    assert text
    with client.messages.stream(**ask) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 2 and "".join(pieces) == text == messages_text(final)
    if side == "client":
        assert text == messages_text(anthropic_client(mesh["serving"]).messages.create(**ask))


@pytest.mark.parametrize("side", SIDES)
def test_anthropic_count_tokens(mesh, side):
    client = anthropic_client(mesh[side])
    short = client.messages.count_tokens(model=TINY_DENSE, messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(model=TINY_DENSE, messages=[{"role": "user", "content": "hi " * 40}])
    assert 0 < short.input_tokens < longer.input_tokens


@pytest.mark.parametrize("side", SIDES)
def test_anthropic_errors_raise_the_sdks_own_classes(mesh, side):
    client = anthropic_client(mesh[side])
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error" and "no-such-model" in missing.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=TINY_DENSE, max_tokens=5, extra_body={"temperature": 1.5},
                               messages=[{"role": "user", "content": "x"}])
    assert bad.value.body["error"]["type"] == "invalid_request_error" and "temperature" in bad.value.message
    # A path that does not exist under the Anthropic prefix is Anthropic's 404 too.
    typo = httpx.post(root_url(mesh[side]) + "/v1/messages/count", json={}, timeout=10)
    assert typo.status_code == 404 and typo.json()["type"] == "error"
    assert typo.json()["error"]["type"] == "not_found_error"
    # Not JSON at all: still Anthropic's shape.
    junk = httpx.post(root_url(mesh[side]) + "/v1/messages", content=b"{", timeout=10,
                      headers={"content-type": "application/json"})
    assert junk.status_code == 400 and junk.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("side", SIDES)
def test_llama_server_errors_reach_anthropic_clients_in_anthropic_shape(mesh, side):
    """llama-server answers its own errors OpenAI-shaped; the node translates them for /v1/messages."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    reply = httpx.post(root_url(mesh[side]) + "/v1/messages", timeout=REQUEST_TIMEOUT_S, json={
        "model": TINY_DENSE, "max_tokens": 5, "messages": [{"role": "user", "content": [image]}]})
    # llama-server b11434 answers this with 500 `{"error": {...}}`: the status stays, the shape becomes Anthropic's.
    assert reply.status_code == 500, reply.text
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["message"].startswith("image input is not supported")


@pytest.mark.parametrize("side", SIDES)
def test_tokenize_detokenize_and_apply_template_route_by_model(mesh, side):
    root = root_url(mesh[side])
    tokens = httpx.post(root + "/tokenize", json={"model": TINY_DENSE, "content": "hello mesh"}, timeout=10)
    assert tokens.status_code == 200, tokens.text
    ids = tokens.json()["tokens"]
    assert ids and all(isinstance(t, int) for t in ids)
    text = httpx.post(root + "/detokenize", json={"model": TINY_DENSE, "tokens": ids}, timeout=10)
    assert text.status_code == 200 and text.json()["content"].strip() == "hello mesh"
    prompt = httpx.post(root + "/apply-template", timeout=10, json={
        "model": TINY_DENSE, "messages": [{"role": "user", "content": "hello"}]})
    assert prompt.status_code == 200 and "<|im_start|>user\nhello<|im_end|>" in prompt.json()["prompt"]


@pytest.mark.parametrize("side", SIDES)
def test_rerank_on_a_model_that_is_not_a_reranker_is_a_clear_400(mesh, side):
    reply = httpx.post(root_url(mesh[side]) + "/v1/rerank", timeout=10, json={
        "model": TINY_EMBED, "query": "q", "documents": ["a", "b"]})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "rerank_not_supported"


def test_every_routed_path_is_answered_not_404(mesh):
    """The table is the router: each of its paths reaches a model server through the client node."""
    client = mesh["client"]
    for path in ENDPOINTS:
        reply = httpx.post(root_url(client) + path, json={"model": TINY_DENSE}, timeout=REQUEST_TIMEOUT_S)
        assert reply.status_code != 404, (path, reply.text)


def test_unknown_paths_are_404_in_openai_shape(mesh):
    reply = httpx.post(mesh["client"].base_url + "/slots", json={}, timeout=10)
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "not_found_error"
