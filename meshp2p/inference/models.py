"""What a node knows about a model it can serve, read from the GGUF header."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from meshp2p.errors import ModelNotFound
from meshp2p.inference.gguf_header import GGUFHeader, read_gguf_header
from meshp2p.inference.moe import ModelLayout, model_layout


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding for one model (inference/speculation.py): a draft model that llama-server loads next to
    it (`mode` "draft"), or n-gram lookup in the tokens already seen (`mode` "ngram", no second model)."""

    mode: Literal["draft", "ngram"]
    draft_id: str | None = None
    draft_path: Path | None = None
    #: The draft's file size (all parts): memory the model needs beside its own.
    draft_size_bytes: int = 0

    @property
    def label(self) -> str:
        """What /api/status shows: the draft's id, or "ngram"."""
        return self.draft_id or self.mode


@dataclass(frozen=True)
class ModelSpec:
    """A model this node can serve: where its GGUF lives and how llama-server should run it."""

    id: str
    path: Path
    size_bytes: int
    architecture: str
    embeddings: bool = False
    #: A reranker (pooling type `rank`): served with `--reranking`, answers /v1/rerank.
    reranking: bool = False
    #: Jinja chat template given to llama-server when the GGUF's own is missing or unsuitable.
    chat_template: str | None = None
    #: Stop strings added to requests that give none (e.g. a base model behind a plain-text chat template).
    default_stop: tuple[str, ...] = ()
    extra_server_args: tuple[str, ...] = field(default=())
    #: Every file of a split GGUF in order, `path` (the one llama-server is given) first; empty for a whole file.
    #: `size_bytes` is then the parts' total.
    files: tuple[Path, ...] = ()
    #: How llama-server speculates for this model; None: it does not.
    speculation: Speculation | None = None
    #: Bytes per block, outside the blocks, and the experts of a MoE model (from the tensor table).
    layout: ModelLayout | None = None


def spec_from_gguf(path: Path, *, model_id: str | None = None) -> ModelSpec:
    """Read the header (milliseconds, even for big vocabularies) and describe the file."""
    try:
        header: GGUFHeader = read_gguf_header(path)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{path} is not a readable GGUF file: {exc}",
                            hint="pass a .gguf model file (llama.cpp format)") from exc
    return ModelSpec(
        id=model_id or path.stem,
        path=path,
        size_bytes=header.file_size,
        architecture=header.architecture,
        embeddings=header.is_embedding_model,
        reranking=header.is_reranking_model,
        layout=model_layout(header),
    )


def spec_from_parts(paths: tuple[Path, ...], *, model_id: str | None = None) -> ModelSpec:
    """A model in one file or split in several (`-00001-of-0000N.gguf`): described from the first part's header,
    sized by all of them."""
    spec = spec_from_gguf(paths[0], model_id=model_id)
    if len(paths) == 1:
        return spec
    try:
        rest = [read_gguf_header(p) for p in paths[1:]]
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"a part of {paths[0].name} is not a readable GGUF file: {exc}",
                            hint="download the model again: `meshp2p download NAME`") from exc
    layout = model_layout(read_gguf_header(paths[0]), *rest)
    return replace(spec, size_bytes=sum(p.stat().st_size for p in paths), files=paths, layout=layout)
