"""One request over a model's servers, in the order mesh/routing.py gives, carrying on elsewhere when one fails.

A server that answers nothing (BackendUnavailable) is left for the next one. A stream that breaks mid-answer
continues on another server of the same model: the request is replayed with the answer so far given to the model
as what it already said, and the new server's events are rewritten so the client reads one complete, well-formed
stream with the first server's ids. How, for each format (chat and completion chunks, Responses events, Anthropic
message events), is the format's tracker's business (backends/streams/): this module only drives it. A stream
that cannot be continued (a tool call or reasoning in flight is never replayed), or finds no server left, raises
BackendBroke, which the API turns into the family's error event; a request not yet answered raises
BackendUnavailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from meshp2p.backends.base import Backend, BackendRequest, Reply
from meshp2p.backends.streams import tracker_for
from meshp2p.backends.streams.sse import SseParser, serialize
from meshp2p.backends.streams.tracker import StreamTracker
from meshp2p.errors import BackendBroke, BackendError, BackendUnavailable
from meshp2p.mesh.routing import ServerCandidate, failover_order

log = logging.getLogger(__name__)

async def answer(candidates: Sequence[ServerCandidate], backend_for: Callable[[ServerCandidate], Backend],
                 request: BackendRequest, *, session_key: str | None, local_id: str) -> Reply:
    """The answer of the best server that gives one; BackendUnavailable when none does."""
    route = _Route(candidates, backend_for, session_key, local_id, request.model)
    reply, server = await route.first_answer(request)
    if not (request.stream and reply.status == 200 and reply.chunks is not None):
        return reply
    tracker = tracker_for(request.path, request.payload, now=time.time())
    if tracker is None:
        return reply
    current = [reply]

    async def close() -> None:
        await current[0].aclose()

    return Reply(reply.status, reply.headers, None,
                 _stream_with_failover(route, request, server, tracker, current), close)


@dataclass
class _Route:
    candidates: Sequence[ServerCandidate]
    backend_for: Callable[[ServerCandidate], Backend]
    session_key: str | None
    local_id: str
    model: str
    #: The servers that failed this request: never asked again.
    failed: set[str] = field(default_factory=set)

    async def first_answer(self, request: BackendRequest) -> tuple[Reply, ServerCandidate]:
        retry_after = 1
        last: BackendUnavailable | None = None
        while True:
            order = failover_order(self.candidates, failed=self.failed, session_key=self.session_key,
                                   local_id=self.local_id)
            if not order:
                if last is not None and len(self.candidates) == 1:
                    raise last  # the only server's own reason says more ("is loading; retry in 9 s")
                raise BackendUnavailable(f"no server of model '{self.model}' is answering; retry in {retry_after} s",
                                         retry_after_s=retry_after)
            server = order[0]
            try:
                return await self.backend_for(server).send(request), server
            except BackendUnavailable as exc:
                log.info("server %s of %s failed before answering: %s", server.peer_id, self.model, exc.message)
                self.failed.add(server.peer_id)
                retry_after = max(retry_after, exc.retry_after_s or 1)
                last = exc


async def _stream_with_failover(route: _Route, request: BackendRequest, server: ServerCandidate,
                                tracker: StreamTracker, current: list[Reply]) -> AsyncIterator[bytes]:
    """The stream's events as the client reads them, over as many servers as it takes.

    A chunk holds whole events: those of one read from the server, together. Each write to the client wakes it
    (on this project's VMs ~0.1-0.6 ms a wake-up), and a Responses stream opens with four events in one read: one
    chunk a read keeps them one write, where one chunk an event made the first token wait behind four writes.
    """
    while True:
        reply, parser = current[0], SseParser()
        assert reply.chunks is not None
        try:
            async for chunk in reply.chunks:
                out = b"".join(serialize(o) for event in parser.feed(chunk) for o in tracker.take(event))
                if out:
                    yield out
            ending = b"".join(serialize(o) for event in parser.close() for o in tracker.take(event))
            if ending:  # a last event without its blank line: the stream ended well
                yield ending
            return
        except BackendError as exc:
            route.failed.add(server.peer_id)
            log.warning("server %s broke mid-stream (%s)", server.peer_id, exc.message)
        finally:
            await reply.aclose()
        finished = tracker.done()
        if finished is not None:  # the answer was whole: only its last events were lost
            yield b"".join(serialize(o) for o in finished)
            return
        body = tracker.continuation(request.payload)
        if body is None:
            why = tracker.refusal() or "this request cannot be continued"
            raise BackendBroke(f"the server broke mid-answer and it is not continued elsewhere: {why}")
        try:
            replacement, server = await route.first_answer(request.with_payload(body))
        except BackendUnavailable as exc:
            raise BackendBroke(f"the server broke mid-answer and no other is available: {exc.message}",
                               retry_after_s=exc.retry_after_s) from exc
        current[0] = replacement
        if replacement.status != 200 or replacement.chunks is None:
            await replacement.aclose()
            raise BackendBroke(f"the replacement server answered {replacement.status}")
        log.info("continuing the stream on server %s", server.peer_id)
        tracker.next_server()
