"""Speculative decoding: how a model speculates, as llama-server arguments.

A model speculates in one of two ways, both inside its own llama-server process (the host that serves it):
- **a draft model** (`--spec-draft-model`, llama.cpp's `draft-simple`): a small model of the same tokenizer proposes
  tokens that the main model checks in one batch. Its layers go where the main model's go: llama.cpp's default
  placement (the GPU when there is one), the CPU when the node keeps models off the GPU (`--max-vram` too small),
  and the host's CPU in a pipeline split, whose RPC devices never hold the draft (`--spec-draft-device none`).
- **n-gram lookup** (`--spec ngram`): no second model; drafts are taken from the tokens already in the context
  (see NGRAM_ARGS for the mode chosen and why).

Which models speculate, and with which draft, is decided in inference/pairing.py.
"""

from __future__ import annotations

from meshp2p.inference.models import Speculation

#: `--spec ngram` is llama.cpp's `ngram-map-k` with its defaults. Of b11434's n-gram modes it fits a mesh's usual
#: repetitive work best (an agent re-sending a file with edits, quoting, summaries):
#: - it drafts only when the last 12 tokens have been seen before followed by the same 48 tokens, and keeps count of
#:   what each key's drafts got accepted, so it proposes little that is refused: that matters on CPU nodes, where
#:   every refused draft token is a full token of compute (a GPU checks a batch nearly for free), and text that does
#:   not repeat costs nothing;
#: - its state is per request (the current context), so one client's text never drafts for another's;
#: - measured side by side on gemma-3-270m copying code with edits (`tools/bench/speculative.py --modes ...`, figures in
#:   the README): the fastest and the most accepted; `ngram-simple` (the last match's next 48 tokens, unchecked)
#:   was close behind; `ngram-mod` (llama-server's `--spec-default`: one hash pool shared by all requests, drafts of
#:   48-64 tokens) and `ngram-cache` were clearly slower on CPU.
NGRAM_MODE = "ngram-map-k"
NGRAM_ARGS: tuple[str, ...] = ("--spec-type", NGRAM_MODE)


def speculation_args(speculation: Speculation, *, gpu_layers: int | None, split: bool) -> tuple[str, ...]:
    """llama-server arguments for `speculation` (the module docstring says where the draft's layers go)."""
    if speculation.mode == "ngram":
        return NGRAM_ARGS
    assert speculation.draft_path is not None
    args: tuple[str, ...] = ("--spec-type", "draft-simple", "--spec-draft-model", str(speculation.draft_path))
    if split:
        return (*args, "--spec-draft-device", "none")
    if gpu_layers == 0:
        return (*args, "--spec-draft-ngl", "0")
    return args
