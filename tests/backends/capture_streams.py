"""Record real llama-server streams for tests/backends/test_stream_formats.py (run it again after a llama.cpp bump):

    .venv/bin/python tests/backends/capture_streams.py

It starts one `meshp2p up --solo` on the tiny dense model of tests/conftest.py, asks its llama-server directly (not
the node's API, which rewrites streams) for one streamed answer in each format, then, as failover would, for the
continuation of that answer after its first `CUT_AFTER` text deltas (the body the format's tracker builds), and
writes the bytes as they came to tests/backends/streams/<format>.sse and <format>-continued.sse. The test splices
the two as a failover does; the continuation also shows whether llama-server repeats a prefilled assistant text.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent)]  # this checkout's meshp2p, and tests/helpers

from helpers.processes import start_node, stop_all  # noqa: E402
from make_tiny_gguf import write_tiny_gguf  # noqa: E402

from meshp2p.backends.endpoints import CHAT_PATH, COMPLETIONS_PATH, MESSAGES_PATH, RESPONSES_PATH  # noqa: E402
from meshp2p.backends.streams import tracker_for  # noqa: E402
from meshp2p.backends.streams.sse import SseParser  # noqa: E402

OUT = HERE / "streams"
QUESTION = "Tell me about meshes."
MAX_TOKENS = 24
#: Text deltas of the first answer the continuation carries on from.
CUT_AFTER = 8

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (CHAT_PATH, {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": MAX_TOKENS,
                         "stream_options": {"include_usage": True}}),
    "completions": (COMPLETIONS_PATH, {"prompt": "Once", "max_tokens": MAX_TOKENS}),
    "responses": (RESPONSES_PATH, {"input": QUESTION, "max_output_tokens": MAX_TOKENS}),
    "messages": (MESSAGES_PATH, {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": MAX_TOKENS}),
}


def stream(url: str, body: dict[str, Any]) -> bytes:
    with httpx.stream("POST", url, json=body, timeout=60) as reply:
        reply.raise_for_status()
        return b"".join(reply.iter_raw())


def cut(path: str, payload: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The continuation body after the first CUT_AFTER text deltas of `raw`."""
    tracker = tracker_for(path, payload, now=time.time())
    assert tracker is not None
    for event in SseParser().feed(raw):
        tracker.take(event)
        if tracker.delivered.tokens == CUT_AFTER:  # type: ignore[attr-defined]
            break
    body = tracker.continuation(payload)
    assert body is not None
    return body


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_gguf(Path(tmp) / "tiny-dense.gguf", "dense", seed=1)
        node = start_node(Path(tmp) / "node", "--solo", "--model", str(model), "--threads", "1")
        try:
            status = node.wait_ready()
            base = f"http://127.0.0.1:{status['models'][0]['port']}"
            for name, (path, extra) in REQUESTS.items():
                payload = {"model": "tiny-dense", "stream": True, "temperature": 0, **extra}
                whole = stream(base + path, payload)
                (OUT / f"{name}.sse").write_bytes(whole)
                body = cut(path, payload, whole)
                (OUT / f"{name}-continued.sse").write_bytes(stream(base + path, body))
                (OUT / f"{name}-continued.json").write_text(json.dumps(body, indent=1) + "\n")
                print(f"{name}: {len(whole)} bytes, continued after {CUT_AFTER} deltas")
        finally:
            stop_all([node])


if __name__ == "__main__":
    main()
