"""Serving a quart-trio app with hypercorn's trio worker inside the node's nursery."""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from meshp2p.errors import PortInUse

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) ships stubs that shadow trio's own types; they name it here.
    from trio_typing import TaskStatus

#: Idle keep-alive connections are kept this long; agents reuse connections between calls.
KEEP_ALIVE_S = 75


async def serve_app(
    app: QuartTrio, host: str, port: int, *, flag: str, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve until cancelled; reports started once the socket listens. `flag` names the CLI flag for errors."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("meshp2p.http")
    config.keep_alive_timeout = KEEP_ALIVE_S
    config.graceful_timeout = 1.0
    config.include_server_header = False

    try:
        await serve(app, config, task_status=_Started(task_status))
    except (OSError, BaseExceptionGroup) as exc:
        if _address_in_use(exc):
            raise PortInUse(f"port {port} on {host} is already in use",
                            hint=f"stop whatever holds it (another meshp2p?) or pass {flag} with a free port") from exc
        raise


def _address_in_use(exc: BaseException) -> bool:
    """hypercorn binds inside its own nursery, so EADDRINUSE may come wrapped in exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_address_in_use(inner) for inner in exc.exceptions)
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


class _Started:
    """Adapts hypercorn's `started(binds)` to our `started()`."""

    def __init__(self, inner: TaskStatus[None]) -> None:
        self._inner = inner

    def started(self, value: object = None) -> None:
        self._inner.started()
