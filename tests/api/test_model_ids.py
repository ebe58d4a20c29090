"""The routing rule on plain objects: exact id, `default`/missing alias, 404 listing the ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshp2p.api.errors import ApiError
from meshp2p.api.model_ids import Router
from meshp2p.backends.http11 import UpstreamPool
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.llama_server import LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec


def _server(model_id: str, tmp_path: Path) -> LlamaServer:
    binaries = LlamaBinaries(Path("/bin/true"), None, None, "PATH", Path("/bin"))
    spec = ModelSpec(id=model_id, path=tmp_path / f"{model_id}.gguf", size_bytes=1, architecture="llama")
    return LlamaServer(binaries, spec, ServerOptions(), log_dir=tmp_path)


@pytest.fixture
def router(tmp_path):
    servers = [_server("first", tmp_path), _server("second", tmp_path)]
    return Router({s.model.id: s for s in servers}, UpstreamPool())


@pytest.mark.parametrize("requested", [None, "", "default"])
def test_missing_or_default_means_the_first_model(router, requested):
    assert router.resolve_id(requested) == "first"


def test_exact_id(router):
    assert router.resolve_id("second") == "second"


@pytest.mark.parametrize("requested", ["Second", "second ", "third"])
def test_anything_else_is_404_with_the_list(router, requested):
    with pytest.raises(ApiError) as err:
        router.resolve_id(requested)
    assert err.value.status == 404
    assert "first, second" in err.value.message


def test_non_string_model_is_400(router):
    with pytest.raises(ApiError) as err:
        router.resolve_id(["first"])
    assert err.value.status == 400


def test_command_line_of_a_backend(tmp_path):
    server = _server("m", tmp_path)
    server.options = ServerOptions(ctx_size=512, threads=1, gpu_layers=0)
    args = server.command(4242)
    assert args[args.index("--port") + 1] == "4242"
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--alias") + 1] == "m"
    assert [args[args.index(f) + 1] for f in ("-c", "-t", "-ngl")] == ["512", "1", "0"]
