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

`toolcall` is the exception: no random weights but a hand-made next-token table, so a test knows what it says.
llama-server cannot force a tool call out of a model that does not produce one (`tool_choice: "required"` makes a
lazy grammar, a custom `grammar` is refused beside `tools`), so this model really emits one, in the Hermes 2 Pro /
Qwen 2.5 format that llama-server parses into `tool_calls` (see `write_toolcall_gguf`).

    python tools/make_tiny_gguf.py OUT.gguf --variant dense|moe|qwen3moe|embed|toolcall [--layers 4] [--seed 0]
        [--vocab ascii|ascii-reversed]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import gguf
import numpy as np

VARIANTS = ("dense", "moe", "qwen3moe", "embed", "toolcall")
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
    and `expert_feed_forward_length`. All weights are F32. `toolcall` is `write_toolcall_gguf`, which takes only
    `layers`, `embd`, `ff`, `ctx` and `name`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "toolcall":
        return write_toolcall_gguf(path, layers=layers, embd=embd, ff=ff, ctx=ctx, name=name)
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


# --- toolcall: a next-token table that emits a Hermes / Qwen 2.5 tool call ------------------------------------

#: Qwen 2.5 Instruct's own chat template (as in llama.cpp's models/templates/Qwen-Qwen2.5-7B-Instruct.jinja):
#: llama-server's differential autoparser reads the `<tool_call>` JSON format off it and parses replies to
#: `tool_calls`; llama.cpp's own tests cover this template, so its parser is known to work with it.
QWEN25_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are '
    'provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

#: What the toolcall model says. Without tools (or with tools it does not know): this, then end of turn.
TOOLCALL_PLAIN_ANSWER = "It is sunny."
#: Offered a tool of this name, it calls it with these arguments, then ends its turn.
TOOLCALL_WEATHER_TOOL = "get_weather"
TOOLCALL_WEATHER_ARGUMENTS = {"city": "Paris"}
#: Offered a tool of this name, it calls it with `{"text": "la la la ...` and never closes the string: a tool call
#: whose arguments stream one token at a time until max_tokens, for tests that kill its server mid-call.
TOOLCALL_RECITE_TOOL = "recite"
TOOLCALL_RECITE_PIECE = "la "
#: Under a JSON grammar (response_format) the table's answer is refused; the best token left is this whole object.
TOOLCALL_JSON_ANSWER = {"weather": "sunny"}

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
#: Every generation prompt of the template ends "<|im_start|>assistant\n": its last token is this byte token
#: (the vocabulary has no other piece holding a newline that the tokenizer could build).
_NEWLINE = "<0x0A>"


def _tool_call_open(tool: str, argument: str) -> str:
    """The text a Qwen 2.5 model writes up to the first character of the argument's string value."""
    return f'<tool_call>\n{{"name": "{tool}", "arguments": {{"{argument}": "'


_WEATHER_CITY = TOOLCALL_WEATHER_ARGUMENTS["city"]
#: The generated pieces, in order. The city takes two tokens so a stream shows arguments arriving in parts.
_PLAIN_PIECES = ("It", " is", " sunny.")
_WEATHER_PIECES = (_tool_call_open(TOOLCALL_WEATHER_TOOL, "city"), _WEATHER_CITY[:2], _WEATHER_CITY[2:],
                   '"}}\n</tool_call>')
_RECITE_OPEN = _tool_call_open(TOOLCALL_RECITE_TOOL, "text")
_JSON_PIECE = json.dumps(TOOLCALL_JSON_ANSWER)

#: Logit scales (before the output norm): a successor's row weighs _GAIN on its predecessor's dimension.
_GAIN = 10.0
#: The plain answer beats a tool call after the prompt by this fraction unless a tool's signal (_SIGNAL) is there.
_PLAIN_MARGIN = 0.2
_SIGNAL = 0.5
#: Any token outside the table leads to the plain answer: a weak preference on the dimension every token has.
_FALLBACK = 0.1
#: The JSON object ranks just below the plain answer after the prompt, above everything else.
_JSON_RANK = 0.8
#: Attention score of a tool-name token (others score 0): softmax puts all the weight on it.
_MARKER_SCORE = 40.0
#: RoPE base so large that the query/key pair used (the last one) does not turn over any context length.
_ROPE_BASE = 1e8


def write_toolcall_gguf(path: pathlib.Path, *, layers: int = 4, embd: int = 64, ff: int = 128, ctx: int = 2048,
                        name: str | None = None) -> pathlib.Path:
    """A llama model whose greedy reply is fixed by a next-token table, with Qwen 2.5's chat template.

    How it works: every attention and FFN output is zero except one attention head in the first layer, so the
    residual at a position is its token's embedding (plus that head's signal). Each token of the table gets a
    one-hot embedding dimension and its successor's output row weighs that dimension, so the greedy next token is
    the table's. The template's generation prompt always ends in a newline: what follows it depends on the tools
    offered. The tool names `get_weather` and `recite` are single (user-defined) tokens with a key that every query
    matches strongly; the head copies "which tool was seen" into the residual, where it tips the newline's
    successor from the plain answer to that tool's call:

    - no known tool: "It is sunny." then <|im_end|> (also after any token outside the table);
    - `get_weather`: `<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>`, then
      <|im_end|>, in 4 tokens (the city in two);
    - `recite`: `<tool_call>\\n{"name": "recite", "arguments": {"text": "` then "la " forever;
    - under a JSON grammar that refuses the plain answer (a `response_format` schema whose only value is
      `{"weather": "sunny"}`), the next best token is that whole object, then <|im_end|>.

    The vocabulary is the usual byte-fallback SPM one plus ChatML's control tokens, with `add_space_prefix` off
    (as Qwen's BPE tokenizer has none): llama-server tokenizes the generation prompt to feed it to a response
    grammar, and a space token in front of `<|im_start|>` would make that fail.
    """
    path = pathlib.Path(path)
    tokens, scores, types = build_vocab("ascii")

    def add_token(text: str, token_type: gguf.TokenType = gguf.TokenType.NORMAL, score: float = -2.0) -> int:
        spm_text = text.replace(" ", SPM_SPACE) if token_type == gguf.TokenType.NORMAL else text
        if spm_text in tokens:
            raise ValueError(f"token {text!r} is already in the vocabulary")
        tokens.append(spm_text)
        scores.append(score)
        types.append(token_type)
        return len(tokens) - 1

    add_token(_IM_START, gguf.TokenType.CONTROL, 0.0)
    im_end = add_token(_IM_END, gguf.TokenType.CONTROL, 0.0)
    markers = [add_token(tool, gguf.TokenType.USER_DEFINED, 0.0)
               for tool in (TOOLCALL_WEATHER_TOOL, TOOLCALL_RECITE_TOOL)]
    newline = tokens.index(_NEWLINE)
    plain = [add_token(piece) for piece in _PLAIN_PIECES]
    weather = [add_token(piece) for piece in _WEATHER_PIECES]
    recite_open, recite_loop = add_token(_RECITE_OPEN), add_token(TOOLCALL_RECITE_PIECE)
    json_answer = add_token(_JSON_PIECE)

    # token -> its successor (the newline's is chosen by the attention signal, below)
    successor = {a: b for a, b in zip(plain, [*plain[1:], im_end], strict=True)}
    successor.update(zip(weather, [*weather[1:], im_end], strict=True))
    successor.update({recite_open: recite_loop, recite_loop: recite_loop, json_answer: im_end})
    tool_openers = (weather[0], recite_open)

    # Residual dimensions: 0 is on for every token; 1 + i carries "tool i seen", 3 + i marks tool i's name
    # token; then one per table token; the last RoPE pair (embd - 2, embd - 1) holds the query and key.
    bias_dim, signal_dims, marker_dims = 0, (1, 2), (3, 4)
    states = [newline, *successor]
    state_dim = {token: 5 + i for i, token in enumerate(states)}
    qk_dim = embd - 2
    if 5 + len(states) > qk_dim or embd % 2:
        raise ValueError(f"the toolcall table needs embd >= {5 + len(states) + 2} (even), not {embd}")

    embedding = np.zeros((len(tokens), embd), dtype=np.float32)
    embedding[:, bias_dim] = 1.0
    for token, dim in state_dim.items():
        embedding[token, dim] = 1.0
    for token, dim in zip(markers, marker_dims, strict=True):
        embedding[token, dim] = 1.0
    # RMS norm of a token with two dimensions on (the bias and one more), the usual case.
    normed = float(np.sqrt(embd / 2))

    # One head of size embd: every query asks for a tool name (from the bias); only tool names answer.
    attn_q = np.zeros((embd, embd), dtype=np.float32)
    attn_q[qk_dim, bias_dim] = 1.0
    attn_k = np.zeros((embd, embd), dtype=np.float32)
    attn_k[qk_dim, list(marker_dims)] = _MARKER_SCORE * np.sqrt(embd) / normed**2
    attn_v = np.zeros((embd, embd), dtype=np.float32)
    for marker_dim, signal_dim in zip(marker_dims, signal_dims, strict=True):
        attn_v[signal_dim, marker_dim] = _SIGNAL / normed
    attn_output = np.zeros((embd, embd), dtype=np.float32)
    attn_output[list(signal_dims), list(signal_dims)] = 1.0

    output = np.zeros((len(tokens), embd), dtype=np.float32)
    for token, nxt in successor.items():
        output[nxt, state_dim[token]] = _GAIN
    output[plain[0], state_dim[newline]] = _GAIN * (1 + _PLAIN_MARGIN)
    output[plain[0], bias_dim] = _GAIN * _FALLBACK
    output[json_answer, state_dim[newline]] = _GAIN * _JSON_RANK
    for opener, signal_dim in zip(tool_openers, signal_dims, strict=True):
        output[opener, state_dim[newline]] = _GAIN
        output[opener, signal_dim] = _GAIN

    head_dim = embd
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name if name is not None else "tiny-toolcall")
    writer.add_context_length(ctx)
    writer.add_embedding_length(embd)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(1)
    writer.add_head_count_kv(1)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(_ROPE_BASE)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(im_end)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(QWEN25_TEMPLATE)

    writer.add_tensor("token_embd.weight", embedding)
    writer.add_tensor("output_norm.weight", np.ones(embd, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(layers):
        blk = f"blk.{i}."
        active = i == 0
        writer.add_tensor(blk + "attn_norm.weight", np.ones(embd, dtype=np.float32))
        for part, matrix in (("q", attn_q), ("k", attn_k), ("v", attn_v), ("output", attn_output)):
            writer.add_tensor(blk + f"attn_{part}.weight", matrix if active else np.zeros_like(matrix))
        writer.add_tensor(blk + "ffn_norm.weight", np.ones(embd, dtype=np.float32))
        writer.add_tensor(blk + "ffn_gate.weight", np.zeros((ff, embd), dtype=np.float32))
        writer.add_tensor(blk + "ffn_up.weight", np.zeros((ff, embd), dtype=np.float32))
        writer.add_tensor(blk + "ffn_down.weight", np.zeros((embd, ff), dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


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
