"""Read a GGUF file's metadata and tensor table in milliseconds.

(~430 lines: one format, its value types, its bounds checks and the byte positions a rewrite needs; split further
it would only scatter them.)

`gguf.GGUFReader` turns every array element into a numpy object: 8 s and ~1 GB of memory for a 262k-token
vocabulary. Choosing a model, planning a split or checking a download needs only the scalars and the tensor
table, so this reader walks the header through `mmap` + `struct`, steps over long arrays by arithmetic (or
length prefixes, for strings) and keeps them as `SkippedArray` markers. Stdlib only: no numpy, no gguf.

Layout (little-endian, or big-endian files whose version reads byte-swapped; versions 2 and 3):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv  x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml type, u64 offset in data section)
    padding to `general.alignment` (default 32) | tensor data
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from meshp2p.errors import MeshP2PError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
#: llama.cpp's GGML_MAX_DIMS: more dimensions than this means a corrupt tensor table.
MAX_TENSOR_DIMS = 4
#: Arrays of arrays are legal but never nested deeply in real files; a bound keeps garbage from recursing.
MAX_ARRAY_NESTING = 8

#: `general.architecture` values whose models only embed (llama-server needs `--embeddings` for them).
#: llama.cpp's LLAMA_POOLING_TYPE_RANK: the model scores (query, document) pairs (/v1/rerank).
POOLING_TYPE_RANK = 4
EMBEDDING_ARCHITECTURES = frozenset(
    {
        "bert",
        "modern-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "eurobert",
        "gemma-embedding",
        "llama-embed",
        "t5encoder",
    }
)


class GGUFValueType(IntEnum):
    """Metadata value types, numbered as in the GGUF specification."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_CODES: dict[int, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_SCALAR_SIZES: dict[int, int] = {t: struct.calcsize("<" + c) for t, c in _SCALAR_CODES.items()}

#: ggml type id -> (elements per block, bytes per block), as in ggml.h / gguf-py's GGML_QUANT_SIZES.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
    42: (64, 18),  # Q2_0
}


class GGUFFormatError(MeshP2PError, ValueError):
    """The file is not a GGUF file this reader understands, or it is cut short."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="re-download the model file, or check that the path names a .gguf file")


@dataclass(frozen=True)
class SkippedArray:
    """Stands in for a metadata array longer than `max_array_items` (a vocabulary, merges, scores)."""

    item_type: int
    length: int
    #: Where the first item starts in the file (or buffer), for a reader that walks the items later (inference/vocab.py
    #: compares vocabularies this way); -1 when not known.
    offset: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table; `shape` is ggml's `ne` order (innermost first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    #: Relative to the start of the data section (`GGUFHeader.data_offset`).
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n

    @property
    def n_bytes(self) -> int | None:
        """Size of the tensor's data, or None for a ggml type this reader does not know."""
        sizes = GGML_BLOCK_SIZES.get(self.ggml_type)
        if sizes is None:
            return None
        block_elements, block_bytes = sizes
        return self.n_elements // block_elements * block_bytes


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, object]
    tensors: tuple[TensorInfo, ...]
    #: Absolute file offset of the data section: tensor offsets are relative to it.
    data_offset: int
    alignment: int
    file_size: int
    #: Where each metadata value starts in the file (after its key and type), and where the tensor table starts:
    #: what a byte-level rewrite (inference/moe_shard.py) needs to copy the metadata and patch one value.
    value_offsets: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    tensor_table_offset: int = field(default=-1, compare=False)
    little_endian: bool = True

    def get(self, key: str, default: object = None) -> object:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        """`general.architecture`, or "" when the file names none."""
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else ""

    def arch_key(self, suffix: str, default: object = None) -> object:
        """Architecture-scoped keys (`llama.block_count`) are named after the architecture."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    @property
    def name(self) -> str | None:
        return _as_str(self.metadata.get("general.name"))

    @property
    def block_count(self) -> int | None:
        return _as_int(self.arch_key("block_count"))

    @property
    def expert_count(self) -> int | None:
        return _as_int(self.arch_key("expert_count"))

    @property
    def expert_used_count(self) -> int | None:
        return _as_int(self.arch_key("expert_used_count"))

    @property
    def is_moe(self) -> bool:
        # Some converters write expert_count = 0 (or 1) for dense models.
        return (self.expert_count or 0) > 1

    @property
    def context_length(self) -> int | None:
        return _as_int(self.arch_key("context_length"))

    @property
    def chat_template(self) -> str | None:
        return _as_str(self.metadata.get("tokenizer.chat_template"))

    @property
    def is_embedding_model(self) -> bool:
        """Decoder models converted for embedding (e.g. Qwen3-Embedding) are told apart by a pooling type."""
        return f"{self.architecture}.pooling_type" in self.metadata or self.architecture in EMBEDDING_ARCHITECTURES

    @property
    def is_reranking_model(self) -> bool:
        """Rerankers (bge-reranker, Qwen3-Reranker) pool by rank: llama.cpp's pooling type 4."""
        return _as_int(self.metadata.get(f"{self.architecture}.pooling_type")) == POOLING_TYPE_RANK


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _Cursor:
    """Bounds-checked reads from the mapped file, so garbage raises GGUFFormatError, never struct.error."""

    def __init__(self, buf: mmap.mmap | bytes, endian: str, path: str) -> None:
        self.buf = buf
        self.path = path
        self.size = len(buf)
        self.endian = endian
        self.pos = 0
        self._u32 = struct.Struct(endian + "I")
        self._u64 = struct.Struct(endian + "Q")

    def _need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFFormatError(
                f"{self.path} is truncated: {what} at byte {self.pos} needs {n} bytes, the file has {self.size}"
            )

    def u32(self, what: str) -> int:
        self._need(4, what)
        (value,) = self._u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(value)

    def u64(self, what: str) -> int:
        self._need(8, what)
        (value,) = self._u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return int(value)

    def string(self, what: str) -> str:
        length = self.u64(what)
        self._need(length, what)
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        # Real vocabularies hold the odd invalid UTF-8 piece; a header read should not fail on it.
        return raw.decode("utf-8", "replace")

    def skip_strings(self, count: int, what: str) -> None:
        # The hot loop of a 262k-token vocabulary: locals only, and struct's own bounds check.
        buf, pos = self.buf, self.pos
        unpack = self._u64.unpack_from
        try:
            for _ in range(count):
                (length,) = unpack(buf, pos)
                pos += 8 + length
        except (struct.error, OverflowError):
            pos = self.size + 1
        if pos > self.size:
            raise GGUFFormatError(f"{self.path} is truncated: the strings of {what} run past its {self.size} bytes")
        self.pos = pos

    def scalars(self, value_type: int, count: int, what: str) -> tuple[object, ...]:
        size = _SCALAR_SIZES[value_type] * count
        self._need(size, what)
        values = struct.unpack_from(f"{self.endian}{count}{_SCALAR_CODES[value_type]}", self.buf, self.pos)
        self.pos += size
        return values

    def skip(self, n: int, what: str) -> None:
        self._need(n, what)
        self.pos += n


def _read_value(cur: _Cursor, value_type: int, key: str, max_items: int, depth: int = 0) -> object:
    if value_type in _SCALAR_CODES:
        return cur.scalars(value_type, 1, key)[0]
    if value_type == GGUFValueType.STRING:
        return cur.string(key)
    if value_type != GGUFValueType.ARRAY:
        raise GGUFFormatError(f"GGUF key {key!r} has unknown value type {value_type}")
    if depth >= MAX_ARRAY_NESTING:
        raise GGUFFormatError(f"GGUF key {key!r} nests arrays more than {MAX_ARRAY_NESTING} deep")
    item_type = cur.u32(key)
    length = cur.u64(key)
    keep = length <= max_items
    start = cur.pos
    if item_type in _SCALAR_CODES:
        if keep:
            return list(cur.scalars(item_type, length, key))
        cur.skip(length * _SCALAR_SIZES[item_type], key)
    elif item_type == GGUFValueType.STRING:
        if keep:
            return [cur.string(key) for _ in range(length)]
        cur.skip_strings(length, key)
    elif item_type == GGUFValueType.ARRAY:
        items = [_read_value(cur, item_type, key, max_items, depth + 1) for _ in range(length)]
        if keep:
            return items
    else:
        raise GGUFFormatError(f"GGUF key {key!r} is an array of unknown value type {item_type}")
    return SkippedArray(item_type, length, start)


def _read_tensor(cur: _Cursor) -> TensorInfo:
    name = cur.string("tensor name")
    n_dims = cur.u32(f"dimension count of tensor {name!r}")
    if n_dims > MAX_TENSOR_DIMS:
        raise GGUFFormatError(f"GGUF tensor {name!r} claims {n_dims} dimensions (at most {MAX_TENSOR_DIMS})")
    shape = tuple(cur.u64(f"shape of tensor {name!r}") for _ in range(n_dims))
    ggml_type = cur.u32(f"type of tensor {name!r}")
    offset = cur.u64(f"offset of tensor {name!r}")
    return TensorInfo(name=name, shape=shape, ggml_type=ggml_type, offset=offset)


def _parse(buf: mmap.mmap | bytes, path: str, max_array_items: int) -> GGUFHeader:
    if len(buf) < 4 or buf[:4] != GGUF_MAGIC:
        raise GGUFFormatError(f"{path} is not a GGUF file (it does not start with b'GGUF')")
    cur = _Cursor(buf, "<", path)
    cur.pos = 4
    version = cur.u32("version")
    if version & 0xFFFF == 0 and version != 0:
        # A big-endian file: its version reads byte-swapped in little-endian.
        cur = _Cursor(buf, ">", path)
        cur.pos = 4
        version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFFormatError(f"{path} is GGUF version {version}; only versions 2 and 3 are supported")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")

    metadata: dict[str, object] = {}
    value_offsets: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        value_type = cur.u32(f"type of {key!r}")
        if key in metadata:
            raise GGUFFormatError(f"{path} repeats metadata key {key!r}")
        value_offsets[key] = cur.pos
        metadata[key] = _read_value(cur, value_type, key, max_array_items)

    tensor_table_offset = cur.pos
    tensors = tuple(_read_tensor(cur) for _ in range(n_tensors))
    if len({t.name for t in tensors}) != len(tensors):
        raise GGUFFormatError(f"{path} repeats a tensor name")

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFFormatError(f"{path} has general.alignment {alignment!r}; it must be a power of two")
    data_offset = -(-cur.pos // alignment) * alignment

    for tensor in tensors:
        n_bytes = tensor.n_bytes
        if n_bytes is None:
            continue
        end = data_offset + tensor.offset + n_bytes
        if end > len(buf):
            raise GGUFFormatError(
                f"{path} is truncated: tensor {tensor.name!r} ends at byte {end}, file has {len(buf)}"
            )
    return GGUFHeader(
        version=version,
        metadata=metadata,
        tensors=tensors,
        data_offset=data_offset,
        alignment=alignment,
        file_size=len(buf),
        value_offsets=value_offsets,
        tensor_table_offset=tensor_table_offset,
        little_endian=cur.endian == "<",
    )


def read_gguf_header(path: str | os.PathLike[str], *, max_array_items: int = 64) -> GGUFHeader:
    """Parse metadata and tensor table; arrays longer than `max_array_items` become `SkippedArray`.

    Also checks that every tensor's data lies inside the file, which catches interrupted downloads.
    Raises GGUFFormatError (a ValueError) for anything that is not a complete, readable GGUF file, and
    OSError when the file cannot be opened.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            # mmap refuses empty files.
            return _parse(b"", os.fspath(path), max_array_items)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm, os.fspath(path), max_array_items)


def parse_gguf_header(data: bytes, *, name: str = "<bytes>", max_array_items: int = 64) -> GGUFHeader:
    """`read_gguf_header` for a header already in memory (a peer's first bytes, a test's hand-built file).

    `name` stands for the path in error messages. Raises GGUFFormatError for anything that is not a complete GGUF.
    """
    return _parse(data, name, max_array_items)
