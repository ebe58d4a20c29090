"""The decoders of what a user or a peer hands a node outside the gossip formats: GGUF headers (a file a user points
`--model` at, or a peer's download), status pushes as a stream delivers them, and the API's request bodies.

10 000 hostile inputs each. GGUF: bit flips, truncations and splices of small valid files (every value type, nested
arrays, both byte orders, a tensor); only `GGUFFormatError` comes out. Status push: the gossip vectors framed, cut
in two chunks, then EOF, then the same decode a member runs; only `WireError`. API bodies: random bytes, broken JSON
and valid requests with one field wrong, through the body parser and OpenAI's rules; only `ApiError` with a 4xx.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from helpers.fuzz import FUZZ_EXAMPLES, NASTY_VALUES, fuzz, hostile_bytes, mutated
from helpers.wire import load_vectors
from hypothesis import strategies as st

from meshp2p.api.errors import ApiError
from meshp2p.api.validation import parse_request_body, validate_openai_request
from meshp2p.inference.gguf_header import GGUFFormatError, parse_gguf_header
from meshp2p.wire.framing import SingleFrameReader, frame_bytes
from meshp2p.wire.gossip import MAX_GOSSIP_BYTES, decode_gossip
from meshp2p.wire.status import status_from_body

GOSSIP = load_vectors("gossip.json")


def _small_gguf(path: Path, endian: gguf.GGUFEndian) -> bytes:
    writer = gguf.GGUFWriter(path, "llama", endianess=endian)
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_float32("test.float", 0.5)
    writer.add_bool("test.bool", True)
    writer.add_array("test.strings", ["a", "bc", ""])
    writer.add_array("test.ints", list(range(100)))  # longer than max_array_items: read as a SkippedArray
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_tensor("token_embd.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    where = tmp_path_factory.mktemp("gguf")
    files = [_small_gguf(where / f"{e.name}.gguf", e) for e in (gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG)]
    for data in files:
        header = parse_gguf_header(data)
        assert (header.architecture, header.block_count, len(header.tensors)) == ("llama", 2, 1), "valid to start"
    return files


def test_gguf_headers_10k(gguf_files: list[bytes]) -> None:
    def read(data: bytes) -> None:
        header = parse_gguf_header(data, max_array_items=8)
        # What `models`, the planner and the MoE detection read off a header must not raise either.
        _ = (header.name, header.block_count, header.expert_count, header.is_moe, header.context_length,
             header.chat_template, header.is_embedding_model, [t.n_bytes for t in header.tensors])

    count = fuzz(hostile_bytes(gguf_files, max_random=200), read, allowed=(GGUFFormatError,))
    assert count >= FUZZ_EXAMPLES


def test_status_pushes_10k() -> None:
    case = next(c for c in GOSSIP["valid"] if c["type"] == "status" and c["secret"] is None)
    framed = [frame_bytes(bytes.fromhex(c["data"]), max_bytes=MAX_GOSSIP_BYTES)
              for c in GOSSIP["valid"] if c["secret"] is None]
    mesh_id = bytes.fromhex(case["mesh_id"])

    def receive(chunks: tuple[bytes, bytes]) -> None:
        reader = SingleFrameReader(max_bytes=MAX_GOSSIP_BYTES)
        for chunk in chunks:
            reader.feed(chunk)
        decoded = decode_gossip(reader.eof(), mesh_id=mesh_id, topic=case["topic"], now=case["decode_now"],
                                secret=None)
        status_from_body(decoded.body)

    hostile = st.tuples(hostile_bytes(framed), st.integers(min_value=0)).map(
        lambda t: (t[0][: t[1] % (len(t[0]) + 1)], t[0][t[1] % (len(t[0]) + 1):]))
    assert fuzz(hostile, receive) >= FUZZ_EXAMPLES


CHAT = "/v1/chat/completions"
VALID_REQUESTS: list[dict[str, Any]] = [
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0.5,
     "stop": ["a", "b"], "n": 1, "stream": True},
    {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}],
     "max_completion_tokens": 4, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    {"model": "m", "prompt": "x", "max_tokens": 3, "stop": "q"},
]


def _json(value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=True).encode()
    except (TypeError, ValueError):  # bytes or int keys from the hostile values: not JSON at all
        return repr(value).encode()


def test_api_request_bodies_10k() -> None:
    valid = [json.dumps(r).encode() for r in VALID_REQUESTS]
    hostile = (hostile_bytes(valid) | mutated(VALID_REQUESTS).map(_json)
               | st.sampled_from(NASTY_VALUES).map(_json) | st.just(b"[" * 50_000) | st.just(b"9" * 5000))

    def handle(raw: bytes) -> None:
        try:
            for path in (CHAT, "/v1/completions"):
                validate_openai_request(path, parse_request_body(raw))
        except ApiError as exc:
            assert 400 <= exc.status < 500, f"{exc.status} for a client's mistake"
            raise

    assert fuzz(hostile, handle, allowed=(ApiError,)) >= FUZZ_EXAMPLES
