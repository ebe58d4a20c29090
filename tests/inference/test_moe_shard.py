"""Expert shards (inference/moe_shard.py) of the tiny MoE models (tools/make_tiny_gguf.py: llama-style Mixtral
experts and qwen3moe, 8 experts, 2 used per token): the bytes land where they belong, `gguf`'s own reader reads the
result, and a real llama-server loads it. A shard holding every expert in a permuted order answers the
original's tokens at temperature 0 (the slices and router rows are cut consistently); smaller shards load and
answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import httpx
import pytest
from helpers.processes import llama_server as run_llama_server
from make_tiny_gguf import write_tiny_gguf

from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.moe_shard import ShardError, expert_layer, write_expert_shard

VARIANTS = ("moe", "qwen3moe")
EXPERTS = 8
PERMUTED = [5, 2, 7, 0, 3, 6, 1, 4]
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module", params=VARIANTS)
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("moe") / f"tiny-{request.param}.gguf"
    write_tiny_gguf(path, request.param, experts=EXPERTS, used=2)
    return path


def slices(path: Path, name: str) -> list[bytes]:
    """A tensor's bytes cut into its expert count's equal slices (a trunk tensor: one slice)."""
    header = read_gguf_header(path)
    tensor = next(t for t in header.tensors if t.name == name)
    with path.open("rb") as f:
        f.seek(header.data_offset + tensor.offset)
        data = f.read(tensor.n_bytes or 0)
    n = header.expert_count or 1
    parts = n if expert_layer(tensor, n) is not None else 1
    size = len(data) // parts
    return [data[i * size:(i + 1) * size] for i in range(parts)]


def test_a_shard_holds_the_trunk_whole_and_the_kept_experts_in_order(model: Path, tmp_path: Path) -> None:
    keep = [6, 1, 3]
    report = write_expert_shard(model, tmp_path / "shard.gguf", keep)
    original, shard = read_gguf_header(model), read_gguf_header(report.path)
    assert shard.expert_count == 3 and shard.expert_used_count == original.expert_used_count
    assert [t.name for t in shard.tensors] == [t.name for t in original.tensors]
    cut = 0
    for before, after in zip(original.tensors, shard.tensors, strict=True):
        theirs, ours = slices(model, before.name), slices(report.path, after.name)
        if expert_layer(before, EXPERTS) is None:
            assert after.shape == before.shape and ours == theirs, before.name
        else:
            cut += 1
            assert after.shape == (*before.shape[:-1], 3) and ours == [theirs[e] for e in keep], before.name
    assert cut == 4 * (original.block_count or 0), "router and three projections in every block"
    assert report.bytes_written == report.path.stat().st_size and report.bytes_left_out > 0
    assert not report.path.with_name("shard.gguf.partial").exists()
    reader = gguf.GGUFReader(report.path)  # the reference reader agrees on every tensor
    assert {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors} == {t.name: t.shape for t in shard.tensors}


def test_per_layer_expert_lists_and_refusals(model: Path, tmp_path: Path) -> None:
    layers = read_gguf_header(model).block_count or 0
    per_layer = [[(layer + i) % EXPERTS for i in range(4)] for layer in range(layers)]
    shard = write_expert_shard(model, tmp_path / "per-layer.gguf", per_layer).path
    for layer, keep in enumerate(per_layer):
        name = f"blk.{layer}.ffn_up_exps.weight"
        assert slices(shard, name) == [slices(model, name)[e] for e in keep]
    for bad, says in (([1], "at least the 2 experts"), ([0, 0], "distinct"), ([0, 8], "distinct"),
                      ([[0, 1]] * (layers - 1), "layers"), ([[0, 1], [0, 1, 2]] * (layers // 2), "same number")):
        with pytest.raises(ShardError, match=says):
            write_expert_shard(model, tmp_path / "bad.gguf", bad)
    dense = tmp_path / "dense.gguf"
    write_tiny_gguf(dense, "dense")
    with pytest.raises(ShardError, match="not a Mixture-of-Experts"):
        write_expert_shard(dense, tmp_path / "x.gguf", [0, 1])
    assert not list(tmp_path.glob("bad.gguf*")) and not list(tmp_path.glob("x.gguf*"))


@contextmanager
def llama_server(binaries: LlamaBinaries, path: Path) -> Iterator[str]:
    with run_llama_server(binaries.server, path, path.with_suffix(".log"), "--no-repack", "-c", "512") as base:
        yield base


def greedy_tokens(base: str, n: int = 24) -> list[int]:
    answer = httpx.post(base + "/completion", json={"prompt": PROMPT, "n_predict": n, "temperature": 0,
                                                     "return_tokens": True, "cache_prompt": False}, timeout=60).json()
    tokens: list[int] = answer["tokens"]
    return tokens


def test_every_expert_permuted_answers_the_originals_tokens(model: Path, tmp_path: Path,
                                                            llama_binaries: LlamaBinaries) -> None:
    permuted = write_expert_shard(model, tmp_path / "permuted.gguf", PERMUTED).path
    assert hashlib.sha256(permuted.read_bytes()).digest() != hashlib.sha256(model.read_bytes()).digest()
    with llama_server(llama_binaries, model) as base:
        expected = greedy_tokens(base)
    with llama_server(llama_binaries, permuted) as base:
        assert greedy_tokens(base) == expected
    assert len(expected) == 24


def test_smaller_shards_load_and_answer(model: Path, tmp_path: Path, llama_binaries: LlamaBinaries) -> None:
    for number, keep in enumerate(([0, 1, 2, 3], [4, 5, 6, 7], [2, 6])):
        shard = write_expert_shard(model, tmp_path / f"shard-{number}.gguf", keep).path
        with llama_server(llama_binaries, shard) as base:
            assert len(greedy_tokens(base, 8)) == 8
