"""Can a draft model speculate for a main model? Their tokenizers must agree, read from the two GGUF headers.

llama-server checks this only after loading both models, and then (b11434) logs `the target and draft vocabs are
not compatible` and serves without speculation: the user would be told nothing, the draft's memory spent for
nothing. meshp2p checks the same rule first, in milliseconds, with the fast header reader, and refuses the pairing
with a message that names the difference. The rule is llama.cpp's own (`common_speculative_are_compatible`,
common/speculative.cpp in b11434):

1. the same tokenizer model (`tokenizer.ggml.model`: llama, gpt2, ...);
2. the same `add_bos_token`, and the same BOS id when it is added; likewise for EOS;
3. vocabulary sizes at most 128 apart (Qwen2.5's small models have 151 936 tokens, the big ones 152 064);
4. the same text for every token from id 5 up to the smaller vocabulary's size.

Rule 4 compares the raw bytes of the two token lists (length-prefixed strings in the file) rather than decoding
262 144 strings: the reader records where each skipped array starts, this module walks the length prefixes to the
two ends and compares the slices. A flag that a header leaves out is not compared (llama.cpp then applies a default
per tokenizer model that cannot be told from the file alone), so only a difference the headers prove is refused.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from meshp2p.errors import DraftMismatch
from meshp2p.inference.gguf_header import GGUFFormatError, GGUFValueType, SkippedArray, read_gguf_header

#: llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE and SPEC_VOCAB_CHECK_START_TOKEN_ID.
MAX_VOCAB_SIZE_DIFFERENCE = 128
FIRST_COMPARED_TOKEN_ID = 5
TOKENS_KEY = "tokenizer.ggml.tokens"


@dataclass(frozen=True)
class Vocab:
    """What the rule compares, from one file."""

    path: Path
    model: str | None
    size: int
    add_bos: bool | None
    bos_id: int | None
    add_eos: bool | None
    eos_id: int | None
    #: Where the first token's length prefix is in the file.
    tokens_offset: int
    #: The file is big-endian (so are its strings' length prefixes).
    big_endian: bool


def read_vocab(path: Path) -> Vocab:
    # Every array skipped: the token list is walked later, only as far as the comparison needs.
    header = read_gguf_header(path, max_array_items=0)
    tokens = header.get(TOKENS_KEY)
    if not isinstance(tokens, SkippedArray) or tokens.item_type != GGUFValueType.STRING:
        raise GGUFFormatError(f"{path} has no vocabulary ({TOKENS_KEY} is missing or not a list of strings)")

    def flag(key: str) -> bool | None:
        value = header.get(f"tokenizer.ggml.{key}")
        return value if isinstance(value, bool) else None

    def token_id(key: str) -> int | None:
        value = header.get(f"tokenizer.ggml.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    with path.open("rb") as f:
        # As the header reader decides: a version that reads byte-swapped in little-endian means big-endian.
        (version,) = struct.unpack("<I", f.read(8)[4:8])
    model = header.get("tokenizer.ggml.model")
    return Vocab(path=path, model=model if isinstance(model, str) else None, size=tokens.length,
                 add_bos=flag("add_bos_token"), bos_id=token_id("bos_token_id"),
                 add_eos=flag("add_eos_token"), eos_id=token_id("eos_token_id"),
                 tokens_offset=tokens.offset, big_endian=version & 0xFFFF == 0)


def vocab_difference(main: Vocab, draft: Vocab) -> str | None:
    """What stops `draft` from speculating for `main` (the module docstring's rule), or None when nothing does."""
    if main.model != draft.model:
        return f"its tokenizer is {draft.model!r}, the main model's {main.model!r}"
    for what, m_add, d_add, m_id, d_id in (("BOS", main.add_bos, draft.add_bos, main.bos_id, draft.bos_id),
                                           ("EOS", main.add_eos, draft.add_eos, main.eos_id, draft.eos_id)):
        if m_add is not None and d_add is not None and m_add != d_add:
            return f"it {'adds' if d_add else 'does not add'} a {what} token and the main model " \
                   f"{'does not' if d_add else 'does'}"
        if (m_add or d_add) and m_id is not None and d_id is not None and m_id != d_id:
            return f"its {what} token is id {d_id}, the main model's is {m_id}"
    if abs(main.size - draft.size) > MAX_VOCAB_SIZE_DIFFERENCE:
        return (f"its vocabulary has {draft.size} tokens, the main model's {main.size} (llama.cpp allows at most "
                f"{MAX_VOCAB_SIZE_DIFFERENCE} apart)")
    upto = min(main.size, draft.size)
    if upto <= FIRST_COMPARED_TOKEN_ID:
        return None
    with _TokenList(main) as a, _TokenList(draft) as b:
        # Length prefixes of one byte order: the stored bytes are equal exactly when the texts are.
        if main.big_endian == draft.big_endian and a.span(FIRST_COMPARED_TOKEN_ID, upto) == b.span(
                FIRST_COMPARED_TOKEN_ID, upto):
            return None
        # A mismatch (or files of two byte orders): token by token, which also names the token for the message.
        first = next((i for i in range(FIRST_COMPARED_TOKEN_ID, upto) if a.token(i) != b.token(i)), None)
        if first is None:
            return None
        return (f"token {first} differs ({b.token(first).decode('utf-8', 'replace')!r} in the draft, "
                f"{a.token(first).decode('utf-8', 'replace')!r} in the main model)")


def check_draft(main_path: Path, draft_path: Path, *, main_id: str, draft_id: str) -> None:
    """DraftMismatch, with the difference and what to do, when `draft_path` cannot speculate for `main_path`."""
    problem = vocab_difference(read_vocab(main_path), read_vocab(draft_path))
    if problem is not None:
        raise DraftMismatch(
            f"the draft model {draft_id} cannot speculate for {main_id}: {problem}",
            hint="a draft must share the main model's tokenizer (the same family: Qwen2.5 with Qwen2.5-0.5B, "
            "Llama 3.x with Llama-3.2-1B, Gemma 3 with Gemma-3-1B); pass another --draft, or --spec ngram (no "
            "draft model needed), or --no-draft")


class _TokenList:
    """One file's token list, mapped: each token is a u64 length and then its UTF-8 text."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._u64 = struct.Struct(">Q" if vocab.big_endian else "<Q")
        #: Start of each token walked so far (the walk stops where it was asked to).
        self._starts = [vocab.tokens_offset]

    def __enter__(self) -> _TokenList:
        self._file = self.vocab.path.open("rb")
        self._buf = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self

    def __exit__(self, *exc: object) -> None:
        self._buf.close()
        self._file.close()

    def _start(self, index: int) -> int:
        """Where token `index` starts (index == size: where the list ends)."""
        starts, buf, unpack = self._starts, self._buf, self._u64.unpack_from
        pos = starts[-1]
        try:
            while len(starts) <= index:
                (length,) = unpack(buf, pos)
                pos += 8 + length
                starts.append(pos)
        except struct.error as exc:
            raise GGUFFormatError(f"{self.vocab.path}: its token list runs past the end of the file") from exc
        if pos > len(buf):
            raise GGUFFormatError(f"{self.vocab.path}: its token list runs past the end of the file")
        return starts[index]

    def span(self, first: int, stop: int) -> bytes:
        """Tokens first..stop-1 as they are stored."""
        return self._buf[self._start(first):self._start(stop)]

    def token(self, index: int) -> bytes:
        return self._buf[self._start(index) + 8:self._start(index + 1)]
