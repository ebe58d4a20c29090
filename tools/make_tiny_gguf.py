#!/usr/bin/env python3
"""Write tiny random-weight GGUF models that stock llama-server loads in about 0.1 s.

Tests need real GGUF files (dense, MoE, embedding) without downloading hundreds of megabytes. These models
speak gibberish, but every llama.cpp code path sees a well-formed file:

- the vocabulary is SentencePiece-style with byte fallback, so any prompt tokenizes;
- the output rows of control and non-printable byte tokens are zero, so their logit is exactly 0 while printable
  pieces get random positive and negative logits: greedy output is printable ASCII that never stops at EOS, which
  gives fixed-length, JSON-clean completions;
- a ChatML chat template makes /v1/chat/completions work;
- the same arguments and seed give the same bytes.

    python tools/make_tiny_gguf.py OUT.gguf --variant dense|moe|qwen3moe|embed [--layers 4] [--seed 0]
        [--vocab ascii|ascii-reversed]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import gguf
import numpy as np

VARIANTS = ("dense", "moe", "qwen3moe", "embed")
#: `ascii`: the usual vocabulary; `ascii-reversed`: the same pieces with the printable ones in reverse order (same size,
#: other token texts from id 259 on): a model whose vocabulary does not match, for draft-pairing tests.
VOCABS = ("ascii", "ascii-reversed")

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
SPM_SPACE = "\u2581"
PRINTABLE_ASCII = [chr(c) for c in range(0x21, 0x7F)]


def build_vocab(vocab: str = "ascii") -> tuple[list[str], list[float], list[gguf.TokenType]]:
    """<unk>, <s>, </s>, the 256 byte tokens, then printable ASCII bare and with the SPM word prefix (~450)."""
    printable = PRINTABLE_ASCII[::-1] if vocab == "ascii-reversed" else PRINTABLE_ASCII
    tokens = ["<unk>", "<s>", "</s>"]
    scores = [0.0, 0.0, 0.0]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    # Scores order the SPM merges: word-initial pieces beat bare ones, so " a" becomes one token.
    for i, char in enumerate(printable):
        tokens.append(char)
        scores.append(-1.0 - i * 1e-3)
        types.append(gguf.TokenType.NORMAL)
    tokens.append(SPM_SPACE)
    scores.append(-0.5)
    types.append(gguf.TokenType.NORMAL)
    for i, char in enumerate(printable):
        tokens.append(SPM_SPACE + char)
        scores.append(-0.9 - i * 1e-3)
        types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def _is_silenced(token_id: int, token: str) -> bool:
    """Tokens greedy decoding must never pick: control tokens and bytes outside printable ASCII."""
    if token_id in (UNK_ID, BOS_ID, EOS_ID):
        return True
    if token.startswith("<0x") and len(token) == 6:
        return not 0x20 <= int(token[3:5], 16) < 0x7F
    return False


def write_tiny_gguf(
    path: pathlib.Path,
    variant: str = "dense",
    *,
    layers: int = 4,
    embd: int = 64,
    ff: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    experts: int = 8,
    used: int = 2,
    ctx: int = 2048,
    seed: int = 0,
    name: str | None = None,
    split_max_tensors: int = 0,
    vocab: str = "ascii",
) -> pathlib.Path:
    """Write one tiny model and return its path.

    `split_max_tensors` > 0 writes a split GGUF, llama.cpp's way: `STEM-00001-of-0000N.gguf` beside `path`, at most
    that many tensors in each part; the first part's path is returned (llama.cpp is given that one).

    `dense` and `embed` are arch llama (`embed` adds `llama.pooling_type` = mean so llama-server serves
    /v1/embeddings with `--embeddings`); `moe` is arch llama with Mixtral-style experts; `qwen3moe` adds q/k norms
    and `expert_feed_forward_length`. All weights are F32.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if vocab not in VOCABS:
        raise ValueError(f"unknown vocabulary {vocab!r}; choose one of {', '.join(VOCABS)}")
    if embd % heads or heads % kv_heads:
        raise ValueError(f"embd ({embd}) must divide by heads ({heads}) and heads by kv_heads ({kv_heads})")
    if not 0 < used <= experts:
        raise ValueError(f"used experts ({used}) must be between 1 and experts ({experts})")

    path = pathlib.Path(path)
    arch = "qwen3moe" if variant == "qwen3moe" else "llama"
    moe = variant in ("moe", "qwen3moe")
    head_dim = embd // heads
    tokens, scores, types = build_vocab(vocab)
    rng = np.random.default_rng(seed)

    def weight(*numpy_shape: int, scale: float | None = None) -> np.ndarray:
        # numpy shape is ggml's ne reversed: ggml {n_in, n_out} is numpy (n_out, n_in).
        std = scale if scale is not None else 1.0 / np.sqrt(numpy_shape[-1])
        return (rng.standard_normal(numpy_shape) * std).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    writer = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    writer.add_name(name if name is not None else f"tiny-{variant}")
    writer.add_context_length(ctx)
    writer.add_embedding_length(embd)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if moe:
        writer.add_expert_count(experts)
        writer.add_expert_used_count(used)
    if arch == "qwen3moe":
        writer.add_expert_feed_forward_length(ff)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if variant == "embed":
        writer.add_pooling_type(gguf.PoolingType.MEAN)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    writer.add_tensor("token_embd.weight", weight(len(tokens), embd, scale=1.0))
    writer.add_tensor("output_norm.weight", norm(embd))
    output = weight(len(tokens), embd)
    for token_id, token in enumerate(tokens):
        if _is_silenced(token_id, token):
            output[token_id] = 0.0
    writer.add_tensor("output.weight", output)

    for i in range(layers):
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", norm(embd))
        writer.add_tensor(blk + "attn_q.weight", weight(heads * head_dim, embd))
        writer.add_tensor(blk + "attn_k.weight", weight(kv_heads * head_dim, embd))
        writer.add_tensor(blk + "attn_v.weight", weight(kv_heads * head_dim, embd))
        writer.add_tensor(blk + "attn_output.weight", weight(embd, heads * head_dim))
        if arch == "qwen3moe":
            writer.add_tensor(blk + "attn_q_norm.weight", norm(head_dim))
            writer.add_tensor(blk + "attn_k_norm.weight", norm(head_dim))
        writer.add_tensor(blk + "ffn_norm.weight", norm(embd))
        if moe:
            # Router ggml {embd, experts}; experts stacked on ggml's outermost axis: {embd, ff, experts}.
            writer.add_tensor(blk + "ffn_gate_inp.weight", weight(experts, embd))
            writer.add_tensor(blk + "ffn_gate_exps.weight", weight(experts, ff, embd))
            writer.add_tensor(blk + "ffn_up_exps.weight", weight(experts, ff, embd))
            writer.add_tensor(blk + "ffn_down_exps.weight", weight(experts, embd, ff))
        else:
            writer.add_tensor(blk + "ffn_gate.weight", weight(ff, embd))
            writer.add_tensor(blk + "ffn_up.weight", weight(ff, embd))
            writer.add_tensor(blk + "ffn_down.weight", weight(embd, ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--variant", default="dense", choices=VARIANTS)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--ff", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--used", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    parser.add_argument("--vocab", default="ascii", choices=VOCABS)
    args = parser.parse_args(argv)
    try:
        path = write_tiny_gguf(
            args.out,
            args.variant,
            layers=args.layers,
            embd=args.embd,
            ff=args.ff,
            heads=args.heads,
            kv_heads=args.kv_heads,
            experts=args.experts,
            used=args.used,
            ctx=args.ctx,
            seed=args.seed,
            name=args.name,
            vocab=args.vocab,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {path} ({args.variant}, {path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
