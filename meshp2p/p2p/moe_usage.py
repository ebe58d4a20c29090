"""`/meshp2p/moe-usage/1.0.0` over libp2p streams (protocols/moe-usage.md): the I/O around wire/moe_usage.py.

A member answers members with the measured expert usage it holds for a file (from memory or its calibration
cache, through the `lookup` it is given); a `--moe shard` member that has only the estimate asks for it. One
request, one answer, then the listener closes. Bad requests and answers are counted (`moe_usage:<reason>`), never
fatal; an answer is decoded in a worker thread (up to ~2 MB of CBOR for the largest models).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from libp2p.peer.id import ID

from meshp2p.p2p.overlay import Overlay
from meshp2p.p2p.streams import close_quietly, read_one_frame
from meshp2p.wire import moe_usage as mu
from meshp2p.wire.errors import WireError
from meshp2p.wire.model_id import ContentId

log = logging.getLogger(__name__)

#: How long a listener waits for the request, and how long it may take to answer (2 MB on a slow link).
REQUEST_TIMEOUT_S = 5.0
SERVE_TIMEOUT_S = 30.0
#: One ask as the dialer sees it, dial included.
ASK_TIMEOUT_S = 30.0

#: Measured usage this node holds for a file, as (source, counts), or None.
UsageLookup = Callable[[ContentId], Awaitable[tuple[str, mu.Counts] | None]]


class UsageServer:
    """Answers members' asks for the measured usage `lookup` finds; anyone else gets `refused` / `not_member`."""

    def __init__(self, overlay: Overlay, *, is_member: Callable[[ID], bool], lookup: UsageLookup) -> None:
        self.overlay = overlay
        self.is_member = is_member
        self.lookup = lookup
        self.served = 0

    def install(self) -> None:
        self.overlay.serve(mu.MOE_USAGE_PROTOCOL_ID, self._handle, timeout_s=SERVE_TIMEOUT_S,
                           rejects_as="moe_usage")

    async def _handle(self, stream: Any) -> None:
        """One request, one answer; a bad request is counted and reset by Overlay.serve."""
        peer: ID = stream.muxed_conn.peer_id
        with trio.fail_after(REQUEST_TIMEOUT_S):
            content_id = mu.decode_request(await read_one_frame(stream, mu.RequestReader()))
        if not self.is_member(peer):
            self.overlay.rejects.add("moe_usage", "not_member")
            await stream.write(mu.encode_refused("not_member"))
            return
        found = await self.lookup(content_id)
        if found is None or found[0] != mu.SOURCE_IMATRIX:
            await stream.write(mu.encode_refused("not_have"))
            return
        await stream.write(await trio.to_thread.run_sync(mu.encode_usage, *found))
        self.served += 1
        log.info("gave the expert usage of %s to %s", content_id.short, str(peer)[-8:])


async def ask_usage(overlay: Overlay, peer_id: str, content_id: ContentId, *, n_layers: int, n_expert: int,
                    digest: str | None) -> mu.UsageAnswer | None:
    """`peer_id`'s measured usage of `content_id`, checked against this node's file (`n_layers` x `n_expert`) and,
    when given, the `digest` the peer gossiped; None when it has none, refuses, cannot be reached or answers
    wrongly (counted as `moe_usage:<reason>`)."""
    try:
        with trio.fail_after(ASK_TIMEOUT_S):
            stream = await overlay.open_stream(ID.from_base58(peer_id), mu.MOE_USAGE_PROTOCOL_ID)
            try:
                await stream.write(mu.encode_request(content_id))
                payload = await read_one_frame(stream, mu.AnswerReader())
            finally:
                await close_quietly(stream)
        answer = await trio.to_thread.run_sync(partial(mu.check_answer, payload, n_layers=n_layers,
                                                       n_expert=n_expert, digest=digest))
    except WireError as exc:
        overlay.rejects.add("moe_usage", exc.reason)
        log.warning("ignored the expert usage %s sent for %s: %s", peer_id[-8:], content_id.short, exc)
        return None
    except trio.TooSlowError:
        log.info("%s did not send its expert usage within %s s", peer_id[-8:], ASK_TIMEOUT_S)
        return None
    except Exception as exc:  # unreachable, or an older node without the protocol (py-libp2p raises several types)
        log.debug("asking %s for expert usage failed: %r", peer_id[-8:], exc)
        return None
    if isinstance(answer, mu.UsageRefused):
        log.info("%s has no measured expert usage of %s to give (%s)", peer_id[-8:], content_id.short,
                 answer.reason)
        return None
    return answer

