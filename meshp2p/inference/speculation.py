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
#: - it drafts only when the last 12 tokens were seen before in the context (the 48 that followed them), and keeps per
#:   key how many of its draft tokens were accepted; text that does not repeat gets no drafts and costs nothing. That
#:   matters on CPU nodes, where every refused draft token costs a full token of compute (a GPU checks a batch nearly
#:   for free);
#: - its n-grams come from the request's own context (one map per slot), not from a pool shared by every request;
#: - measured side by side on gemma-3-270m copying code with edits (`tools/bench/speculative.py --modes ...`,
#:   2026-12-03, figures in the README): 2.04x the tok/s of no speculation, 99.6 % of drafted tokens accepted;
#:   `ngram-simple` (the last match's next 48 tokens, unchecked) was as fast with 98.1 %; `ngram-cache` made 1.66x
#:   (85.8 %) and `ngram-mod` (llama-server's `--spec-default`: one n-gram pool shared by all requests, 48-64-token
#:   drafts) 1.41x (84.8 %): they spend more CPU on refused drafts.
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
