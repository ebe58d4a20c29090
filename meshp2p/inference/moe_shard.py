"""Write a Mixture-of-Experts GGUF that keeps a subset of its experts: the trunk whole, chosen experts per layer.

Why a byte-level rewrite: llama.cpp has no tool for it, and going through `gguf`'s reader and writer turns every
tensor into numpy and back (10 s for a 270M model, hours for a 30B one). A GGUF stores each layer's experts as
one tensor per projection whose outermost ggml axis is the expert (`blk.N.ffn_{gate,up,down}_exps.weight`,
shape {.., .., n_expert}); quantisation blocks run along the innermost axis, so expert `e` is the contiguous
`e`-th of n_expert equal slices of the tensor's bytes, whatever the type. The router (`ffn_gate_inp`, shape
{n_embd, n_expert}) holds one row per expert the same way, and so do the per-expert biases some architectures
carry (`*_exps.bias`, `ffn_gate_inp.bias`, `exp_probs_b`). Cutting all of them with the same expert list, in
the same order, and patching `<arch>.expert_count` gives a model llama.cpp loads as if it had only those experts:
the router then picks among them exactly as the original picks among all of them (a shard holding every expert in
a permuted order answers the original's tokens: tests/inference/test_moe_shard.py).

The file is written as a stream: metadata copied byte for byte (one value patched), a new tensor table (expert
axes shortened, offsets recomputed), then every tensor's bytes copied with `os.copy_file_range` (in-kernel, no
Python buffers) slice by slice, into `<dst>.partial`, renamed into place only when complete.

Shared experts (`ffn_*_shexp`) are trunk: they are kept whole. Architectures that group experts for routing
(`expert_group_count` > 1, DeepSeek-V3 style) are refused: cutting a group changes which experts compete.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from meshp2p.errors import MeshP2PError
from meshp2p.inference.gguf_header import GGUFHeader, GGUFValueType, TensorInfo, read_gguf_header

#: Tensors of a block that hold one slice per expert along their outermost axis.
_EXPERT_TENSOR = re.compile(r"^blk\.(\d+)\.(ffn_(gate|up|down|gate_up)_exps\.(weight|bias|scale)|"
                            r"ffn_gate_inp\.(weight|bias)|exp_probs_b\.bias)$")
_INT_CODES = {GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
              GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
              GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q"}
COPY_CHUNK_BYTES = 64 * 2**20


class ShardError(MeshP2PError):
    """The model cannot be cut as asked (not MoE, an expert list that does not fit it)."""


@dataclass(frozen=True)
class ShardReport:
    path: Path
    experts_kept: int
    bytes_written: int
    #: Bytes of the source's expert tensors that the shard left out.
    bytes_left_out: int


def expert_layer(tensor: TensorInfo, n_expert: int) -> int | None:
    """The block whose experts `tensor` holds one slice each of, or None for a trunk tensor."""
    match = _EXPERT_TENSOR.match(tensor.name)
    if match is None or not tensor.shape or tensor.shape[-1] != n_expert:
        return None
    return int(match.group(1))


def write_expert_shard(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                       keep: Sequence[Sequence[int]] | Sequence[int], *,
                       on_bytes: Callable[[int], None] = lambda n: None) -> ShardReport:
    """Write `src` with only the experts in `keep` to `dst`: one list for every layer, or one list per layer
    (every list the same length, since a GGUF has one expert count). Order matters only for the layout."""
    header = read_gguf_header(src)
    n_expert, n_layers = _check_model(header, src)
    per_layer = _per_layer(keep, n_layers, n_expert, header.expert_used_count or 1)
    kept = len(per_layer[0])
    target = Path(dst)
    partial = target.with_name(target.name + ".partial")
    left_out = 0
    # Unbuffered: the copies move the file position in the kernel, where `tell` must read it.
    with open(src, "rb", buffering=0) as source, open(partial, "wb", buffering=0) as out:
        layout = _shard_layout(header, n_expert, kept)
        out.write(_header_bytes(source, header, kept, layout))
        base = out.tell()
        for tensor, new_offset, new_bytes in layout:
            _pad_to(out, base + new_offset)
            start = header.data_offset + tensor.offset
            size = tensor.n_bytes or 0
            layer = expert_layer(tensor, n_expert)
            if layer is None:
                _copy(source, out, start, size, on_bytes)
                continue
            piece = size // n_expert
            for expert in per_layer[layer]:
                _copy(source, out, start + expert * piece, piece, on_bytes)
            left_out += size - new_bytes
        written = out.tell()
    os.replace(partial, target)
    return ShardReport(target, kept, written, left_out)


def _check_model(header: GGUFHeader, src: str | os.PathLike[str]) -> tuple[int, int]:
    if not header.little_endian:
        raise ShardError(f"{src} is a big-endian GGUF; shards are written for little-endian files only")
    if not header.is_moe or header.expert_count is None:
        raise ShardError(f"{src} is not a Mixture-of-Experts model (no {header.architecture}.expert_count > 1)",
                         hint="only MoE models are split by experts; dense models split by layers")
    groups = header.arch_key("expert_group_count")
    if isinstance(groups, int) and groups > 1:
        raise ShardError(f"{src} routes its experts in {groups} groups; cutting experts would change the routing",
                         hint="serve it with the layer split (the default) instead of --moe shard")
    unknown = [t.name for t in header.tensors if t.n_bytes is None]
    if unknown:
        raise ShardError(f"{src} has tensors of a type this reader does not size ({unknown[0]}, ...)")
    return header.expert_count, header.block_count or 0


def _per_layer(keep: Sequence[Sequence[int]] | Sequence[int], n_layers: int, n_expert: int,
               used: int) -> list[list[int]]:
    lists: list[list[int]]
    if keep and all(isinstance(k, int) for k in keep):
        lists = [[int(k) for k in keep]] * n_layers  # type: ignore[arg-type]
    else:
        lists = [[int(e) for e in layer] for layer in keep]  # type: ignore[union-attr]
    if len(lists) != n_layers:
        raise ShardError(f"an expert list per layer was asked for {len(lists)} layers; the model has {n_layers}")
    sizes = {len(layer) for layer in lists}
    if len(sizes) != 1:
        raise ShardError("every layer must keep the same number of experts (a GGUF has one expert_count)")
    for number, layer in enumerate(lists):
        if len(set(layer)) != len(layer) or any(not 0 <= e < n_expert for e in layer):
            raise ShardError(f"layer {number}: experts must be distinct numbers in 0..{n_expert - 1}, got {layer}")
    if sizes.pop() < used:
        raise ShardError(f"a shard needs at least the {used} experts the model uses per token",
                         hint="keep more experts per layer")
    return lists


def _shard_layout(header: GGUFHeader, n_expert: int, kept: int) -> list[tuple[TensorInfo, int, int]]:
    """Each tensor with its offset and size in the shard (expert axes cut to `kept`), in the source's order."""
    layout: list[tuple[TensorInfo, int, int]] = []
    offset = 0
    for tensor in header.tensors:
        size = tensor.n_bytes or 0
        if expert_layer(tensor, n_expert) is not None:
            size = size // n_expert * kept
        offset = _aligned(offset, header.alignment)
        layout.append((tensor, offset, size))
        offset += size
    return layout


def _header_bytes(source: BinaryIO, header: GGUFHeader, kept: int,
                  layout: list[tuple[TensorInfo, int, int]]) -> bytes:
    """The shard's header: magic, counts and metadata copied, `expert_count` patched, the new tensor table, padding."""
    head = bytearray(os.pread(source.fileno(), header.tensor_table_offset, 0))
    key = f"{header.architecture}.expert_count"
    at = header.value_offsets[key]
    code = _INT_CODES.get(struct.unpack_from("<I", head, at - 4)[0])
    if code is None:
        raise ShardError(f"{key} is not stored as an integer")
    struct.pack_into("<" + code, head, at, kept)
    for tensor, offset, size in layout:
        name = tensor.name.encode()
        shape = list(tensor.shape)
        if size != (tensor.n_bytes or 0):
            shape[-1] = kept
        head += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(shape))
        head += struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", tensor.ggml_type, offset)
    head += b"\0" * (_aligned(len(head), header.alignment) - len(head))
    return bytes(head)


def _aligned(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _pad_to(out: BinaryIO, position: int) -> None:
    gap = position - out.tell()
    if gap:
        out.write(b"\0" * gap)


def _copy(source: BinaryIO, out: BinaryIO, start: int, size: int, on_bytes: Callable[[int], None]) -> None:
    """`size` bytes of `source` from `start` appended to `out`, in the kernel where it can."""
    src_fd, dst_fd = source.fileno(), out.fileno()
    done = 0
    while done < size:
        n = min(COPY_CHUNK_BYTES, size - done)
        try:
            moved = os.copy_file_range(src_fd, dst_fd, n, start + done)
        except OSError:  # a file system without copy_file_range
            moved = os.write(dst_fd, os.pread(src_fd, n, start + done))
        if moved <= 0:
            raise ShardError(f"the source ended {size - done} bytes early while copying a tensor")
        done += moved
        on_bytes(moved)
