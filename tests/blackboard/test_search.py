"""Search: terms and phrases, ranking by matched terms then recency, filters, and the store-backed path."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.blackboard import BlackboardStore, parse_query, search, search_store
from meshp2p.wire import Identity
from meshp2p.wire.blackboard import Post, decode_post, encode_post

A = Identity.from_seed(bytes(range(32)))
B = Identity.from_seed(bytes(range(32, 64)))
NOW = 1_750_000_000.0
NOW_MS = int(NOW * 1000)


def make(
    text: str, *, at: int, ident: Identity = A, name: str | None = None, tags: tuple[str, ...] = ()
) -> tuple[Post, bytes]:
    raw = encode_post(ident, text=text, now=NOW + at, name=name, tags=tags)
    return decode_post(raw, now=NOW + at, ttl_s=3600), raw


CORPUS = [
    make("llama.cpp runs the GGUF model on CUDA", at=0, tags=("gpu",)),
    make("Quantized models: Q4_K_M is a good default", at=1, ident=B),
    make("CUDA out of memory when loading the model", at=2, tags=("gpu", "help")),
    make("Lunch at noon?", at=3, ident=B, name="Bob's agent"),
    make("The new model is fast on CUDA and on Metal", at=4),
    make("Straße und Größe", at=5, ident=B),
]
POSTS = [post for post, _ in CORPUS]


def texts(posts: list[Post]) -> list[str]:
    return [post.text for post in posts]


@pytest.fixture
def store(tmp_path: Path) -> BlackboardStore:
    store = BlackboardStore(tmp_path / "blackboard.sqlite")
    for post, raw in CORPUS:
        store.add(post, raw)
    return store


def test_parse_query() -> None:
    assert parse_query('CUDA model "out of   Memory" cuda') == [("out", "of", "memory"), ("cuda",), ("model",)]
    assert parse_query('  "" " ') == []
    assert parse_query("llama.cpp") == [("llama",), ("cpp",)]


def test_ranked_by_matched_terms_then_recency() -> None:
    got = texts(search(POSTS, "cuda model"))
    assert got == [
        "The new model is fast on CUDA and on Metal",  # 2 terms, newest
        "CUDA out of memory when loading the model",  # 2 terms
        "llama.cpp runs the GGUF model on CUDA",  # 2 terms, oldest
        "Quantized models: Q4_K_M is a good default",  # 1 term ("model" is a prefix of "models")
    ]
    assert texts(search(POSTS, "cuda memory"))[0] == "CUDA out of memory when loading the model"


def test_terms_count_once_and_are_prefixes() -> None:
    stuffed = make("cuda cuda cuda cuda cuda", at=10)[0]
    got = texts(search([*POSTS, stuffed], "cuda memory"))
    assert got[0] == "CUDA out of memory when loading the model" and got[1] == "cuda cuda cuda cuda cuda"
    assert texts(search(POSTS, "quant")) == ["Quantized models: Q4_K_M is a good default"]
    assert texts(search(POSTS, "uantized")) == [], "prefixes of words, not substrings"


def test_phrases_case_folding_name_and_tags() -> None:
    assert texts(search(POSTS, '"out of memory"')) == ["CUDA out of memory when loading the model"]
    assert texts(search(POSTS, '"memory out of"')) == []
    assert texts(search(POSTS, "STRASSE")) == ["Straße und Größe"]
    assert texts(search(POSTS, "bob")) == ["Lunch at noon?"]
    assert texts(search(POSTS, "help")) == ["CUDA out of memory when loading the model"]


def test_filters_and_empty_query() -> None:
    assert texts(search(POSTS, "cuda", author=A.peer_id, tag="gpu")) == [
        "CUDA out of memory when loading the model",
        "llama.cpp runs the GGUF model on CUDA",
    ]
    assert texts(search(POSTS, "cuda", since_ms=NOW_MS + 2000)) == [
        "The new model is fast on CUDA and on Metal",
        "CUDA out of memory when loading the model",
    ]
    assert texts(search(POSTS, "", author=B.peer_id)) == ["Straße und Größe", "Lunch at noon?", POSTS[1].text]
    assert len(search(POSTS, "", limit=2)) == 2
    assert search(POSTS, "nothing-like-this") == []


def test_store_search_matches_pure_search(store: BlackboardStore) -> None:
    for query in ("cuda model", '"out of memory"', "STRASSE", "größe", "bob", "gpu", "q4_k_m", "100%", "", "x_y"):
        for kwargs in ({}, {"author": A.peer_id}, {"tag": "gpu"}, {"since_ms": NOW_MS + 2000}):
            assert search_store(store, query, **kwargs) == search(POSTS, query, **kwargs), (query, kwargs)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from('abcdeßSTRAẞ "_%\\.-'), max_size=12))
def test_store_prefilter_never_loses_a_match(query: str) -> None:
    """The SQL prefilter is a superset: for any query, the store's answer is the pure search's."""
    store = BlackboardStore(":memory:")
    try:
        for post, raw in CORPUS:
            store.add(post, raw)
        assert search_store(store, query, limit=100) == search(POSTS, query, limit=100)
    finally:
        store.close()
