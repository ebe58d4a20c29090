"""Content ids of model files (protocols/model-id.md): the vectors, the one text spelling, chunking independence."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.wire import expect_reason, generator_check, ids, load_vectors, only_wire_errors
from hypothesis import given
from hypothesis import strategies as st

from meshp2p.wire.errors import WireError
from meshp2p.wire.model_id import (
    CONTENT_DIGEST_BYTES,
    MAX_CONTENT_ID_CHARS,
    ContentId,
    ContentIdHasher,
    content_id_of,
    parse_content_id,
)

V = load_vectors("model-id.json")


def vector_bytes(case: dict[str, Any]) -> bytes:
    if "hex" in case:
        return bytes.fromhex(case["hex"])
    return bytes(i % 251 for i in range(case["pattern_mod_251"]))


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert generator_check("generate_model_id.py") == 0


def test_constants() -> None:
    c = V["constants"]
    assert (c["digest_bytes"], c["scheme"]) == (CONTENT_DIGEST_BYTES, "sha256_128")
    assert c["max_chars"] == MAX_CONTENT_ID_CHARS == 63


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_valid_vector(case: dict[str, Any]) -> None:
    data = vector_bytes(case)
    cid = content_id_of(data)
    assert cid.text == str(cid) == case["id"]
    assert parse_content_id(case["id"]) == cid
    assert cid.size == len(data)


@pytest.mark.parametrize("case", V["text_invalid"], ids=ids(V["text_invalid"]))
def test_invalid_text(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: parse_content_id(case["text"]))


@given(st.binary(max_size=4096), st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=8))
def test_the_id_depends_on_the_bytes_not_on_the_chunks(data: bytes, chunks: list[int]) -> None:
    hasher = ContentIdHasher()
    start, i = 0, 0
    while start < len(data):
        step = chunks[i % len(chunks)]
        hasher.update(data[start:start + step])
        start, i = start + step, i + 1
    assert hasher.result() == content_id_of(data)
    assert parse_content_id(hasher.result().text) == hasher.result()


def test_same_size_other_bytes_is_another_file() -> None:
    a, b = content_id_of(b"Q4_K_M" * 100), content_id_of(b"Q8_0__" * 100)
    assert a.size == b.size and a != b


@given(st.one_of(st.text(max_size=80), st.binary(max_size=80), st.integers(), st.none()))
def test_parse_accepts_only_its_own_spelling(value: object) -> None:
    if only_wire_errors(lambda: parse_content_id(value)):
        assert isinstance(value, str) and parse_content_id(value).text == value


def test_constructor_checks_its_parts() -> None:
    for digest, size in ((bytes(15), 1), (bytes(17), 1), (bytes(16), -1), (bytes(16), 2**63), ("0" * 16, 1)):
        with pytest.raises(WireError):
            ContentId(digest, size)  # type: ignore[arg-type]
