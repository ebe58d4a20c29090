"""Expert usage (inference/calibration.py): a real llama-imatrix run on the tiny MoE models, parsed; the
weight-norm estimate; the cache per content id."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import trio
from make_tiny_gguf import write_tiny_gguf

from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.calibration import (
    SOURCE_IMATRIX,
    SOURCE_WEIGHT_NORM,
    CalibrationFailed,
    ExpertUsage,
    cached_usage,
    calibration_text,
    expert_usage,
    run_imatrix,
    run_imatrix_placed,
    store_usage,
    usage_cache_file,
    weight_norm_usage,
)
from meshp2p.inference.content_id import hash_file


@pytest.fixture
def imatrix(llama_binaries: LlamaBinaries) -> Path:
    if llama_binaries.imatrix is None:
        pytest.skip("this llama.cpp build has no llama-imatrix (run `meshp2p llama build`)")
    return llama_binaries.imatrix


@pytest.mark.parametrize("variant", ["moe", "qwen3moe"])
def test_imatrix_counts_are_routed_token_slots(imatrix: Path, tmp_path: Path, variant: str) -> None:
    model = write_tiny_gguf(tmp_path / f"{variant}.gguf", variant, layers=4, seed=5)
    usage = run_imatrix(imatrix, model, 4, 8)
    assert usage.source == SOURCE_IMATRIX and len(usage.counts) == 4
    totals = {sum(layer) for layer in usage.counts}
    # Every token of every chunk picks 2 experts in every layer: the same total per layer, a multiple of 2 * 128.
    assert len(totals) == 1 and totals.pop() % (2 * 128) == 0
    assert all(len(layer) == 8 and min(layer) >= 0 for layer in usage.counts)
    assert len({layer for layer in usage.counts}) > 1  # the router really prefers different experts per layer
    # Deterministic: the same run gives the same numbers (members of a group calibrate for themselves).
    assert run_imatrix(imatrix, model, 4, 8).digest == usage.digest


def test_weight_norm_estimate_reads_router_rows(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "moe.gguf", "moe", layers=3, seed=5)
    usage = weight_norm_usage(model)
    assert usage.source == SOURCE_WEIGHT_NORM and len(usage.counts) == 3
    assert all(len(layer) == 8 and min(layer) > 0 for layer in usage.counts)


def test_usage_is_cached_per_content_id_and_estimated_without_imatrix(
        imatrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    model = write_tiny_gguf(tmp_path / "moe.gguf", "moe", layers=4, seed=6)
    cid = hash_file(model)
    estimated = expert_usage(model, cid, None)
    assert estimated.source == SOURCE_WEIGHT_NORM and "weight norms" in caplog.text
    assert usage_cache_file(cid).is_file()
    measured = expert_usage(model, cid, imatrix)  # an estimate is measured again once imatrix is there
    assert measured.source == SOURCE_IMATRIX
    assert expert_usage(model, cid, imatrix) == measured
    assert expert_usage(model, cid, tmp_path / "no-such-imatrix") == measured  # from the cache, not run


def test_a_failing_imatrix_falls_back_to_the_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    model = write_tiny_gguf(tmp_path / "moe.gguf", "moe", layers=2, seed=6)
    broken = tmp_path / "llama-imatrix"
    broken.write_text("#!/bin/sh\necho 'boom' >&2\nexit 3\n")
    broken.chmod(0o755)
    assert expert_usage(model, None, broken).source == SOURCE_WEIGHT_NORM


def test_counts_a_peer_gave_are_cached_with_where_they_came_from(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A member without llama-imatrix caches a peer's measured counts (app/moe_shards.py): it then plans with
    them without asking again, and can give them on (`cached_usage` is what it answers from)."""
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    model = write_tiny_gguf(tmp_path / "moe.gguf", "moe", layers=3, seed=6)
    cid = hash_file(model)
    assert expert_usage(model, cid, None).source == SOURCE_WEIGHT_NORM
    assert cached_usage(model, cid) is None  # the estimate is never given to others
    shared = ExpertUsage(SOURCE_IMATRIX, tuple(tuple(range(8)) for _ in range(3)), origin="12D3KooWsomepeer")
    store_usage(cid, shared)
    again = expert_usage(model, cid, None)
    assert again == shared and again.origin == "12D3KooWsomepeer" and again.tag == shared.tag
    assert again.described == "imatrix (from somepeer)"  # the peer id's last 8 characters
    assert cached_usage(model, cid) == shared
    store_usage(cid, ExpertUsage(SOURCE_IMATRIX, ((1,) * 8,) * 2))  # another file's shape: not this file's usage
    assert cached_usage(model, cid) is None


def test_calibration_text_ships_with_the_package() -> None:
    text = calibration_text().read_text()
    assert 2_000 < len(text.encode()) < 16_000


def test_old_builds_without_imatrix_still_load(tmp_path: Path) -> None:
    from meshp2p.inference.binaries import _in_dir
    (tmp_path / "llama-server").write_text("#!/bin/sh\n")
    (tmp_path / "llama-server").chmod(0o755)
    found = _in_dir(tmp_path, "test")
    assert found is not None and found.imatrix is None
    assert dataclasses.replace(found, imatrix=tmp_path / "x").imatrix == tmp_path / "x"


async def test_a_placed_run_is_killed_when_cancelled_and_a_failed_one_says_why(tmp_path: Path) -> None:
    """The split calibration's run (a trio task): the node stopping mid-run kills llama-imatrix, not waits for it."""
    pid_file = tmp_path / "pid"
    slow = tmp_path / "slow-imatrix"
    slow.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    slow.chmod(0o755)
    model = write_tiny_gguf(tmp_path / "moe.gguf", "moe", layers=2, seed=1)
    with trio.move_on_after(1.0):
        await run_imatrix_placed(slow, model, 2, 8, placement=("--rpc", "127.0.0.1:1"))
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: no such process
    failing = tmp_path / "failing-imatrix"
    failing.write_text("#!/bin/sh\necho 'failed to connect to 127.0.0.1:1' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(CalibrationFailed, match="exit 1: failed to connect"):
        await run_imatrix_placed(failing, model, 2, 8, placement=())
