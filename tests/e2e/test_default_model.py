"""`meshp2p up` with no --model serves the embedded gemma-3-270m, and it answers sensibly."""

from __future__ import annotations

import openai
import pytest

pytestmark = pytest.mark.slow


def test_default_model_serves_real_answers(node_factory, llama_binaries):
    node = node_factory("--threads", "2", "--ctx-size", "2048")
    status = node.wait_ready()
    assert [m["id"] for m in status["models"]] == ["gemma-3-270m"]
    assert (node.home / "models" / "gemma-3-270m-Q4_K_M.gguf").stat().st_size == 253_113_024

    client = openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=60)
    text = client.completions.create(model="gemma-3-270m", prompt="The capital of France is the city of", max_tokens=8,
                                     temperature=0).choices[0].text
    assert "Paris" in text

    reply = client.chat.completions.create(
        messages=[{"role": "user", "content": "What is the capital of France?"}], model="default",
        max_tokens=32, temperature=0)
    answer = reply.choices[0].message.content or ""
    assert "Paris" in answer
    assert "User:" not in answer, "the transcript template's stop strings end the turn"
