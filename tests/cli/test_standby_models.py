"""What a `--standby` node offers from its model store: a split GGUF once, by its first file, with all its files;
and store models speculate by the start's rules like the --model ones (cli/up.py's standby_models)."""

from __future__ import annotations

from pathlib import Path

import pytest
from make_tiny_gguf import write_tiny_gguf

from meshp2p.cli.up import standby_models
from meshp2p.inference.models import Speculation
from meshp2p.inference.pairing import SpeculationRules
from meshp2p.inference.resolve import Resolver


def test_a_split_in_the_store_is_offered_once_with_all_its_files(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    store = tmp_path / "home" / "models"
    store.mkdir(parents=True)
    made = write_tiny_gguf(tmp_path / "split.gguf", "dense", seed=31, split_max_tensors=20)
    parts = sorted(made.parent.glob("split-*-of-*.gguf"))
    assert len(parts) >= 2
    for part in parts:
        part.rename(store / part.name.replace("split-", "Tiny-Split-"))
    write_tiny_gguf(store / "tiny.gguf", "dense", seed=32)

    offered = standby_models((), SpeculationRules(ngram=True), Resolver(allow_download=False))
    by_id = {m.id: m for m in offered}
    assert set(by_id) == {"Tiny-Split", "tiny"}
    assert by_id["Tiny-Split"].files == tuple(sorted(store.glob("Tiny-Split-*.gguf")))
    assert by_id["Tiny-Split"].path.name == f"Tiny-Split-00001-of-{len(parts):05d}.gguf"
    assert all(m.speculation == Speculation("ngram") for m in offered)
    assert all(m.speculation is None for m in standby_models((), SpeculationRules(), Resolver(allow_download=False)))
