"""The planner's input from the gossiped view: peers are matched by the content id of their files, not by name."""

from __future__ import annotations

from meshp2p.app.pipeline import offered_file, peer_facts
from meshp2p.mesh.planner import ModelFacts, plan
from meshp2p.mesh.view import MeshView
from meshp2p.wire.model_id import content_id_of
from meshp2p.wire.status import StatusBody

OURS = content_id_of(b"llama Q4_K_M")
THEIRS = content_id_of(b"llama Q8_0")


def status(available: tuple[str, ...], files: dict[str, bytes] | None = None, ram_mb: int = 4_000) -> StatusBody:
    return StatusBody(role="standby", ram_mb=ram_mb, vram_mb=0, gpu=None, loaded=(), available=available, load=0.0,
                      api_port=None, version="test", region=None, rtt_ms={},
                      files={m: content_id_of(data) for m, data in (files or {}).items()})


def test_a_peer_offers_a_file_by_its_content_under_any_name() -> None:
    assert offered_file(status(("llama",), {"llama": b"llama Q4_K_M"}), "llama", OURS) == (True, OURS)
    assert offered_file(status(("renamed",), {"renamed": b"llama Q4_K_M"}), "llama", OURS) == (True, OURS)
    assert offered_file(status(("llama",), {"llama": b"llama Q8_0"}), "llama", OURS) == (True, THEIRS)
    assert offered_file(status(("llama",)), "llama", OURS) == (True, None)  # not hashed yet, or an older node
    assert offered_file(status(()), "llama", OURS) == (False, None)
    # A file listed for a model the peer no longer offers does not count.
    assert offered_file(status((), {"renamed": b"llama Q4_K_M"}), "llama", OURS) == (False, None)


def test_peer_facts_plan_over_the_same_file_only() -> None:
    view = MeshView(bytes(16), "me")
    view.update("me", status(("llama",), {"llama": b"llama Q4_K_M"}), 0.0)
    view.update("same", status(("llama",), {"llama": b"llama Q4_K_M"}), 0.0)
    view.update("renamed", status(("llama-q4",), {"llama-q4": b"llama Q4_K_M"}), 0.0)
    view.update("other-quant", status(("llama",), {"llama": b"llama Q8_0"}, ram_mb=90_000), 0.0)
    local, others = peer_facts(view, "llama", {"same": 5.0, "renamed": 6.0, "other-quant": 1.0})
    assert local.content_id == OURS
    p = plan(ModelFacts("llama", 10_000, 32, local.content_id), local, others)
    assert p.kind == "pipeline" and p.workers == ("same", "renamed") and p.content_id == OURS


def _llama_cpp_devices(args: tuple[str, ...], n_layers: int) -> list[int | None]:
    """The device llama.cpp (src/llama-model.cpp, load_tensors) puts each block on for these arguments, in float32
    as it computes: None for the host's CPU, else the index of the RPC device."""
    import numpy as np

    ngl = int(args[args.index("-ngl") + 1])
    splits = np.cumsum(np.array([float(v) for v in args[args.index("--tensor-split") + 1].split(",")],
                                dtype=np.float32), dtype=np.float32)
    splits = (splits / splits[-1]).astype(np.float32)
    start, act = max(n_layers + 1 - ngl, 0), min(ngl, n_layers + 1)
    return [None if il < start else int(np.searchsorted(splits, np.float32(il - start) / np.float32(act),
                                                        side="right")) for il in range(n_layers)]


def test_llama_cpp_puts_each_block_where_the_plan_says() -> None:
    """`pipeline_args` reproduces the plan's ranges under llama.cpp's own rule for -ngl and --tensor-split: every
    worker of a split over two, three or four nodes gets exactly its blocks (the last one too)."""
    from meshp2p.app.pipeline import pipeline_args
    from meshp2p.mesh.planner import Plan, Shard

    for n_layers, counts in ((4, (2, 1, 1)), (6, (2, 2, 2)), (6, (1, 5)), (28, (10, 9, 9)), (32, (5, 7, 9, 11)),
                             (7, (1, 1, 1, 4)), (80, (3, 1, 76))):
        shards, first = [], 0
        for i, count in enumerate(counts):
            shards.append(Shard(f"p{i}", first, first + count - 1, count / n_layers))
            first += count
        plan_ = Plan(model_id="m", host="p0", kind="pipeline", shards=tuple(shards), model_size_mb=1)
        devices = _llama_cpp_devices(pipeline_args(plan_, list(range(1, len(counts))), n_layers), n_layers)
        expected = [None if s.peer_id == "p0" else i - 1 for i, s in enumerate(shards)
                    for _ in range(s.layer_count)]
        assert devices == expected, (n_layers, counts)
