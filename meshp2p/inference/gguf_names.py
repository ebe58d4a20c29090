"""GGUF file names: the parts of a split GGUF (llama.cpp's `NAME-00001-of-00003.gguf`) and quantisation tags
(`OWNER/REPO:QUANT`). Pure: names in, names out."""

from __future__ import annotations

import re
from collections.abc import Sequence

from meshp2p.errors import ModelNotFound

SPLIT_PART = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf$")


def split_parts(filename: str) -> tuple[str, int, int] | None:
    """(stem, part, parts) of a split GGUF's part name, None for a whole file."""
    m = SPLIT_PART.match(filename.rsplit("/", 1)[-1])
    if m is None:
        return None
    prefix = filename[: len(filename) - len(filename.rsplit("/", 1)[-1])]
    return prefix + m["stem"], int(m["part"]), int(m["parts"])


def model_stem(filename: str) -> str:
    """The model's name in a file name: `x/Model-Q4_K_M-00001-of-00002.gguf` -> `Model-Q4_K_M`."""
    split = split_parts(filename)
    return (split[0] if split else filename.removesuffix(".gguf")).rsplit("/", 1)[-1]


def pick_quant(names: Sequence[str], quant: str, *, repo: str) -> tuple[str, ...]:
    """The GGUF of `quant` among a repo's file names, llama.cpp's `OWNER/REPO:QUANT` way: the name contains the
    quant (case ignored) as a whole tag (`Q4_K` is not `Q4_K_M`); projector files (`mmproj`) are skipped; a split
    GGUF's parts come back as one model, in order. None or several candidates: ModelNotFound naming them."""
    tag = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?=[-.]|$)", re.IGNORECASE)
    groups: dict[str, list[str]] = {}
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if not base.lower().endswith(".gguf") or "mmproj" in base.lower():
            continue
        split = split_parts(name)
        if tag.search(model_stem(name)):
            groups.setdefault(split[0] if split else name, []).append(name)
    if not groups:
        available = sorted({model_stem(n) for n in names if n.lower().endswith(".gguf")})
        raise ModelNotFound(f"{repo} has no GGUF file of quantisation {quant}",
                            hint=("its GGUF files: " + ", ".join(available)) if available else
                            f"{repo} has no GGUF files at all")
    if len(groups) > 1:
        raise ModelNotFound(f"{repo}:{quant} matches several models: {', '.join(sorted(groups))}",
                            hint=f"name one file: hf://{repo}/FILE.gguf")
    (parts,) = groups.values()
    parts.sort()
    split = split_parts(parts[0])
    if split is not None and [split_parts(p) for p in parts] != [(split[0], i, split[2])
                                                                for i in range(1, split[2] + 1)]:
        raise ModelNotFound(f"{repo} lists {len(parts)} of the {split[2]} parts of {split[0]}",
                            hint="the repo is incomplete; pick another quantisation")
    return tuple(parts)


def all_parts(filename: str) -> tuple[str, ...]:
    """Every part's name of a split GGUF, given any part; a whole file alone."""
    split = split_parts(filename)
    if split is None:
        return (filename,)
    stem, _, n = split
    return tuple(f"{stem}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1))
