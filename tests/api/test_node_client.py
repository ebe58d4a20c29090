"""The official Node `openai` package (tests/node, installed from its lock file) against one real node's API.

tests/node/smoke.mjs makes every call once and prints what came back as JSON; these tests check that output. Node
and the package are part of the test set-up (`tools/setup.sh --test`): without them the tests fail, saying so, rather
than skip, since a skipped client test reads like a passing one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import NodeProcess

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
SCRIPT = NODE_DIR / "smoke.mjs"
SETUP_HINT = "run `tools/setup.sh --test` (it runs `npm ci --prefix tests/node` from the lock file)"
SCRIPT_TIMEOUT_S = 240.0
TINY_DENSE = "tiny-dense"
TINY_EMBED = "tiny-embed"
#: tiny_node's embedding model (tools/make_tiny_gguf.py).
TINY_EMBED_DIMS = 64


def node_command(node_dir: Path = NODE_DIR) -> str:
    """The `node` binary, once `node`, `npm` and the openai package in `node_dir` are there; else the test fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if path is None)
        pytest.fail(f"{missing} not found: the Node client tests need Node.js >= 18 and npm; install them, then "
                    f"{SETUP_HINT}")
    if not (node_dir / "node_modules" / "openai" / "package.json").is_file():
        pytest.fail(f"the Node openai package is not installed in {node_dir}/node_modules: {SETUP_HINT}")
    return node


def test_missing_node_clients_fail_with_the_setup_command(tmp_path):
    with pytest.raises(pytest.fail.Exception, match=r"tools/setup\.sh --test"):
        node_command(tmp_path)


@pytest.fixture(scope="module")
def results(tiny_node: NodeProcess) -> dict[str, Any]:
    node = node_command()
    done = subprocess.run([node, str(SCRIPT), tiny_node.base_url, TINY_DENSE, TINY_EMBED], capture_output=True,
                          text=True, timeout=SCRIPT_TIMEOUT_S, cwd=NODE_DIR)
    assert done.returncode == 0, f"smoke.mjs exited with {done.returncode}:\n{done.stderr}"
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def ok(results: dict[str, Any], name: str) -> dict[str, Any]:
    """One call's result, failing the test with the client's error if the call threw."""
    value: dict[str, Any] = results[name]
    assert "error" not in value, f"{name}: {json.dumps(value['error'], indent=1)}"
    return value


def counts(usage: dict[str, Any]) -> dict[str, int]:
    """The token counts of a usage object, without the details that depend on the prompt cache."""
    return {k: v for k, v in usage.items() if isinstance(v, int)}


def test_the_lock_file_pins_the_package_that_ran(results):
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    assert results["sdk"]["version"] == lock["packages"]["node_modules/openai"]["version"]


def test_chat_whole_and_streamed_agree_at_temperature_zero(results):
    budget = results["settings"]["max_tokens"]
    whole, streamed = ok(results, "chat"), ok(results, "chat_stream")
    assert whole["object"] == "chat.completion" and whole["model"] == TINY_DENSE
    assert whole["text"], "empty answer"
    assert len(streamed["pieces"]) > 1, "the answer came in one piece: not streamed"
    assert streamed["text"] == whole["text"]
    assert len(streamed["ids"]) == 1, "every chunk of one stream carries the same id"
    assert whole["finish_reason"] == streamed["finish_reason"] == "length"
    usage = whole["usage"]
    assert usage["completion_tokens"] == budget and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # stream_options.include_usage: the last chunk's usage; its cached_tokens differ (the second ask hits the cache).
    assert counts(streamed["usage"]) == counts(usage)


def test_completions_whole_and_streamed_agree(results):
    whole, streamed = ok(results, "completion"), ok(results, "completion_stream")
    assert whole["text"] and streamed["text"] == whole["text"]
    assert len(streamed["pieces"]) > 1
    assert whole["usage"]["completion_tokens"] == results["settings"]["max_tokens"]


def test_responses_create_and_raw_stream_agree(results):
    budget = results["settings"]["max_tokens"]
    whole, streamed = ok(results, "responses"), ok(results, "responses_stream_raw")
    assert whole["status"] == "completed" and whole["text"]
    assert whole["usage"]["output_tokens"] == budget and whole["usage"]["input_tokens"] > 0
    assert len(streamed["deltas"]) > 1 and streamed["text"] == whole["text"]
    assert streamed["event_types"][0] == "response.created"
    assert streamed["event_types"][-1] == "response.completed"
    assert streamed["status"] == "completed" and counts(streamed["usage"]) == counts(whole["usage"])


def test_responses_stream_helper(results):
    # `client.responses.stream()` rebuilds the response from the events and checks each one against it, which the
    # raw stream above does not; llama-server's thin events pass it because the node completes them in transit
    # (backends/streams/responses_sse.py).
    whole, helper = ok(results, "responses"), ok(results, "responses_stream_helper")
    assert helper["text"] == helper["final_text"] == whole["text"]
    assert helper["status"] == "completed" and counts(helper["usage"]) == counts(whole["usage"])


def test_embeddings(results):
    vectors = ok(results, "embeddings")
    assert vectors["count"] == 2 and vectors["dims"] == [TINY_EMBED_DIMS] * 2
    assert vectors["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize("call", ["chat", "chat_stream", "responses"])
def test_unknown_model_is_the_clients_not_found_error(results, call):
    outcome = results["unknown_model"][call]
    assert "error" in outcome, f"answered instead of failing: {outcome}"
    error = outcome["error"]
    assert error["class"] == "NotFoundError" and error["not_found"] and error["status"] == 404
    assert error["code"] == "model_not_found" and TINY_DENSE in error["message"]
