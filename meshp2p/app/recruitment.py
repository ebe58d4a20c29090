"""Becoming a split's worker for a model this node does not have: the worker's side of planner rule 6.

A host whose split falls short with the members that hold its model's file names, in its status's `recruit`
(protocols/gossip.md), the peers that would make it possible. Such a peer — this service, on every node that can
be a pipeline worker (an rpc-server binary) — fetches the file from the members that hold it
(`/meshp2p/model/1.0.0`, checked chunk by chunk and as a whole against the content id) into the model store and
offers it under the host's model id. From its next status on it holds the same file, so the host's planner takes it
as a worker, and its rpc-server loads those layers from its own disk: the weights cross the network once, before
the split, never at load.

A split GGUF's files are all fetched (their ids asked of the holders first, as app/model_fetcher.py does), named
as llama.cpp finds them beside the first. One fetch at a time (they share the uplink and the disk), each model
once: a failed fetch keeps its chunks and is tried again while the host still asks, after RETRY_S. A model that
would not fit the disk (with DISK_HEADROOM) is refused with a log line, once. The view has no change event, so
the service looks at it every LOOK_EVERY_S (a scan of a dict). An rpc-server already running indexes only the files
it was started with: the worker restarts it with the new file at the next split connection that finds it idle
(inference/rpc_server.py), so the recruiting host's load sends no weights either way.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from meshp2p.app.local import OfferedModels
from meshp2p.app.model_fetcher import fetch_parts
from meshp2p.home import models_dir
from meshp2p.inference.content_id import ModelFileIds
from meshp2p.inference.models import ModelSpec, spec_from_parts
from meshp2p.mesh.sources import file_holders
from meshp2p.mesh.view import MeshView
from meshp2p.p2p import PeerID
from meshp2p.p2p.model_fetch import list_parts
from meshp2p.p2p.overlay import Overlay
from meshp2p.wire.model_id import ContentId

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) ships stubs that shadow trio's own types; they name it here.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

LOOK_EVERY_S = 1.0
RETRY_S = 30.0
#: A file is fetched only when the disk keeps this much more than its size free.
DISK_HEADROOM = 1.05
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def store_names(model_id: str, content_id: ContentId, taken: Callable[[Path], bool], *, parts: int = 1) -> list[str]:
    """The file names for a recruited model in the store: its id made safe, or with the file's id when taken; a
    split model's parts named as llama.cpp looks for them beside the first (`NAME-00001-of-00003.gguf` ...)."""
    safe = _UNSAFE.sub("-", model_id).strip("-.") or "model"

    def names(stem: str) -> list[str]:
        return [f"{stem}.gguf"] if parts == 1 else [f"{stem}-{i:05d}-of-{parts:05d}.gguf" for i in range(1, parts + 1)]

    plain = names(safe)
    return plain if not any(taken(Path(name)) for name in plain) else names(f"{safe}-{content_id.digest.hex()[:12]}")


class Recruitment:
    """Answers the recruit calls that name this node (module docstring)."""

    def __init__(self, overlay: Overlay, view: Callable[[], MeshView], offered: OfferedModels,
                 file_ids: ModelFileIds, announce: Callable[[], None], *,
                 store: Callable[[], Path] = models_dir,
                 pair: Callable[[str, ModelSpec], ModelSpec] = lambda typed, spec: spec) -> None:
        """`pair(model id, spec)`: the speculation a model got after the start takes (the node's start rules:
        inference/pairing.py), should it be promoted here later; blocking, run in a worker thread."""
        self.overlay = overlay
        self.pair = pair
        self.view = view
        self.offered = offered
        self.file_ids = file_ids
        self.announce = announce
        self.store = store
        #: Content id -> trio time before which it is not tried again (failed, or refused for space).
        self._not_before: dict[ContentId, float] = {}
        #: What this node fetched for splits (model id -> file), for /api/status and the logs.
        self.fetched: dict[str, Path] = {}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            call = self._next_call()
            if call is not None:
                await self._answer(*call)
            await trio.sleep(LOOK_EVERY_S)

    def _next_call(self) -> tuple[str, ContentId, str, tuple[str, ...]] | None:
        """(model id, file, recruiting host, holders) of the first call that names this node and is not met yet."""
        view = self.view()
        have = set(self.file_ids.ids.values())
        now = trio.current_time()
        for peer in view.peers.values():
            if peer.peer_id == view.self_id:
                continue
            for model_id, call in peer.status.recruit.items():
                if view.self_id not in call.peers or call.file in have or self._not_before.get(call.file, 0) > now:
                    continue
                holders = file_holders(view.peers.values(), call.file, self_id=view.self_id)
                if holders:
                    return model_id, call.file, peer.peer_id, holders
        return None

    async def _answer(self, model_id: str, content_id: ContentId, host: str, holders: tuple[str, ...]) -> None:
        store = self.store()
        store.mkdir(parents=True, exist_ok=True)
        peers = [PeerID.from_base58(p) for p in holders]
        # Which files make the model: one, or the parts of a split GGUF (members older than `list` do not answer:
        # then it is the one file, as they fetch it).
        listed = await list_parts(self.overlay, content_id, peers)
        ids, sources = (listed.ids, list(listed.holders)) if listed.ids is not None else ((content_id,), peers)
        size = sum(cid.size for cid in ids)
        free = (await trio.to_thread.run_sync(shutil.disk_usage, store)).free
        if free < DISK_HEADROOM * size:
            log.warning("%s asks this node to hold %s for its split, but %s has %.1f GB free for %.1f GB: not "
                        "fetched", host[-8:], model_id, store, free / 1e9, size / 1e9)
            self._not_before[content_id] = float("inf")
            return
        targets = [store / name for name in store_names(model_id, content_id, lambda name: (store / name).exists(),
                                                         parts=len(ids))]
        log.info("%s asks this node to be a worker of its %s split: fetching the file%s (%.1f MB) from %d member(s)",
                 host[-8:], model_id, f"s ({len(ids)})" if len(ids) > 1 else "", size / 1e6, len(sources))
        if await fetch_parts(self.overlay, ids, sources, targets):
            log.warning("%s for %s's split: not every file came (kept for a retry)", model_id, host[-8:])
            self._not_before[content_id] = trio.current_time() + RETRY_S
            return
        spec = await trio.to_thread.run_sync(lambda: self.pair(model_id, spec_from_parts(tuple(targets),
                                                                                        model_id=model_id)))
        # Each file was checked against its id whole: no need to hash them again.
        if len(ids) > 1:
            self.file_ids.parts[model_id] = ids
        self.file_ids.ids[model_id] = content_id
        self.offered.add(spec)
        self.fetched[model_id] = targets[0]
        log.info("%s is on disk (%s): offered to the mesh as a worker's copy for %s's split", model_id,
                 targets[0], host[-8:])
        self.announce()
