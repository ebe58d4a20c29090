"""`meshp2p up` and the models a node gets after its start (cli/up.py): what a `--standby` node offers from its
model store (a split GGUF once, by its first file, with all its files; speculating by the start's rules like the
--model ones), and a `--draft` for a model fetched once the mesh is joined, refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from make_tiny_gguf import write_tiny_gguf

from meshp2p.cli.up import refuse_drafts_for_pending, standby_models
from meshp2p.errors import ConfigError
from meshp2p.inference.catalog import parse_catalog
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


def test_a_draft_for_a_model_fetched_later_is_refused_not_paired_with_another() -> None:
    entry = parse_catalog({"version": 1, "models": [
        {"name": "tiny-chat", "aliases": ["chat"], "source": "hub", "repo": "o/r", "revision": "main",
         "quant": "Q4_K_M", "files": [{"name": "c.gguf", "sha256": None}], "size_bytes": 1, "architecture": "llama",
         "experts": None, "experts_used": None, "context_length": 2048, "draft": None}]}, source="test").entries[0]
    later = {"chat": entry, "tiny-chat": entry}
    for drafts, typed in ((["d.gguf"], ["chat", "local.gguf"]), (["tiny-chat=d.gguf"], ["local.gguf", "chat"]),
                          (["chat=d.gguf"], ["local.gguf", "chat"])):
        with pytest.raises(ConfigError, match="tiny-chat is not on disk") as caught:
            refuse_drafts_for_pending(drafts, typed, later)
        assert caught.value.hint is not None and "meshp2p download tiny-chat" in caught.value.hint
    refuse_drafts_for_pending(["d.gguf"], ["local.gguf", "chat"], later)  # the first --model is here: its draft
    refuse_drafts_for_pending(["local=d.gguf"], ["chat", "local"], later)
    refuse_drafts_for_pending([], ["chat"], later)
