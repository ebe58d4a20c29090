"""`meshp2p download [NAME] [--draft] [--json]`: the catalog as a table (what is on disk, what fits this machine),
or fetch one model (and its draft) into the Hugging Face cache, with a progress bar.

"Fits" is the planner's rule 1 (mesh/planner.py): this machine's capacity, VRAM where it has a GPU, else RAM, is at
least FIT_HEADROOM (1.1) x the model's size. A model that does not fit can still be served split over a mesh.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from meshp2p.cli.progress import RichProgress
from meshp2p.errors import ConfigError
from meshp2p.inference.catalog import Catalog, CatalogEntry, load_catalog
from meshp2p.inference.hardware import Hardware, detect_hardware
from meshp2p.inference.hub import Hub
from meshp2p.inference.models import ModelSpec
from meshp2p.inference.on_disk import cached_entry_paths, embedded_on_disk
from meshp2p.inference.resolve import Resolver
from meshp2p.mesh.planner import FIT_HEADROOM

MIB = 1024 * 1024


def run_download(args: argparse.Namespace, console: Console) -> int:
    catalog = load_catalog()
    if args.name is None:
        if args.draft:
            raise ConfigError("--draft goes with a model name", hint="meshp2p download NAME --draft")
        return show_catalog(catalog, Hub(), detect_hardware(), as_json=args.json)
    resolver = Resolver(catalog=catalog, progress=RichProgress(console))
    specs = [resolver.resolve(args.name)]
    if args.draft:
        entry = catalog.find(args.name)
        draft = catalog.draft_of(entry) if entry is not None else None
        if draft is None:
            raise ConfigError(f"{args.name} has no draft model in the catalog",
                              hint="--draft fetches a catalog model's paired draft (the table's draft column)")
        specs.append(resolver.entry(draft))
    if args.json:
        print(json.dumps([_spec_json(s) for s in specs], indent=2))
        return 0
    out = Console()
    for spec in specs:
        out.print(f"[bold green]{spec.id}[/] ({_size(spec.size_bytes)}): {spec.path}", highlight=False, soft_wrap=True)
    return 0


def show_catalog(catalog: Catalog, hub: Hub, hardware: Hardware, *, as_json: bool) -> int:
    capacity, what = capacity_of(hardware)
    rows = [_row(entry, hub, capacity) for entry in catalog.entries]
    if as_json:
        print(json.dumps({"machine": {"capacity_bytes": capacity, "capacity": what}, "models": rows}, indent=2))
        return 0
    table = Table(title=f"{len(rows)} models ({catalog.source}) · this machine: {what}",
                  caption=f"fits here: this machine's capacity is at least {float(FIT_HEADROOM):.1f} x the size; "
                  "bigger models can be split over a mesh")
    for column in ("name", "aliases", "size", "kind", "context", "draft", "on disk", "fits here"):
        table.add_column(column)
    for row in rows:
        on_disk = "yes" if row["on_disk"] else "packaged" if row["source"] == "embedded" else ""
        table.add_row(row["name"], ", ".join(row["aliases"][:2]), _size(row["size_bytes"]), row["kind"],
                      f"{row['context_length'] // 1024}k", row["draft"] or "", on_disk,
                      "yes" if row["fits"] else "no")
    Console().print(table)
    return 0


def capacity_of(hardware: Hardware) -> tuple[int, str]:
    """What can hold a model here, in bytes, and how to say it: VRAM where there is a GPU, else RAM."""
    if hardware.vram_mb:
        return hardware.vram_mb * MIB, f"{hardware.vram_mb / 1024:.0f} GiB VRAM ({hardware.gpu_name or 'GPU'})"
    return hardware.ram_mb * MIB, f"{hardware.ram_mb / 1024:.0f} GiB RAM, no GPU"


def _row(entry: CatalogEntry, hub: Hub, capacity: int) -> dict[str, Any]:
    paths = (embedded_on_disk(),) if entry.source == "embedded" else cached_entry_paths(entry, hub)
    present = paths is not None and None not in paths
    return {"name": entry.name, "aliases": list(entry.aliases), "source": entry.source, "repo": entry.repo,
            "files": [f.name for f in entry.files], "size_bytes": entry.size_bytes, "kind": entry.kind,
            "architecture": entry.architecture, "experts": entry.experts, "experts_used": entry.experts_used,
            "context_length": entry.context_length, "draft": entry.draft, "on_disk": present,
            "path": str(paths[0]) if present and paths else None,
            "fits": capacity >= FIT_HEADROOM * entry.size_bytes}


def _spec_json(spec: ModelSpec) -> dict[str, Any]:
    return {"id": spec.id, "path": str(spec.path), "files": [str(p) for p in spec.files or (spec.path,)],
            "size_bytes": spec.size_bytes, "architecture": spec.architecture}


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 10**9 else f"{n / 1e6:.0f} MB"
