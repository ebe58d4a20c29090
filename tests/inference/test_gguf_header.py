"""The fast GGUF header reader against gguf.GGUFReader, on the tiny models the test suite generates."""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshp2p.inference.gguf_header import (
    GGUFFormatError,
    GGUFHeader,
    SkippedArray,
    TensorInfo,
    read_gguf_header,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from make_tiny_gguf import main as make_tiny_gguf_main  # noqa: E402
from make_tiny_gguf import write_tiny_gguf  # noqa: E402

VARIANTS = ("dense", "moe", "qwen3moe", "embed")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tiny")
    return {v: write_tiny_gguf(folder / f"{v}.gguf", v) for v in VARIANTS}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file that hypothesis examples overwrite (function-scoped tmp_path does not mix with @given)."""
    return tmp_path_factory.mktemp("scratch") / "scratch.gguf"


def assert_matches_gguf_reader(path: Path, header: GGUFHeader) -> None:
    reader = gguf.GGUFReader(path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert list(header.metadata) == keys
    for key in keys:
        field, value = reader.fields[key], header.metadata[key]
        if isinstance(value, SkippedArray):
            assert field.types[0] == gguf.GGUFValueType.ARRAY
            assert (value.item_type, value.length) == (field.types[-1], len(field.data))
        else:
            assert value == field.contents(), key
    assert header.alignment == reader.alignment
    assert len(header.tensors) == len(reader.tensors)
    for ours, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.ggml_type == int(theirs.tensor_type)
        assert header.data_offset + ours.offset == theirs.data_offset
        assert ours.n_bytes == theirs.n_bytes
        assert ours.n_elements == theirs.n_elements


# --- the tiny models, read both ways ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_gguf_reader(tiny_models: dict[str, Path], variant: str) -> None:
    path = tiny_models[variant]
    header = read_gguf_header(path)
    assert header.version == 3
    assert header.file_size == path.stat().st_size
    assert_matches_gguf_reader(path, header)


def test_long_arrays_are_skipped_unless_asked_for(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["dense"]
    skipped = read_gguf_header(path).get("tokenizer.ggml.tokens")
    assert isinstance(skipped, SkippedArray)
    assert skipped.item_type == gguf.GGUFValueType.STRING
    full = read_gguf_header(path, max_array_items=10_000)
    tokens = full.get("tokenizer.ggml.tokens")
    assert isinstance(tokens, list)
    assert len(tokens) == skipped.length
    assert tokens[:4] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert_matches_gguf_reader(path, full)


def test_dense_properties(tiny_models: dict[str, Path]) -> None:
    header = read_gguf_header(tiny_models["dense"])
    assert header.architecture == "llama"
    assert header.name == "tiny-dense"
    assert header.block_count == 4
    assert header.context_length == 2048
    assert header.arch_key("embedding_length") == 64
    assert header.arch_key("missing", "x") == "x"
    assert header.expert_count is None
    assert header.expert_used_count is None
    assert not header.is_moe
    assert not header.is_embedding_model
    assert header.chat_template is not None and "<|im_start|>" in header.chat_template
    names = {t.name for t in header.tensors}
    assert {"token_embd.weight", "output.weight", "blk.3.ffn_down.weight"} <= names


@pytest.mark.parametrize(("variant", "arch"), [("moe", "llama"), ("qwen3moe", "qwen3moe")])
def test_moe_properties(tiny_models: dict[str, Path], variant: str, arch: str) -> None:
    header = read_gguf_header(tiny_models[variant])
    assert header.architecture == arch
    assert header.is_moe
    assert (header.expert_count, header.expert_used_count) == (8, 2)
    assert not header.is_embedding_model
    gate = next(t for t in header.tensors if t.name == "blk.0.ffn_gate_exps.weight")
    assert gate.shape == (64, 128, 8)  # ggml ne order: {embd, ff, experts}


def test_embed_properties(tiny_models: dict[str, Path]) -> None:
    header = read_gguf_header(tiny_models["embed"])
    assert header.architecture == "llama"
    assert header.is_embedding_model
    assert header.arch_key("pooling_type") == 1
    assert not header.is_moe


def test_generator_options_reach_the_header(tmp_path: Path) -> None:
    path = write_tiny_gguf(
        tmp_path / "m.gguf",
        "moe",
        layers=2,
        embd=32,
        ff=48,
        heads=2,
        kv_heads=1,
        experts=4,
        used=1,
        ctx=512,
        name="custom",
    )
    header = read_gguf_header(path)
    assert (header.block_count, header.context_length, header.name) == (2, 512, "custom")
    assert (header.expert_count, header.expert_used_count) == (4, 1)
    assert header.arch_key("embedding_length") == 32
    assert len([t for t in header.tensors if t.name.startswith("blk.")]) == 2 * 10


def test_tensor_data_fills_the_file(tiny_models: dict[str, Path]) -> None:
    header = read_gguf_header(tiny_models["qwen3moe"])
    ends = []
    for tensor in header.tensors:
        assert tensor.offset % header.alignment == 0
        assert tensor.n_bytes == tensor.n_elements * 4  # all F32
        ends.append(header.data_offset + tensor.offset + tensor.n_bytes)
    assert 0 <= header.file_size - max(ends) < header.alignment


# --- the generator ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_bytes(tmp_path: Path, variant: str) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", variant, seed=7)
    b = write_tiny_gguf(tmp_path / "b.gguf", variant, seed=7)
    c = write_tiny_gguf(tmp_path / "c.gguf", variant, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_silenced_tokens_have_zero_output_rows(tiny_models: dict[str, Path]) -> None:
    reader = gguf.GGUFReader(tiny_models["dense"])
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    output = next(t for t in reader.tensors if t.name == "output.weight").data
    zero_rows = {tokens[i] for i in range(len(tokens)) if not np.any(output[i])}
    expected = {"<unk>", "<s>", "</s>"} | {f"<0x{b:02X}>" for b in range(256) if not 0x20 <= b < 0x7F}
    assert zero_rows == expected


def test_cli_writes_the_same_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.gguf"
    assert make_tiny_gguf_main([str(out), "--variant", "embed", "--layers", "2", "--seed", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    again = write_tiny_gguf(tmp_path / "api.gguf", "embed", layers=2, seed=3)
    assert out.read_bytes() == again.read_bytes()


@pytest.mark.parametrize(
    "kwargs", [{"variant": "sparse"}, {"embd": 63}, {"heads": 4, "kv_heads": 3}, {"used": 9}, {"used": 0}]
)
def test_generator_rejects_bad_shapes(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        write_tiny_gguf(tmp_path / "bad.gguf", **kwargs)  # type: ignore[arg-type]


# --- hand-built and foreign files ---------------------------------------------------------------------------


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes(kvs: Sequence[bytes], tensors: Sequence[bytes] = (), *, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)


def kv_u32(key: str, value: int) -> bytes:
    return gguf_string(key) + struct.pack("<II", 4, value)


def test_big_endian_file(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    writer = gguf.GGUFWriter(path, "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_block_count(3)
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_float32("test.half", 0.5)
    writer.add_tensor("t.weight", np.arange(6, dtype=np.float32).reshape(2, 3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_gguf_header(path)
    assert header.block_count == 3
    assert header.get("test.nested") == [[1, 2], [3]]
    assert header.get("test.half") == 0.5
    assert header.tensors == (TensorInfo("t.weight", (3, 2), 0, 0),)


def test_a_262k_token_vocabulary_is_skipped_not_read(tmp_path: Path) -> None:
    """Long arrays are skipped (their type and length kept); how fast that is: tools/bench/gguf_header.py."""
    n = 262_144
    pieces = b"".join(gguf_string(f"tok{i}") for i in range(n))
    kvs = [
        gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("gemma3"),
        gguf_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, n) + pieces,
        gguf_string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, n) + bytes(4 * n),
        kv_u32("gemma3.block_count", 18),
    ]
    path = tmp_path / "big-vocab.gguf"
    path.write_bytes(gguf_bytes(kvs))
    header = read_gguf_header(path)
    assert header.get("tokenizer.ggml.tokens") == SkippedArray(8, n)
    assert header.get("tokenizer.ggml.scores") == SkippedArray(6, n)
    assert header.block_count == 18


def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "utf8.gguf"
    path.write_bytes(gguf_bytes([gguf_string("general.name") + struct.pack("<I", 8) + gguf_string(b"a\xffb")]))
    assert read_gguf_header(path).name == "a\ufffdb"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a GGUF file"),
        (b"GGU", "not a GGUF file"),
        (b"PK\x03\x04" + bytes(100), "not a GGUF file"),
        (gguf_bytes([], version=1), "version 1"),
        (gguf_bytes([], version=4), "version 4"),
        (gguf_bytes([gguf_string("k") + struct.pack("<I", 13)]), "unknown value type 13"),
        (gguf_bytes([gguf_string("k") + struct.pack("<IIQ", 9, 99, 1)]), "unknown value type 99"),
        (gguf_bytes([kv_u32("general.alignment", 24)]), "power of two"),
        (gguf_bytes([kv_u32("general.alignment", 0)]), "power of two"),
        (gguf_bytes([], [gguf_string("t") + struct.pack("<I", 5) + bytes(5 * 8 + 12)]), "dimensions"),
        (gguf_bytes([gguf_string("k") + struct.pack("<IQ", 8, 2**63)]), "truncated"),
        (gguf_bytes([gguf_string("k") + struct.pack("<IIQ", 9, 8, 2**64 - 1)]), "truncated"),
        (gguf_bytes([gguf_string("k") + struct.pack("<IIQ", 9, 12, 2**61)]), "truncated"),
        (gguf_bytes([], [gguf_string("t") + struct.pack("<IQIQ", 1, 1024, 0, 0)]), "truncated"),
        (gguf_bytes([kv_u32("a", 1), kv_u32("a", 2)]), "repeats metadata key 'a'"),
        (gguf_bytes([], [gguf_string("t") + struct.pack("<IQIQ", 1, 0, 0, 0)] * 2), "repeats a tensor name"),
    ],
)
def test_bad_files_raise_value_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(GGUFFormatError, match=message) as caught:
        read_gguf_header(path)
    assert isinstance(caught.value, ValueError)


def test_every_truncation_of_a_valid_file_raises(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    content = tiny_models["moe"].read_bytes()
    header = read_gguf_header(tiny_models["moe"])
    path = tmp_path / "cut.gguf"
    # Every cut in the preamble and around the end of the tensor table, a stride through the vocabulary
    # arrays between them, then a few cuts inside the tensor data.
    table_end = header.data_offset + 64
    cuts = [
        *range(0, 600),
        *range(600, table_end - 2000, 11),
        *range(table_end - 2000, table_end),
        *np.linspace(table_end, len(content) - 1, 16, dtype=int).tolist(),
    ]
    for cut in cuts:
        path.write_bytes(content[:cut])
        with pytest.raises(ValueError):
            read_gguf_header(path)


def _parses_or_value_error(path: Path) -> None:
    with contextlib.suppress(ValueError):
        read_gguf_header(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_random_bytes(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    _parses_or_value_error(scratch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from([2, 3]),
    counts=st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    body=st.binary(max_size=512),
)
def test_random_bodies_after_a_valid_preamble(
    scratch: Path, version: int, counts: tuple[int, int], body: bytes
) -> None:
    scratch.write_bytes(b"GGUF" + struct.pack("<IQQ", version, *counts) + body)
    _parses_or_value_error(scratch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_valid_header(scratch: Path, tiny_models: dict[str, Path], data: st.DataObject) -> None:
    """Flip bytes inside a real header, then cut it: parses or ValueError, nothing else."""
    original = tiny_models["qwen3moe"].read_bytes()
    header_end = read_gguf_header(tiny_models["qwen3moe"]).data_offset
    content = bytearray(original[: data.draw(st.integers(0, len(original)), label="cut")])
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        if not content:
            break
        at = data.draw(st.integers(0, min(len(content), header_end) - 1), label="at")
        content[at] = data.draw(st.integers(0, 255), label="byte")
    scratch.write_bytes(bytes(content))
    _parses_or_value_error(scratch)
