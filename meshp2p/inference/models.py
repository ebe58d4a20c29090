"""What a node knows about a model it can serve, read from the GGUF header."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from meshp2p.errors import ModelNotFound
from meshp2p.inference.gguf_header import GGUFHeader, read_gguf_header


@dataclass(frozen=True)
class ModelSpec:
    """A model this node can serve: where its GGUF lives and how llama-server should run it."""

    id: str
    path: Path
    size_bytes: int
    architecture: str
    embeddings: bool = False
    #: Jinja chat template given to llama-server when the GGUF's own is missing or unsuitable.
    chat_template: str | None = None
    #: Stop strings added to requests that give none (e.g. a base model behind a plain-text chat template).
    default_stop: tuple[str, ...] = ()
    extra_server_args: tuple[str, ...] = field(default=())


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
    )
