"""What a GGUF says about its Mixture of Experts: how many experts, how many work per token, and where its bytes are.

The planner needs bytes, not layer counts: in a MoE model a block is mostly experts (Qwen3-30B-A3B: ~95 % of the
file), the embeddings and output head sit outside every block, and a layer split that counts layers as equal
puts the wrong share on each node. The numbers come from the tensor table (inference/gguf_header.py: milliseconds,
no tensor data read): a block's bytes are its tensors', the experts' bytes are the tensors that hold one slice
per expert (inference/moe_shard.py's `expert_layer`), and everything outside the blocks is the host's part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from meshp2p.inference.gguf_header import GGUFHeader
from meshp2p.inference.moe_shard import expert_layer

_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelLayout:
    """Bytes per block and outside the blocks; for a MoE model also its experts."""

    #: Bytes of each transformer block's tensors, block 0 first.
    layer_bytes: tuple[int, ...]
    #: Bytes outside every block (token embeddings, output head, final norm): kept on a split's host.
    host_bytes: int
    experts: int | None = None
    experts_used: int | None = None
    #: Bytes of the expert tensors (all blocks), and of everything else (the trunk).
    expert_bytes: int = 0

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    @property
    def total_bytes(self) -> int:
        return self.host_bytes + sum(self.layer_bytes)

    @property
    def trunk_bytes(self) -> int:
        return self.total_bytes - self.expert_bytes

    def to_json(self) -> dict[str, Any] | None:
        """For /v1/models and /api/status: None for a dense model."""
        if not self.is_moe:
            return None
        return {"experts": self.experts, "experts_used": self.experts_used, "expert_bytes": self.expert_bytes,
                "trunk_bytes": self.trunk_bytes}


def model_layout(header: GGUFHeader, *more_parts: GGUFHeader) -> ModelLayout:
    """The layout of a model from its header, or from every part's header for a split GGUF (the first part's
    metadata describes the model; each part holds some of the tensors)."""
    blocks = header.block_count or 0
    layer_bytes = [0] * blocks
    host = expert_bytes = 0
    n_expert = header.expert_count if header.is_moe else None
    for tensor in (t for part in (header, *more_parts) for t in part.tensors):
        size = tensor.n_bytes or 0
        match = _BLOCK.match(tensor.name)
        block = int(match.group(1)) if match else -1
        if 0 <= block < blocks:
            layer_bytes[block] += size
        else:
            host += size
        if n_expert is not None and expert_layer(tensor, n_expert) is not None:
            expert_bytes += size
    return ModelLayout(tuple(layer_bytes), host, n_expert, header.expert_used_count if n_expert else None,
                       expert_bytes)
