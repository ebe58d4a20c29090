"""How much router traffic each expert of a Mixture-of-Experts model gets: the input of `--moe shard` planning.

Calibration runs llama.cpp's `llama-imatrix` over a small built-in text (`data/calibration.txt`: ~4 KB of prose,
code, maths, dialogue, several languages) and reads its GGUF output: for each layer, the tensor
`blk.N.ffn_{gate,up,down}_exps.weight.counts` holds how many (token, slot) pairs the router sent to each expert.
Those counts rank the experts: the most used form the shared core every shard keeps (mesh/moe_shards.py).

The run is deterministic (the same file, the same text, one thread, fixed context and chunk count, the pinned
llama.cpp build), so members of a shard group that calibrate the same file get the same counts; the result is
cached per content id under `$MESHP2P_HOME/moe/`, and its digest travels in status gossip so members check that
they plan from the same numbers (app/moe_shards.py).

A model too big for this node is not run here alone (`expert_usage(..., alone=False)`): one member runs
`run_imatrix_placed` with a layer split's placement (`--rpc` to workers, app/split_calibration.py), whose counts are
the same as a run on one node (the router statistics are the model's, wherever its layers run; the e2e test
compares them on a tiny file: equal).

When `llama-imatrix` is missing (a build made before shard mode) or fails, the estimate is the L2 norm of each
expert's router row (`ffn_gate_inp`, one row of n_embd weights per expert): the router's logit for an expert is
that row's dot product with the hidden state, so a row with a larger norm wins more often for typical inputs.
It is a weak proxy (it ignores the direction of the hidden states), said as such in logs and /api/status as
`source: weight-norm`. Norms are stored as integers (micro-units) so the digest does not depend on float printing.

A member that only has the estimate is given measured counts by a member that has them
(`/meshp2p/moe-usage/1.0.0`, protocols/moe-usage.md; app/moe_shards.py asks): they go into the same cache, with
the peer they came from (`from`, not part of the digest), and are used as if measured here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import trio

from meshp2p.errors import MeshP2PError
from meshp2p.home import meshp2p_home
from meshp2p.inference.gguf_header import GGUFFormatError, GGUFHeader, read_gguf_header
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.moe_usage import SOURCE_IMATRIX as SOURCE_IMATRIX
from meshp2p.wire.moe_usage import SOURCE_WEIGHT_NORM as SOURCE_WEIGHT_NORM
from meshp2p.wire.moe_usage import usage_digest, usage_tag

log = logging.getLogger(__name__)

#: llama-imatrix's context per chunk and the most chunks read from the text (the text decides if fewer).
CALIBRATION_CTX_TOKENS = 128
CALIBRATION_MAX_CHUNKS = 32
CALIBRATION_TIMEOUT_S = 1800.0
_PROJECTIONS = ("ffn_gate_exps", "ffn_up_exps", "ffn_gate_up_exps", "ffn_down_exps")
_GGML_F32, _GGML_F16 = 0, 1


@dataclass(frozen=True)
class ExpertUsage:
    """Router traffic per layer per expert (integers: routed token slots, or micro-norms for the estimate)."""

    source: str
    counts: tuple[tuple[int, ...], ...]
    #: The peer these counts were received from (protocols/moe-usage.md); None: measured or estimated here.
    #: Not in the digest: the same counts are the same plan wherever they were measured.
    origin: str | None = field(default=None, compare=False)

    @property
    def digest(self) -> str:
        """16 hex digits over the source and every count: equal digests, equal plans (wire/moe_usage.py)."""
        return usage_digest(self.source, self.counts)

    @property
    def tag(self) -> str:
        """`<source>:<digest>`, the form gossiped in status (protocols/gossip.md `moe_shards`)."""
        return usage_tag(self.source, self.digest)

    @property
    def described(self) -> str:
        """For logs and /api/status: the source, and the peer it came from (its last 8 characters) if not here."""
        return self.source if self.origin is None else f"{self.source} (from {self.origin[-8:]})"

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"source": self.source, "counts": [list(layer) for layer in self.counts]}
        if self.origin is not None:
            data["from"] = self.origin
        return data


def calibration_text() -> Path:
    """The built-in calibration text (a package data file)."""
    return Path(str(resources.files("meshp2p.inference") / "data" / "calibration.txt"))


def usage_cache_file(content_id: ContentId) -> Path:
    return meshp2p_home() / "moe" / f"{content_id.digest.hex()}-{content_id.size}.usage.json"


def expert_usage(model: Path, content_id: ContentId | None, imatrix: Path | None, *,
                 alone: bool = True) -> ExpertUsage:
    """The model's expert usage: cached, else measured with `imatrix`, else estimated (blocking: run in a thread).

    `alone` False: this node cannot hold the model (the planner's rule 1), so llama-imatrix is not run here on its
    own; the estimate stands until the model is calibrated over a layer split (app/split_calibration.py)."""
    header = read_gguf_header(model)
    n_layers, n_expert = header.block_count or 0, header.expert_count or 0
    cache = None if content_id is None else usage_cache_file(content_id)
    if cache is not None:
        cached = _read_cache(cache, n_layers, n_expert)
        # An estimate is measured again once llama-imatrix is there.
        if cached is not None and (cached.source == SOURCE_IMATRIX or imatrix is None):
            return cached
    usage: ExpertUsage | None = None
    if imatrix is not None and not alone:
        log.info("%s does not fit this node: router weight-norm estimate until it is calibrated over a layer split",
                 model.name)
    elif imatrix is None:
        log.warning("llama-imatrix is not in this llama.cpp build: expert usage of %s is estimated from router "
                    "weight norms (run `meshp2p llama build` for measured router statistics)", model.name)
    else:
        try:
            usage = run_imatrix(imatrix, model, n_layers, n_expert)
        except CalibrationFailed as exc:
            log.warning("calibrating %s with llama-imatrix failed (%s): using the router weight-norm estimate",
                        model.name, exc)
    if usage is None:
        usage = weight_norm_usage(model, header)
    if content_id is not None:
        store_usage(content_id, usage)
    return usage


def store_usage(content_id: ContentId, usage: ExpertUsage) -> None:
    """Cache `usage` as the file's (replacing what was there): measured here, estimated, or a peer's."""
    cache = usage_cache_file(content_id)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(usage.to_json()))
    tmp.replace(cache)


def cached_usage(model: Path, content_id: ContentId) -> ExpertUsage | None:
    """The measured usage cached for this file, if any and if it fits the file's header (blocking: a thread)."""
    try:
        header = read_gguf_header(model)
    except (OSError, GGUFFormatError):  # the file changed or went since it was offered: nothing to give
        return None
    cached = _read_cache(usage_cache_file(content_id), header.block_count or 0, header.expert_count or 0)
    return cached if cached is not None and cached.source == SOURCE_IMATRIX else None


class CalibrationFailed(MeshP2PError):
    """llama-imatrix did not give counts; the caller falls back to the estimate (never raised past this module)."""


def imatrix_argv(imatrix: Path, model: Path, out: Path, *, text: Path | None = None,
                 placement: tuple[str, ...] = ()) -> list[str]:
    """The llama-imatrix command line of a calibration writing `out`.

    `placement`: where the layers go, as llama-server is given it for a layer split (app/pipeline.py's
    `pipeline_args`: `--rpc` to tunnel ports, `-ngl`, `--tensor-split`, `-ot`); () runs it all here."""
    return [str(imatrix), "-m", str(model), "-f", str(text or calibration_text()), "-o", str(out),
            "-c", str(CALIBRATION_CTX_TOKENS), "--chunks", str(CALIBRATION_MAX_CHUNKS), "-t", "1",
            "--no-ppl", "--output-frequency", "100000", *placement]


def run_imatrix(imatrix: Path, model: Path, n_layers: int, n_expert: int, *,
                text: Path | None = None) -> ExpertUsage:
    """Run llama-imatrix on `model`, alone, over the calibration text and read its per-expert counts."""
    with tempfile.TemporaryDirectory(prefix="meshp2p-imatrix-") as tmp:
        out = Path(tmp) / "imatrix.gguf"
        try:
            done = subprocess.run(imatrix_argv(imatrix, model, out, text=text), capture_output=True, text=True,
                                  timeout=CALIBRATION_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CalibrationFailed(str(exc)) from exc
        return _read_output(out, done.returncode, done.stderr or done.stdout, n_layers, n_expert)


async def run_imatrix_placed(imatrix: Path, model: Path, n_layers: int, n_expert: int, *,
                             placement: tuple[str, ...]) -> ExpertUsage:
    """`run_imatrix` with its layers placed by `placement` (a layer split), as a trio task: cancelling it (the
    node stopping) kills llama-imatrix at once, and the RPC tunnels it talks through live in the caller's nursery
    meanwhile. CalibrationFailed when it gives no counts, as `run_imatrix`."""
    with tempfile.TemporaryDirectory(prefix="meshp2p-imatrix-") as tmp:
        out = Path(tmp) / "imatrix.gguf"
        try:
            with trio.fail_after(CALIBRATION_TIMEOUT_S):
                done = await trio.run_process(imatrix_argv(imatrix, model, out, placement=placement),
                                              capture_stdout=True, capture_stderr=True, check=False,
                                              stdin=subprocess.DEVNULL)
        except (OSError, trio.TooSlowError) as exc:
            raise CalibrationFailed(str(exc) or f"no counts after {CALIBRATION_TIMEOUT_S:g} s") from exc
        output = (done.stderr or done.stdout or b"").decode(errors="replace")
        return await trio.to_thread.run_sync(_read_output, out, done.returncode, output, n_layers, n_expert)


def _read_output(out: Path, returncode: int, output: str, n_layers: int, n_expert: int) -> ExpertUsage:
    if returncode != 0 or not out.is_file():
        tail = output.strip().splitlines()[-1:] or ["no output"]
        raise CalibrationFailed(f"exit {returncode}: {tail[0][:200]}")
    return ExpertUsage(SOURCE_IMATRIX, imatrix_counts(out, n_layers, n_expert))


def imatrix_counts(path: Path, n_layers: int, n_expert: int) -> tuple[tuple[int, ...], ...]:
    """Per layer, per expert: the token slots routed to it, from an imatrix GGUF (F32 `*.counts` tensors)."""
    header = read_gguf_header(path)
    by_name = {t.name: t for t in header.tensors}
    layers: list[tuple[int, ...]] = []
    with open(path, "rb") as f:
        for layer in range(n_layers):
            tensor = next((by_name[name] for p in _PROJECTIONS
                           if (name := f"blk.{layer}.{p}.weight.counts") in by_name), None)
            if tensor is None or tensor.ggml_type != _GGML_F32 or math.prod(tensor.shape) != n_expert:
                raise CalibrationFailed(f"the imatrix output has no per-expert counts for layer {layer}")
            f.seek(header.data_offset + tensor.offset)
            values = struct.unpack(f"<{n_expert}f", f.read(4 * n_expert))
            layers.append(tuple(round(v) for v in values))
    return tuple(layers)


def weight_norm_usage(model: Path, header: GGUFHeader | None = None) -> ExpertUsage:
    """The estimate: each expert's router-row L2 norm (micro-units); equal for every expert where the router's
    type is not F32/F16 (then the planner's order alone decides)."""
    header = header or read_gguf_header(model)
    n_layers, n_expert = header.block_count or 0, header.expert_count or 0
    by_name = {t.name: t for t in header.tensors}
    layers: list[tuple[int, ...]] = []
    fd = os.open(model, os.O_RDONLY)
    try:
        for layer in range(n_layers):
            tensor = by_name.get(f"blk.{layer}.ffn_gate_inp.weight")
            if tensor is None or tensor.ggml_type not in (_GGML_F32, _GGML_F16) or not tensor.shape:
                layers.append((1,) * n_expert)
                continue
            width = 4 if tensor.ggml_type == _GGML_F32 else 2
            n_embd = tensor.shape[0]
            raw = os.pread(fd, n_embd * n_expert * width, header.data_offset + tensor.offset)
            row_values = struct.unpack(f"<{n_embd * n_expert}{'f' if width == 4 else 'e'}", raw)
            layers.append(tuple(
                round(1e6 * math.sqrt(sum(v * v for v in row_values[e * n_embd:(e + 1) * n_embd])))
                for e in range(n_expert)))
    finally:
        os.close(fd)
    return ExpertUsage(SOURCE_WEIGHT_NORM, tuple(layers))


def _read_cache(path: Path, n_layers: int, n_expert: int) -> ExpertUsage | None:
    try:
        data = json.loads(path.read_text())
        origin = data.get("from")
        usage = ExpertUsage(str(data["source"]), tuple(tuple(int(c) for c in layer) for layer in data["counts"]),
                            origin=origin if isinstance(origin, str) else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(usage.counts) != n_layers or any(len(layer) != n_expert for layer in usage.counts):
        return None
    return usage
