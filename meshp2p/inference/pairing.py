"""Which models speculate, and with what (`meshp2p up --draft / --no-draft / --spec ngram`); how they do it is
inference/speculation.py.

The rules, in order:
1. `--spec ngram`: every model this node serves, by n-gram lookup; `--draft` cannot be given with it.
2. `--draft DRAFT` pairs DRAFT with the first `--model`; `--draft MODEL=DRAFT` with the model MODEL (as typed for
   `--model`, or its id). DRAFT is resolved like `--model` (a path, a catalog name, hf://..., OWNER/REPO:QUANT) and
   downloaded when missing, except where downloads are off (HF_HUB_OFFLINE). A value that is an existing file is
   always a path, even with an `=` in it.
3. Otherwise a model named by its catalog name gets the catalog's `draft` pairing when that draft is already on
   disk; a draft is never downloaded for this (`meshp2p download NAME --draft` fetches it). `--no-draft` turns this
   off.
Every draft's vocabulary is checked against its main model's before anything starts (inference/vocab.py): a draft
given with `--draft` that does not match is an error (DraftMismatch); a catalog pairing that does not match is
logged and left out, so a catalog mistake never stops a node. Embedding models never speculate.

A model this node gets after the start (fetched from members or downloaded once the mesh is joined, fetched for a
split it was recruited to, found in the store by a standby node) goes through the same rules 1 and 3, with the
start's choices (`SpeculationRules`, kept in the node's config): `SpeculationRules.apply`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from meshp2p.errors import ConfigError, DraftMismatch
from meshp2p.inference.catalog import CatalogEntry
from meshp2p.inference.models import ModelSpec, Speculation
from meshp2p.inference.on_disk import cached_entry_paths, embedded_on_disk
from meshp2p.inference.resolve import Resolver
from meshp2p.inference.vocab import check_draft

log = logging.getLogger(__name__)


def draft_flags(values: Sequence[str], models: Sequence[tuple[str, ModelSpec]]) -> dict[int, str]:
    """`--draft` values -> {index of the model in `models`: what was typed for its draft} (rule 2)."""
    chosen: dict[int, str] = {}
    if values and not models:
        raise ConfigError("--draft pairs a draft with a --model, but this node serves none",
                          hint="add --model, or drop --draft")
    for value in values:
        index, draft = 0, value
        if "=" in value and not Path(value).expanduser().is_file():
            target, draft = value.split("=", 1)
            matches = [i for i, (typed, spec) in enumerate(models) if target in (typed, spec.id)]
            if not matches:
                known = ", ".join(spec.id for _, spec in models) or "none"
                raise ConfigError(f"--draft {value}: {target!r} is not one of this node's models ({known})",
                                  hint="write --draft MODEL=DRAFT with MODEL as given to --model, or its id")
            index = matches[0]
        if not draft:
            raise ConfigError(f"--draft {value}: the draft is missing", hint="--draft MODEL=DRAFT")
        if index in chosen:
            raise ConfigError(f"two drafts for {models[index][1].id}: {chosen[index]} and {draft}",
                              hint="give each model one --draft (--draft MODEL=DRAFT names which model)")
        chosen[index] = draft
    return chosen


def with_speculation(models: Sequence[tuple[str, ModelSpec]], *, drafts: Sequence[str] = (), ngram: bool = False,
                     pairing: bool = True, resolver: Resolver) -> tuple[ModelSpec, ...]:
    """`models` ((what was typed, its spec), in --model order) with their speculation chosen by the module
    docstring's rules; drafts named with --draft are resolved (and downloaded) here."""
    if ngram and drafts:
        raise ConfigError("--spec ngram and --draft both choose how to speculate",
                          hint="drop one: n-gram lookup needs no draft model")
    if not pairing and drafts:
        raise ConfigError("--no-draft turns speculative decoding with a draft off, but --draft was given",
                          hint="drop one of them")
    explicit = draft_flags(drafts, models)
    return tuple(_with_speculation(typed, spec, explicit.get(index), ngram=ngram, pairing=pairing, resolver=resolver)
                 for index, (typed, spec) in enumerate(models))


@dataclass(frozen=True)
class SpeculationRules:
    """The start's choices (`--spec ngram`, `--no-draft`), for the models a node gets after it started."""

    ngram: bool = False
    pairing: bool = True

    def apply(self, typed: str, spec: ModelSpec, resolver: Resolver) -> ModelSpec:
        """`spec` (named `typed`: a catalog name, a model id, a path) with the speculation rules 1 and 3 give it,
        exactly as at the start. Reads GGUF headers (the vocabulary check): call it off the event loop."""
        if spec.speculation is not None:
            return spec
        return _with_speculation(typed, spec, None, ngram=self.ngram, pairing=self.pairing, resolver=resolver)


def _with_speculation(typed: str, spec: ModelSpec, explicit: str | None, *, ngram: bool, pairing: bool,
                      resolver: Resolver) -> ModelSpec:
    """One model with its speculation chosen by the module docstring's rules (`explicit`: its --draft)."""
    speculation = None
    if spec.embeddings:
        if explicit is not None:
            raise ConfigError(f"{spec.id} is an embedding model: it generates no tokens to speculate on",
                              hint="drop its --draft")
    elif ngram:
        speculation = Speculation("ngram")
    elif explicit is not None:
        speculation = _draft(spec, resolver.resolve(explicit))
    elif pairing:
        speculation = _catalog_pairing(typed, spec, resolver)
    if speculation is not None:
        log.info("%s speculates with %s", spec.id,
                 f"the draft model {speculation.draft_id}" if speculation.mode == "draft" else "n-gram lookup")
    return spec if speculation is None else replace(spec, speculation=speculation)


def _draft(main: ModelSpec, draft: ModelSpec) -> Speculation:
    if draft.embeddings:
        raise DraftMismatch(f"the draft model {draft.id} is an embedding model, it cannot speculate for {main.id}",
                            hint="pass a small chat or base model of the same family as --draft")
    check_draft(main.path, draft.path, main_id=main.id, draft_id=draft.id)
    return Speculation("draft", draft_id=draft.id, draft_path=draft.path, draft_size_bytes=draft.size_bytes)


def _catalog_pairing(typed: str, spec: ModelSpec, resolver: Resolver) -> Speculation | None:
    """Rule 3: the catalog's draft for a model named by catalog name, when the draft is on disk."""
    if Path(typed).expanduser().is_file():
        return None
    entry = resolver.catalog.find(typed)
    draft_entry = None if entry is None else resolver.catalog.draft_of(entry)
    if draft_entry is None:
        return None
    if not _on_disk(draft_entry, resolver):
        log.info("%s: its draft model %s is not on disk, so it does not speculate (`meshp2p download %s --draft` "
                 "fetches the draft; a draft is never downloaded on its own)", spec.id, draft_entry.name, typed)
        return None
    try:
        return _draft(spec, resolver.entry(draft_entry))
    except DraftMismatch as exc:
        log.warning("%s: the catalog's draft pairing is left out: %s", spec.id, exc.message)
        return None


def _on_disk(entry: CatalogEntry, resolver: Resolver) -> bool:
    if entry.source == "embedded":
        return embedded_on_disk() is not None
    return cached_entry_paths(entry, resolver.hub) is not None
