"""API keys and rate limits on real nodes, with the official clients (openai, anthropic; max_retries=0).

One mesh for the module: a bootstrap, a serving node with keys on (tiny dense model) and a `--client` node of the
same mesh without keys, whose requests reach the model through the tunnel: the serving node asks them no key.
Keys are made with the `meshp2p keys` command itself (run in this process, with MESHP2P_HOME set for it).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers.processes import BootstrapProcess, NodeProcess, TinyModels, start_bootstrap, start_node, stop_all, wait_for
from prometheus_client.parser import text_string_to_metric_families

from meshp2p.cli.main import main as meshp2p_main

TINY_DENSE = "tiny-dense"
MESH_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 60.0
USAGE_SAVED_TIMEOUT_S = 15.0
QUESTION = [{"role": "user", "content": "Tell me about meshes."}]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels, llama_binaries: Any
         ) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("keys-mesh")
    boot: BootstrapProcess = start_bootstrap(root / "bootstrap")
    nodes: list[NodeProcess] = []
    try:
        serving_home = root / "serving"
        first = create_key(serving_home, "--name", "first")  # keys on from the start
        common = ("--mesh-name", "keys-test", "--bootstrap", boot.addr, "--threads", "1")
        nodes.append(start_node(serving_home, "--model", str(tiny_models.dense), *common))
        nodes.append(start_node(root / "client", "--client", *common))
        for node in nodes:
            node.wait_ready()
        client = nodes[1]
        wait_for(lambda: TINY_DENSE in {m["id"] for m in httpx.get(client.base_url + "/models",
                                                                   timeout=10).json()["data"]},
                 MESH_TIMEOUT_S, "the client node to see the model")
        yield {"serving": nodes[0], "client": client, "first": first["key"], "keys": [first["key"]]}
    finally:
        try:
            stop_all(nodes)
        finally:
            assert boot.stop() == 0, boot.log_path.read_text()


def keys_command(home: Path, *args: str) -> str:
    """`meshp2p keys ARGS` for `home`, in this process; its stdout."""
    out = io.StringIO()
    before = os.environ.get("MESHP2P_HOME")
    os.environ["MESHP2P_HOME"] = str(home)
    try:
        with contextlib.redirect_stdout(out):
            assert meshp2p_main(["keys", *args]) == 0
    finally:
        if before is None:
            del os.environ["MESHP2P_HOME"]
        else:
            os.environ["MESHP2P_HOME"] = before
    return out.getvalue()


def create_key(home: Path, *args: str) -> dict[str, Any]:
    made: dict[str, Any] = json.loads(keys_command(home, "create", "--json", *args))
    return made


def new_key(mesh: dict[str, Any], *args: str) -> dict[str, Any]:
    made = create_key(mesh["serving"].home, *args)
    mesh["keys"].append(made["key"])
    return made


def oai(node: NodeProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S)


def claude(node: NodeProcess, key: str | None = None, *, bearer: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{node.api_port}", api_key=key, auth_token=bearer,
                               max_retries=0, timeout=REQUEST_TIMEOUT_S)


def ask_openai(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model=TINY_DENSE, messages=QUESTION, max_tokens=5)  # type: ignore[arg-type]


def ask_anthropic(client: anthropic.Anthropic) -> Any:
    return client.messages.create(model=TINY_DENSE, max_tokens=5, messages=QUESTION)  # type: ignore[arg-type]


def test_missing_wrong_and_revoked_keys_are_401_in_each_familys_shape(mesh: dict[str, Any]) -> None:
    node = mesh["serving"]
    root = f"http://127.0.0.1:{node.api_port}"
    assert httpx.get(root + "/health", timeout=10).status_code == 200, "/health needs no key"
    missing = httpx.get(node.base_url + "/models", timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert missing.json()["error"]["code"] == "missing_api_key" and missing.headers["www-authenticate"] == "Bearer"
    anthropic_missing = httpx.post(root + "/v1/messages", json={"model": TINY_DENSE}, timeout=10)
    assert anthropic_missing.status_code == 401
    assert anthropic_missing.json() == {"type": "error", "error": {
        "type": "authentication_error", "message": anthropic_missing.json()["error"]["message"]}}

    with pytest.raises(openai.AuthenticationError) as wrong:
        ask_openai(oai(node, "mp-sk-not-a-key"))
    assert wrong.value.status_code == 401 and "not valid" in wrong.value.message
    with pytest.raises(anthropic.AuthenticationError):
        ask_anthropic(claude(node, "mp-sk-not-a-key"))

    # A key made while the node runs works at once; revoked, it is refused at once: no restart either time.
    later = new_key(mesh, "--name", "later")
    assert ask_openai(oai(node, later["key"])).choices
    keys_command(node.home, "revoke", "later")
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        ask_openai(oai(node, later["key"]))
    with pytest.raises(anthropic.AuthenticationError, match="revoked"):
        ask_anthropic(claude(node, later["key"]))


def test_bearer_and_x_api_key_both_work(mesh: dict[str, Any]) -> None:
    node, key = mesh["serving"], mesh["first"]
    assert [m.id for m in oai(node, key).models.list()] == [TINY_DENSE]
    assert ask_openai(oai(node, key)).choices[0].message.content is not None
    assert ask_anthropic(claude(node, key)).content, "x-api-key (Anthropic's SDK with api_key)"
    assert ask_anthropic(claude(node, bearer=key)).content, "Bearer (Anthropic's SDK with auth_token)"
    raw = httpx.get(node.base_url + "/models", headers={"x-api-key": key}, timeout=10)
    assert raw.status_code == 200


def test_a_keys_rate_is_429_with_retry_after(mesh: dict[str, Any]) -> None:
    node = mesh["serving"]
    refused_before = _refusals(node, "429", "rate_limited")
    slow = new_key(mesh, "--name", "slow", "--rate", "2")["key"]
    client = oai(node, slow)
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        client.models.list()
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert limited.value.code == "rate_limited"
    with pytest.raises(anthropic.RateLimitError) as anthropic_limited:
        ask_anthropic(claude(node, slow))
    assert 1 <= int(anthropic_limited.value.response.headers["retry-after"]) <= 60
    assert ask_openai(oai(node, mesh["first"])).choices, "other keys are not limited by it"
    assert _refusals(node, "429", "rate_limited") == refused_before + 2, "/metrics counts the gate's refusals"


def _refusals(node: NodeProcess, status: str, code: str) -> float:
    text = httpx.get(node.console_url + "/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "meshp2p_api_refusals_total" and s.labels == {"status": status, "code": code})


def _hold_a_request(node: NodeProcess, key: str) -> socket.socket:
    """A request whose body never finishes arriving: in flight until the socket closes."""
    sock = socket.create_connection(("127.0.0.1", node.api_port), timeout=10)
    sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
    return sock


def test_a_keys_concurrency_is_429_and_slots_come_back(mesh: dict[str, Any]) -> None:
    node = mesh["serving"]
    one = new_key(mesh, "--name", "one-at-a-time", "--concurrent", "1")["key"]
    held = _hold_a_request(node, one)
    try:
        wait_for(lambda: httpx.get(node.base_url + "/models", headers={"x-api-key": one},
                                   timeout=10).status_code == 429, 10, "the held request to take the slot")
        with pytest.raises(openai.RateLimitError) as busy:
            ask_openai(oai(node, one))
        assert busy.value.code == "too_many_concurrent" and busy.value.response.headers["retry-after"] == "1"
        with pytest.raises(anthropic.RateLimitError):
            ask_anthropic(claude(node, one))
    finally:
        held.close()
    client = oai(node, one)
    wait_for(lambda: httpx.get(node.base_url + "/models", headers={"x-api-key": one}, timeout=10).status_code
             == 200, 10, "a client that went away to give its slot back")
    for _ in range(3):  # a stream read to its end gives its slot back
        stream = client.chat.completions.create(model=TINY_DENSE, messages=QUESTION, max_tokens=8,  # type: ignore
                                                stream=True)
        assert [c for c in stream]
    stream = client.chat.completions.create(model=TINY_DENSE, messages=QUESTION, max_tokens=50,  # type: ignore
                                            stream=True)
    next(iter(stream))
    stream.close()  # and so does one its reader left
    wait_for(lambda: httpx.get(node.base_url + "/models", headers={"x-api-key": one}, timeout=10).status_code
             == 200, 10, "a stream left early to give its slot back")


def test_keys_list_shows_the_nodes_requests_and_tokens(mesh: dict[str, Any]) -> None:
    node = mesh["serving"]
    made = new_key(mesh, "--name", "counted")
    key = made["key"]
    whole = ask_openai(oai(node, key))
    tokens_in, tokens_out = whole.usage.prompt_tokens, whole.usage.completion_tokens
    stream = oai(node, key).chat.completions.create(model=TINY_DENSE, messages=QUESTION, max_tokens=6,  # type: ignore
                                                    stream=True, stream_options={"include_usage": True})
    usage = [c.usage for c in stream if c.usage is not None][-1]
    tokens_in, tokens_out = tokens_in + usage.prompt_tokens, tokens_out + usage.completion_tokens
    with claude(node, key).messages.stream(model=TINY_DENSE, max_tokens=7, messages=QUESTION) as events:  # type: ignore
        final = events.get_final_message()
    tokens_in, tokens_out = tokens_in + final.usage.input_tokens, tokens_out + final.usage.output_tokens
    assert tokens_out == 5 + 6 + 7

    def counted() -> dict[str, Any] | None:
        entry: dict[str, Any] = next(k for k in json.loads(keys_command(node.home, "list", "--json"))["keys"]
                                     if k["id"] == made["id"])
        return entry if entry["requests"] == 3 and entry["tokens_out"] == tokens_out else None

    wait_for(counted, USAGE_SAVED_TIMEOUT_S, "the node to save the key's usage")
    entry = counted()
    assert entry is not None and entry["tokens_in"] == tokens_in and entry["last_used"] is not None


def test_console_writes_need_a_key_or_the_console_token(mesh: dict[str, Any]) -> None:
    node = mesh["serving"]
    post = node.console_url + "/api/blackboard/post"
    refused = httpx.post(post, json={"text": "no key"}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert httpx.post(node.console_url + "/api/models/nothing/drop", timeout=10).status_code == 401
    status = httpx.get(node.console_url + "/api/status", timeout=10)
    assert status.status_code == 200 and status.json()["node"]["api_keys"] is True, "reads stay open"
    assert mesh["client"].status()["node"]["api_keys"] is False
    with_key = httpx.post(post, json={"text": "with a key"}, headers={"Authorization": f"Bearer {mesh['first']}"},
                          timeout=10)
    assert with_key.status_code == 201, with_key.text
    env = {k: v for k, v in os.environ.items() if k != "MESHP2P_BOOTSTRAP"}
    for command in (["blackboard", "post", "from the cli"], ["drop", "no-such-model"]):
        done = subprocess.run([sys.executable, "-m", "meshp2p", *command], capture_output=True, text=True,
                              timeout=60, env={**env, "MESHP2P_HOME": str(node.home), "COLUMNS": "200"})
        if command[0] == "blackboard":
            assert done.returncode == 0, done.stderr  # the CLI sent the node's console token
        else:
            assert "does not serve" in done.stderr, done.stderr  # past the key check, to the drop itself


def test_tunnelled_requests_need_no_key_and_no_key_file_holds_a_key(mesh: dict[str, Any]) -> None:
    client_node, serving = mesh["client"], mesh["serving"]
    answer = ask_openai(oai(client_node, "unused"))
    assert answer.choices and answer.model
    assert ask_anthropic(claude(client_node, "unused")).content
    # The client node's requests went through the tunnel: the serving node, which asks everyone else a key,
    # answered them (it is the only one that serves the model).
    with pytest.raises(openai.AuthenticationError):
        ask_openai(oai(serving, "unused"))
    for path in serving.home.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            data = path.read_bytes()
            assert not any(key.encode() in data for key in mesh["keys"]), f"{path} holds a key"
    assert (serving.home / "keys.json").stat().st_mode & 0o777 == 0o600


def _lan_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            address: str = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_listen_all_without_a_key_warns_and_limits_other_addresses(tmp_path: Path) -> None:
    node = start_node(tmp_path / "open", "--client", "--solo", "--listen-all", "--rate-limit", "2")
    try:
        node.wait_ready()
        wait_for(lambda: "anyone on the network can use" in node.output(), 10, "the --listen-all warning")
        lan = _lan_address()
        if lan is not None:
            url = f"http://{lan}:{node.api_port}/v1/models"
            assert [httpx.get(url, timeout=10).status_code for _ in range(3)] == [200, 200, 429]
        assert all(httpx.get(node.base_url + "/models", timeout=10).status_code == 200 for _ in range(4)), \
            "loopback clients have no address limit"
    finally:
        stop_all([node])
    create_key(node.home)
    keyed = start_node(node.home, "--client", "--solo", "--listen-all")
    try:
        keyed.wait_ready()
        wait_for(lambda: "API keys" in keyed.output(), 10, "the summary to say keys are on")
        assert "anyone on the network" not in keyed.output()
    finally:
        stop_all([keyed])
