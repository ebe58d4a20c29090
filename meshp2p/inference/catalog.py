"""The models meshp2p knows by name: `catalog.json` in this package, read and checked here.

The file is data, not code (its `_doc` says what each field means). `MESHP2P_CATALOG=PATH` replaces it with another
file of the same shape: for tests, and for a mesh that keeps its own list (a private mirror, other quantisations).

Decisions written down:
- A name is the model id the API uses. Names and aliases are matched case-insensitively and are unique across the
  catalog (one spelling never means two models). Bare sizes (`7b`, `32b`) mean Qwen2.5 Instruct, as in issue 13.
- Sizes are the catalog's estimates (the table, "fits this machine"); at download the hub's own size replaces them.
  The LFS sha256 of a file is pinned where it is known (the embedded model's); a null pin takes the hub's sha256 from
  the `X-Linked-Etag` header at download time and checks the bytes against that.
- Architecture, experts and context length describe the model for people; the node reads the real values from the
  GGUF header, so a catalog mistake there changes a table, never a plan.
- Files are listed in order; a split GGUF lists every part, `-00001-of-0000N` first. When a listed file has gone from
  the repo (renamed upstream), the download falls back to the repo's file of the entry's `quant`.
- Unknown names get the closest names and aliases as suggestions (difflib).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from meshp2p.errors import ConfigError, ModelNotFound
from meshp2p.inference.embedded import DEFAULT_MODEL_ID
from meshp2p.inference.gguf_names import split_parts
from meshp2p.inference.hub import HubFile

CATALOG_ENV = "MESHP2P_CATALOG"
CATALOG_VERSION = 1
SOURCES = ("hub", "embedded")
#: How many close names an unknown one is answered with.
SUGGESTIONS = 3
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

__all__ = ["DEFAULT_MODEL_ID", "Catalog", "CatalogEntry", "CatalogFile", "load_catalog", "parse_catalog"]


@dataclass(frozen=True)
class CatalogFile:
    name: str
    sha256: str | None


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    aliases: tuple[str, ...]
    source: Literal["hub", "embedded"]
    repo: str | None
    revision: str | None
    quant: str
    files: tuple[CatalogFile, ...]
    size_bytes: int
    architecture: str
    experts: int | None
    experts_used: int | None
    context_length: int
    draft: str | None

    @property
    def kind(self) -> str:
        """`dense`, or `MoE 128x8` (experts x used per token)."""
        return "dense" if self.experts is None else f"MoE {self.experts}x{self.experts_used}"

    def hub_files(self) -> tuple[HubFile, ...]:
        """The files to fetch from the hub; empty for the embedded model."""
        if self.repo is None:
            return ()
        return tuple(HubFile(self.repo, f.name, self.revision or "main", f.sha256) for f in self.files)


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]
    source: str

    def find(self, text: str) -> CatalogEntry | None:
        """The entry whose name or alias is `text`, case ignored."""
        wanted = text.strip().lower()
        for entry in self.entries:
            if wanted == entry.name.lower() or wanted in (a.lower() for a in entry.aliases):
                return entry
        return None

    def get(self, name: str) -> CatalogEntry:
        entry = self.find(name)
        if entry is None:
            raise ModelNotFound(f"{name!r} is not in the catalog ({self.source})", hint=self.suggestion_hint(name))
        return entry

    def suggestions(self, text: str) -> list[str]:
        """Catalog names closest to `text` (by name or alias), best first."""
        spellings = {e.name.lower(): e.name for e in self.entries}
        spellings.update({a.lower(): e.name for e in self.entries for a in e.aliases})
        close = difflib.get_close_matches(text.strip().lower(), list(spellings), n=4 * SUGGESTIONS, cutoff=0.5)
        return list(dict.fromkeys(spellings[c] for c in close))[:SUGGESTIONS]

    def suggestion_hint(self, text: str) -> str:
        close = self.suggestions(text)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        return hint + "`meshp2p download` lists the catalog"

    def draft_of(self, entry: CatalogEntry) -> CatalogEntry | None:
        return None if entry.draft is None else self.find(entry.draft)


def catalog_path() -> Path | None:
    """The file MESHP2P_CATALOG names, or None for the packaged catalog."""
    value = os.environ.get(CATALOG_ENV)
    return Path(value).expanduser() if value else None


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalog at `path`, else MESHP2P_CATALOG's, else the packaged one; checked (ConfigError when it is bad)."""
    chosen = path or catalog_path()
    if chosen is None:
        text = resources.files("meshp2p.inference").joinpath("catalog.json").read_text(encoding="utf-8")
        source = "the packaged catalog"
    else:
        try:
            text = chosen.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the catalog {chosen} ({CATALOG_ENV}): {exc}",
                              hint=f"point {CATALOG_ENV} at a catalog JSON file, or unset it") from exc
        source = str(chosen)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"the catalog {source} is not JSON: {exc}",
                          hint=f"fix the file, or unset {CATALOG_ENV}") from exc
    return parse_catalog(data, source=source)


def parse_catalog(data: Any, *, source: str) -> Catalog:
    """Check the catalog's shape and rules (module docstring) and build it; every problem found is reported at once."""
    problems: list[str] = []
    if not isinstance(data, dict) or data.get("version") != CATALOG_VERSION or not isinstance(data.get("models"), list):
        raise ConfigError(f"the catalog {source} is not a version {CATALOG_VERSION} catalog",
                          hint='it must be {"version": 1, "models": [...]}')
    entries = []
    for i, raw in enumerate(data["models"]):
        try:
            entries.append(_entry(raw))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"entry {i} ({raw.get('name') if isinstance(raw, dict) else raw!r}): {exc}")
    problems += _cross_checks(entries)
    if problems:
        raise ConfigError(f"the catalog {source} has problems:\n  " + "\n  ".join(problems),
                          hint="fix these entries (the fields are described in the catalog's _doc)")
    return Catalog(tuple(entries), source)


def _entry(raw: dict[str, Any]) -> CatalogEntry:
    def text(key: str, *, nullable: bool = False) -> Any:
        value = raw[key]
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key} must be a non-empty string")
        return value

    def count(key: str, *, nullable: bool = False) -> Any:
        value = raw[key]
        if value is None and nullable:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{key} must be a positive integer")
        return value

    source = text("source")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    repo, revision = text("repo", nullable=True), text("revision", nullable=True)
    if source == "hub" and (repo is None or not _REPO.match(repo) or revision is None):
        raise ValueError("a hub entry needs repo (OWNER/NAME) and revision")
    if source == "embedded" and repo is not None:
        raise ValueError("the embedded entry has no repo")
    aliases = raw["aliases"]
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        raise ValueError("aliases must be a list of non-empty strings")
    files = tuple(_file(f) for f in raw["files"])
    if not files:
        raise ValueError("files is empty")
    _check_parts([f.name for f in files])
    experts, used = count("experts", nullable=True), count("experts_used", nullable=True)
    if (experts is None) != (used is None) or (experts is not None and used > experts):
        raise ValueError("experts and experts_used go together (null for a dense model), used <= experts")
    return CatalogEntry(
        name=text("name"), aliases=tuple(aliases), source=source, repo=repo, revision=revision, quant=text("quant"),
        files=files, size_bytes=count("size_bytes"), architecture=text("architecture"), experts=experts,
        experts_used=used, context_length=count("context_length"), draft=text("draft", nullable=True))


def _file(raw: Any) -> CatalogFile:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"].endswith(".gguf"):
        raise ValueError(f"file {raw!r} needs a name ending in .gguf")
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.match(sha)):
        raise ValueError(f"sha256 of {raw['name']} must be 64 lower-case hex digits or null")
    return CatalogFile(raw["name"], sha)


def _check_parts(names: list[str]) -> None:
    """One whole file, or every part of one split GGUF in order (1..N of N)."""
    first = split_parts(names[0])
    if first is None:
        if len(names) != 1:
            raise ValueError("several files that are not the parts of one split GGUF")
        return
    stem, _, n = first
    expected = [f"{stem}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    if names != expected:
        raise ValueError(f"the parts of a split GGUF must be listed in order: {', '.join(expected)}")


def _cross_checks(entries: list[CatalogEntry]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for entry in entries:
        spellings = [entry.name.lower(), *(a.lower() for a in entry.aliases)]
        if len(set(spellings)) != len(spellings):
            problems.append(f"{entry.name}: a spelling is listed twice (names and aliases ignore case)")
        for spelling in set(spellings):
            if seen.setdefault(spelling, entry.name) != entry.name:
                problems.append(f"{spelling!r} names both {seen[spelling]} and {entry.name}")
    names = {e.name for e in entries}
    for entry in entries:
        if entry.draft is not None and (entry.draft not in names or entry.draft == entry.name):
            problems.append(f"{entry.name}: draft {entry.draft!r} is not another entry's name")
    if sum(e.source == "embedded" for e in entries) > 1:
        problems.append("more than one embedded entry")
    return problems
