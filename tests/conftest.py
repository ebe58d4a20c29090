"""Shared fixtures: tiny GGUF models, real llama.cpp binaries, and real `meshp2p up` and bootstrap processes
(tests/helpers/processes.py starts and stops them). Every fixture stops what it started and checks that no child
or port is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.processes import (
    BootstrapProcess,
    NodeProcess,
    TinyModels,
    assert_nothing_left,
    start_bootstrap,
    start_node,
    stop_all,
)
from make_tiny_gguf import write_tiny_gguf  # tools/, put on sys.path by helpers.processes

from meshp2p.errors import BinaryNotFound
from meshp2p.inference.binaries import LlamaBinaries, find_llama_binaries


@pytest.fixture(scope="session")
def llama_binaries() -> LlamaBinaries:
    try:
        return find_llama_binaries()
    except BinaryNotFound as exc:
        pytest.fail(f"{exc} — tests run real llama.cpp processes")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Tiny models written once per session: two chat models, one embedding model, and one that calls tools."""
    root = tmp_path_factory.mktemp("models")
    return TinyModels(
        dense=write_tiny_gguf(root / "tiny-dense.gguf", "dense", seed=1),
        other=write_tiny_gguf(root / "tiny-other.gguf", "dense", seed=2),
        embed=write_tiny_gguf(root / "tiny-embed.gguf", "embed", seed=3),
        # Context for a `recite` call of a few thousand tokens (tests kill its server while it streams).
        toolcall=write_tiny_gguf(root / "tiny-toolcall.gguf", "toolcall", ctx=8192),
    )


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Any]:
    """Start nodes with `node_factory(*up_args)`; all are stopped, and checked for leaks, at teardown."""
    nodes: list[NodeProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None, name: str | None = None) -> NodeProcess:
        node = start_node(tmp_path / (name or f"node{len(nodes)}"), *args, env=env)
        nodes.append(node)
        return node

    try:
        yield factory
    finally:
        stop_all(nodes)


@pytest.fixture(scope="module")
def tiny_node(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels,
              llama_binaries: LlamaBinaries) -> Iterator[NodeProcess]:
    """One node serving the tiny dense, other and embedding models, shared by a module's tests."""
    home = tmp_path_factory.mktemp("tiny-node")
    node = start_node(home, "--model", str(tiny_models.dense), "--model", str(tiny_models.other),
                      "--model", str(tiny_models.embed), "--threads", "1", "--ctx-size", "2048")
    try:
        node.wait_ready()
        yield node
    finally:
        code = node.stop()
        assert_nothing_left(node)
        assert code == 0, node.output()


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootstrapProcess]:
    """One `meshp2p bootstrap` process per test module."""
    boot = start_bootstrap(tmp_path_factory.mktemp("bootstrap"))
    try:
        yield boot
    finally:
        assert boot.stop() == 0, boot.log_path.read_text()
