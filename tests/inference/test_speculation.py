"""Speculative decoding without a process: the vocabulary rule on real GGUF headers, which models speculate with
what (a real local hub and HF cache for the catalog pairing), the llama-server arguments, and the acceptance counters.
The same features with real llama-servers: tests/cli/test_up_speculation.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
from helpers.hub_server import LocalHub, local_hub
from make_tiny_gguf import write_tiny_gguf

from meshp2p.errors import ConfigError, DraftMismatch
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.catalog import parse_catalog
from meshp2p.inference.hub import Hub
from meshp2p.inference.llama_server import LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec, Speculation, spec_from_gguf
from meshp2p.inference.pairing import SpeculationRules, draft_flags, with_speculation
from meshp2p.inference.resolve import Resolver
from meshp2p.inference.spec_metrics import SpeculationMeter, parse_spec_counters
from meshp2p.inference.speculation import NGRAM_ARGS, speculation_args
from meshp2p.inference.vocab import check_draft, read_vocab, vocab_difference

ORG = "tiny-org"


def vocab_file(path: Path, tokens: list[str], *, model: str = "llama", add_bos: bool = True, bos: int = 1,
               add_eos: bool = False, eos: int = 2, endian: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE) -> Path:
    """A GGUF with a tokenizer and no tensors: all the vocabulary rule reads."""
    writer = gguf.GGUFWriter(path, "llama", endianess=endian)
    writer.add_tokenizer_model(model)
    writer.add_token_list(tokens)
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def pieces(n: int, *, tag: str = "t") -> list[str]:
    return ["<unk>", "<s>", "</s>", *(f"{tag}{i}" for i in range(n - 3))]


def test_the_vocabulary_rule_is_llama_cpps(tmp_path: Path) -> None:
    main = read_vocab(vocab_file(tmp_path / "main.gguf", pieces(1000)))
    assert main.size == 1000 and main.model == "llama" and main.add_bos is True and main.bos_id == 1

    def draft(name: str, tokens: list[str], **kwargs: Any) -> str | None:
        return vocab_difference(main, read_vocab(vocab_file(tmp_path / f"{name}.gguf", tokens, **kwargs)))

    assert draft("same", pieces(1000)) is None
    assert draft("128-more", pieces(1128)) is None, "sizes up to 128 apart are llama.cpp's allowance"
    assert draft("ids-0-4-differ", ["a", "b", "c", "d", "e", *pieces(1000)[5:]]) is None, "ids 0-4 are not compared"
    assert draft("big-endian", pieces(1000), endian=gguf.GGUFEndian.BIG) is None
    assert draft("129-more", pieces(1129)) == ("its vocabulary has 1129 tokens, the main model's 1000 (llama.cpp "
                                               "allows at most 128 apart)")
    other = pieces(1000)
    other[700] = "x"
    assert draft("one-token", other) == "token 700 differs ('x' in the draft, 't697' in the main model)"
    assert draft("gpt2", pieces(1000), model="gpt2") == "its tokenizer is 'gpt2', the main model's 'llama'"
    assert draft("bos-id", pieces(1000), bos=3) == "its BOS token is id 3, the main model's is 1"
    assert draft("no-bos", pieces(1000), add_bos=False) == "it does not add a BOS token and the main model does"
    assert draft("eos-id", pieces(1000), eos=7) is None, "EOS ids are compared only where EOS is added"
    assert draft("adds-eos", pieces(1000), add_eos=True) == "it adds a EOS token and the main model does not"


def test_tiny_models_of_one_vocabulary_pair_and_of_another_are_refused(tmp_path: Path) -> None:
    main = write_tiny_gguf(tmp_path / "main.gguf", "dense", seed=1)
    small = write_tiny_gguf(tmp_path / "small.gguf", "dense", layers=2, seed=2)
    other = write_tiny_gguf(tmp_path / "other.gguf", "dense", seed=3, vocab="ascii-reversed")
    check_draft(main, small, main_id="main", draft_id="small")
    check_draft(main, main, main_id="main", draft_id="main")
    with pytest.raises(DraftMismatch) as err:
        check_draft(main, other, main_id="main", draft_id="other")
    assert err.value.message == ("the draft model other cannot speculate for main: token 259 differs ('~' in the "
                                 "draft, '!' in the main model)")
    assert "--spec ngram" in (err.value.hint or "") and "--no-draft" in (err.value.hint or "")


def spec(model_id: str, path: Path = Path("/m.gguf"), **kwargs: Any) -> ModelSpec:
    return ModelSpec(id=model_id, path=path, size_bytes=1, architecture="llama", **kwargs)


def test_draft_flags_pair_the_first_model_or_the_one_named() -> None:
    models = [("a.gguf", spec("a")), ("qwen2.5-7b", spec("qwen2.5-7b-instruct")), ("c", spec("c"))]
    assert draft_flags(["d1"], models) == {0: "d1"}
    assert draft_flags(["qwen2.5-7b=small", "c=hf://o/r/x.gguf"], models) == {1: "small", 2: "hf://o/r/x.gguf"}
    assert draft_flags(["qwen2.5-7b-instruct=small"], models) == {1: "small"}, "the model's id works too"
    with pytest.raises(ConfigError, match="'zz' is not one of this node's models"):
        draft_flags(["zz=small"], models)
    with pytest.raises(ConfigError, match="two drafts for a"):
        draft_flags(["d1", "a.gguf=d2"], models)
    with pytest.raises(ConfigError, match="serves none"):
        draft_flags(["d1"], [])


def test_a_draft_path_with_an_equals_sign_is_a_path(tmp_path: Path) -> None:
    odd = tmp_path / "b=c.gguf"
    odd.write_bytes(b"")
    assert draft_flags([str(odd)], [("a", spec("a")), ("b", spec("b"))]) == {0: str(odd)}


def test_speculation_arguments_follow_the_main_models_placement(tmp_path: Path) -> None:
    draft = Speculation("draft", draft_id="d", draft_path=Path("/d.gguf"))
    plain = ("--spec-type", "draft-simple", "--spec-draft-model", "/d.gguf")
    assert speculation_args(draft, gpu_layers=None, split=False) == plain
    assert speculation_args(draft, gpu_layers=0, split=False) == (*plain, "--spec-draft-ngl", "0")
    assert speculation_args(draft, gpu_layers=None, split=True) == (*plain, "--spec-draft-device", "none")
    assert speculation_args(Speculation("ngram"), gpu_layers=0, split=True) == NGRAM_ARGS == (
        "--spec-type", "ngram-map-k")

    binaries = LlamaBinaries(server=Path("/bin/llama-server"), rpc_server=None, gguf_split=None, source="test",
                             directory=Path("/bin"))
    split = spec("m", speculation=draft, extra_server_args=("--rpc", "127.0.0.1:1"))
    args = LlamaServer(binaries, split, ServerOptions(threads=1), log_dir=tmp_path).command(5)
    assert args[args.index("--spec-draft-model") + 1] == "/d.gguf"
    assert args[args.index("--spec-draft-device") + 1] == "none"
    assert "--spec-type" not in LlamaServer(binaries, spec("m"), ServerOptions(), log_dir=tmp_path).command(5)


METRICS_PAGE = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 26
# HELP llamacpp:spec_decode_num_draft_tokens_total Speculative: Total draft tokens generated
# TYPE llamacpp:spec_decode_num_draft_tokens_total counter
llamacpp:spec_decode_num_draft_tokens_total 1280
# HELP llamacpp:spec_decode_num_accepted_tokens_total Speculative: Total draft tokens accepted by the target model
# TYPE llamacpp:spec_decode_num_accepted_tokens_total counter
llamacpp:spec_decode_num_accepted_tokens_total 1080
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 60
"""


def test_acceptance_is_read_from_metrics_and_kept_across_restarts() -> None:
    assert parse_spec_counters(METRICS_PAGE) == (1280, 1080)
    assert parse_spec_counters("llamacpp:prompt_tokens_total 26\n") is None
    meter = SpeculationMeter(Speculation("draft", draft_id="small", draft_path=Path("/s.gguf")))
    assert meter.status().to_json() == {"mode": "draft", "draft": "small", "drafted_tokens": 0,
                                        "accepted_tokens": 0, "acceptance_rate": None}
    meter.observe(100, 40, 30)
    meter.observe(100, 80, 60)
    meter.observe(200, 0, 0)  # restarted: a new process counts from zero
    meter.observe(200, 20, 20)
    status = meter.status()
    assert (status.drafted, status.accepted) == (100, 80)
    assert status.to_json()["acceptance_rate"] == 0.8


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with local_hub() as server:
        yield server


def entry(name: str, repo: str, file: str, draft: str | None = None) -> dict[str, Any]:
    return {"name": name, "aliases": [], "source": "hub", "repo": f"{ORG}/{repo}", "revision": "main",
            "quant": "Q4_K_M", "files": [{"name": file, "sha256": None}], "size_bytes": 1000,
            "architecture": "llama", "experts": None, "experts_used": None, "context_length": 2048, "draft": draft}


@pytest.fixture
def resolver(hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Resolver:
    """A catalog in which tiny-chat pairs with tiny-draft and tiny-odd with a draft of another vocabulary."""
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))
    made = tmp_path / "made"
    made.mkdir()
    files = {"Chat": write_tiny_gguf(made / "chat.gguf", "dense", seed=41),
             "Draft": write_tiny_gguf(made / "draft.gguf", "dense", layers=2, seed=42),
             "Reversed": write_tiny_gguf(made / "reversed.gguf", "dense", layers=2, seed=43, vocab="ascii-reversed")}
    for name, path in files.items():
        hub.add_repo(f"{ORG}/Tiny-{name}-GGUF", {f"Tiny-{name}-Q4_K_M.gguf": path.read_bytes()})
    catalog = parse_catalog({"version": 1, "models": [
        entry("tiny-chat", "Tiny-Chat-GGUF", "Tiny-Chat-Q4_K_M.gguf", draft="tiny-draft"),
        entry("tiny-draft", "Tiny-Draft-GGUF", "Tiny-Draft-Q4_K_M.gguf"),
        entry("tiny-odd", "Tiny-Chat-GGUF", "Tiny-Chat-Q4_K_M.gguf", draft="tiny-reversed"),
        entry("tiny-reversed", "Tiny-Reversed-GGUF", "Tiny-Reversed-Q4_K_M.gguf"),
    ]}, source="test")
    return Resolver(catalog=catalog, hub=Hub(endpoint=hub.endpoint, cache_dir=tmp_path / "hf" / "hub"))


def test_the_catalog_pairs_a_draft_only_once_it_is_on_disk(resolver: Resolver, hub: LocalHub) -> None:
    chat = resolver.resolve("tiny-chat")
    asked = len(hub.requests)
    (alone,) = with_speculation([("tiny-chat", chat)], resolver=resolver)
    assert alone.speculation is None
    assert len(hub.requests) == asked, "a draft is never downloaded for the pairing"

    draft = resolver.resolve("tiny-draft")
    asked = len(hub.requests)
    (paired,) = with_speculation([("tiny-chat", chat)], resolver=resolver)
    assert paired.speculation == Speculation("draft", draft_id="tiny-draft", draft_path=draft.path,
                                             draft_size_bytes=draft.size_bytes)
    assert len(hub.requests) == asked, "the cached draft is used with no request"
    (off,) = with_speculation([("tiny-chat", chat)], pairing=False, resolver=resolver)
    assert off.speculation is None
    (by_path,) = with_speculation([(str(chat.path), chat)], resolver=resolver)
    assert by_path.speculation is None, "only a model named by its catalog name is paired"
    (ngram,) = with_speculation([("tiny-chat", chat)], ngram=True, resolver=resolver)
    assert ngram.speculation == Speculation("ngram")


def test_a_catalog_pairing_of_another_vocabulary_is_left_out(resolver: Resolver,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    odd = resolver.resolve("tiny-odd")
    resolver.resolve("tiny-reversed")
    with caplog.at_level(logging.WARNING):
        (served,) = with_speculation([("tiny-odd", odd)], resolver=resolver)
    assert served.speculation is None
    assert "the catalog's draft pairing is left out" in caplog.text and "token 259 differs" in caplog.text


def test_a_draft_given_is_resolved_like_a_model_and_checked(resolver: Resolver, tmp_path: Path) -> None:
    chat = resolver.resolve("tiny-chat")
    (paired,) = with_speculation([("tiny-chat", chat)], drafts=["tiny-draft"], resolver=resolver)
    assert paired.speculation is not None and paired.speculation.draft_id == "tiny-draft"
    with pytest.raises(DraftMismatch, match="the draft model tiny-reversed cannot speculate for tiny-chat"):
        with_speculation([("tiny-chat", chat)], drafts=["tiny-reversed"], resolver=resolver)
    embed = spec_from_gguf(write_tiny_gguf(tmp_path / "embed.gguf", "embed", seed=44))
    with pytest.raises(ConfigError, match="is an embedding model"):
        with_speculation([("e", embed)], drafts=[str(chat.path)], resolver=resolver)
    (skipped,) = with_speculation([("e", embed)], ngram=True, resolver=resolver)
    assert skipped.speculation is None
    with pytest.raises(ConfigError, match="--spec ngram and --draft"):
        with_speculation([("tiny-chat", chat)], drafts=["tiny-draft"], ngram=True, resolver=resolver)
    with pytest.raises(ConfigError, match="--no-draft"):
        with_speculation([("tiny-chat", chat)], drafts=["tiny-draft"], pairing=False, resolver=resolver)


def test_a_model_got_after_the_start_speculates_by_the_starts_rules(resolver: Resolver, tmp_path: Path) -> None:
    """SpeculationRules.apply is rules 1 and 3 for one model (fetched, downloaded or recruited once the node runs):
    the same answers as with_speculation at the start, and a model that already speculates keeps its choice."""
    chat = resolver.resolve("tiny-chat")
    assert SpeculationRules().apply("tiny-chat", chat, resolver).speculation is None, "its draft is not on disk"
    draft = resolver.resolve("tiny-draft")
    paired = SpeculationRules().apply("tiny-chat", chat, resolver)
    (at_start,) = with_speculation([("tiny-chat", chat)], resolver=resolver)
    assert paired.speculation == at_start.speculation == Speculation(
        "draft", draft_id="tiny-draft", draft_path=draft.path, draft_size_bytes=draft.size_bytes)
    assert SpeculationRules(pairing=False).apply("tiny-chat", chat, resolver).speculation is None
    assert SpeculationRules(ngram=True).apply("tiny-chat", chat, resolver).speculation == Speculation("ngram")
    assert SpeculationRules(ngram=True).apply("tiny-chat", paired, resolver) == paired
    embed = spec_from_gguf(write_tiny_gguf(tmp_path / "embed.gguf", "embed", seed=44))
    assert SpeculationRules(ngram=True).apply("e", embed, resolver).speculation is None
