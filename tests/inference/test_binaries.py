"""Finding llama.cpp: MESHP2P_LLAMA_DIR, then the build cache, then PATH; the pin is one fact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshp2p.errors import BinaryNotFound
from meshp2p.inference.binaries import LLAMA_CPP_TAG, find_llama_binaries, probe_version

REPO = Path(__file__).resolve().parents[2]


def _fake_install(directory: Path, *names: str) -> Path:
    directory.mkdir(parents=True)
    for name in names:
        exe = directory / name
        exe.write_text("#!/bin/sh\necho 'version: 1 (abc)' >&2\n")
        exe.chmod(0o755)
    return directory


def test_the_python_pin_matches_the_build_recipe():
    assert (REPO / "vendor/llama.cpp/VERSION").read_text().strip() == LLAMA_CPP_TAG


def test_env_dir_wins_over_cache_and_path(tmp_path):
    chosen = _fake_install(tmp_path / "mine" / "bin", "llama-server", "rpc-server")
    on_path = _fake_install(tmp_path / "path", "llama-server")
    found = find_llama_binaries({"MESHP2P_LLAMA_DIR": str(tmp_path / "mine"), "PATH": str(on_path)})
    assert found.source == "MESHP2P_LLAMA_DIR"
    assert found.server == chosen / "llama-server"
    assert found.rpc_server == chosen / "rpc-server"


def test_cache_before_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = _fake_install(tmp_path / "cache/meshp2p/llama.cpp" / LLAMA_CPP_TAG / "bin", "llama-server")
    on_path = _fake_install(tmp_path / "path", "llama-server")
    found = find_llama_binaries({"PATH": str(on_path)})
    assert (found.source, found.server) == ("cache", cached / "llama-server")


def test_path_is_the_last_resort(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    on_path = _fake_install(tmp_path / "path", "llama-server", "ggml-rpc-server")
    found = find_llama_binaries({"PATH": str(on_path)})
    assert (found.source, found.rpc_server) == ("PATH", on_path / "ggml-rpc-server")


def test_nothing_found_says_how_to_build(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(BinaryNotFound) as err:
        find_llama_binaries({"PATH": str(tmp_path)})
    assert "meshp2p llama build" in (err.value.hint or "")


def test_real_build_reports_the_pinned_version(llama_binaries):
    assert probe_version(llama_binaries.server) == LLAMA_CPP_TAG
    assert llama_binaries.rpc_server is not None and os.access(llama_binaries.rpc_server, os.X_OK)
