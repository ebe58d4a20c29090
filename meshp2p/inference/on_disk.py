"""Which models are on disk here, found without a single request: catalog models and other GGUFs in the Hugging Face
cache, the embedded model once assembled, and the GGUFs in the model store ($MESHP2P_HOME/models).

A catalog model counts as on disk when every file the catalog lists is in the cache at the entry's revision, or,
failing that, when the cached snapshot of its repo holds a whole model of the entry's quantisation (what the
download falls back to when the repo renamed a file). GGUFs of the cache that no catalog entry claims are listed as
`hf://OWNER/REPO/FILE` (the id `--model` takes to serve them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshp2p.errors import ModelNotFound
from meshp2p.home import models_dir
from meshp2p.inference.catalog import Catalog, CatalogEntry
from meshp2p.inference.downloads import cached_listing, cached_path
from meshp2p.inference.embedded import DEFAULT_FILE, DEFAULT_MODEL_ID
from meshp2p.inference.gguf_header import read_gguf_header
from meshp2p.inference.gguf_names import all_parts, pick_quant, split_parts
from meshp2p.inference.hub import Hub, HubFile
from meshp2p.inference.moe import ModelLayout, model_layout


@dataclass(frozen=True)
class LocalModel:
    """A model this machine can serve without fetching anything."""

    id: str
    #: "catalog", "embedded", "hf" (another GGUF in the Hugging Face cache) or "store" ($MESHP2P_HOME/models).
    source: str
    paths: tuple[Path, ...]
    repo: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths)

    def layout(self) -> ModelLayout | None:
        """Its blocks' and experts' bytes from the tensor tables (milliseconds); None for an unreadable file."""
        try:
            headers = [read_gguf_header(p) for p in self.paths]
        except (OSError, ValueError):
            return None
        return model_layout(*headers)

    def to_json(self) -> dict[str, object]:
        layout = self.layout()
        return {"id": self.id, "source": self.source, "repo": self.repo, "path": str(self.paths[0]),
                "files": [str(p) for p in self.paths], "size_bytes": self.size_bytes,
                "moe": None if layout is None else layout.to_json()}


def cached_entry_paths(entry: CatalogEntry, hub: Hub) -> tuple[Path, ...] | None:
    """A hub entry's files in the cache (module docstring), or in the model store under the catalog's file names
    (where a fetch from mesh members puts them: app/model_fetcher.py), or None."""
    if entry.repo is None:
        return None
    stored = [models_dir() / f.name for f in entry.files]
    if stored and all(p.is_file() for p in stored):
        return tuple(stored)
    paths = [cached_path(f, hub) for f in entry.hub_files()]
    if all(p is not None for p in paths):
        return tuple(p for p in paths if p is not None)
    return cached_quant(entry.repo, entry.revision or "main", entry.quant, hub)


def cached_quant(repo: str, revision: str, quant: str, hub: Hub) -> tuple[Path, ...] | None:
    """The whole model of `quant` in the repo's cached snapshot (`OWNER/REPO:QUANT` offline), or None."""
    names = cached_listing(repo, revision, hub)
    if not names:
        return None
    try:
        parts = pick_quant(names, quant, repo=repo)
    except ModelNotFound:
        return None
    paths = [cached_path(HubFile(repo, name, revision), hub) for name in parts]
    return tuple(p for p in paths if p is not None) if all(p is not None for p in paths) else None


def embedded_on_disk() -> Path | None:
    """The assembled default model in the store, if it was assembled."""
    path = models_dir() / DEFAULT_FILE
    return path if path.is_file() else None


def local_models(catalog: Catalog, hub: Hub) -> list[LocalModel]:
    """Every model on disk here, catalog models first (in catalog order)."""
    found: list[LocalModel] = []
    claimed: set[Path] = set()
    embedded = embedded_on_disk()
    for entry in catalog.entries:
        if entry.source == "embedded":
            if embedded is not None:
                found.append(LocalModel(entry.name, "embedded", (embedded,)))
                claimed.add(embedded)
        elif (paths := cached_entry_paths(entry, hub)) is not None:
            found.append(LocalModel(entry.name, "catalog", paths, entry.repo))
            claimed.update(paths)
    if embedded is not None and embedded not in claimed:  # a MESHP2P_CATALOG without the embedded entry
        found.append(LocalModel(DEFAULT_MODEL_ID, "embedded", (embedded,)))
        claimed.add(embedded)
    for repo, names in _cached_ggufs(hub).items():
        for name in names:
            split = split_parts(name)
            if split is not None and split[1] != 1:
                continue  # a split model is listed once, by its first part
            parts = all_parts(name)
            whole = tuple(p for p in (cached_path(HubFile(repo, part), hub) for part in parts) if p is not None)
            if len(whole) == len(parts) and not claimed.intersection(whole):
                found.append(LocalModel(f"hf://{repo}/{name}", "hf", whole, repo))
    for path in sorted(models_dir().glob("*.gguf")):
        if path not in claimed:
            found.append(LocalModel(path.stem, "store", (path,)))
    return found


def _cached_ggufs(hub: Hub) -> dict[str, list[str]]:
    """GGUF names in each cached model repo's `main` snapshot."""
    out: dict[str, list[str]] = {}
    for folder in sorted(hub.cache().glob("models--*--*")):
        _, owner, name = folder.name.split("--", 2)
        names = [n for n in cached_listing(f"{owner}/{name}", "main", hub) if n.lower().endswith(".gguf")]
        if names:
            out[f"{owner}/{name}"] = names
    return out

