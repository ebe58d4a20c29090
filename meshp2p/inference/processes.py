"""Starting and stopping child processes so that none outlives its owner."""

from __future__ import annotations

import contextlib
import signal

import trio

STOP_GRACE_S = 5.0


async def stop_process(process: trio.Process, *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; always reaps. Safe to call on an exited process.

    Runs shielded: it is called from `finally` blocks of cancelled tasks, and an unreaped child is a leak.
    """
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with trio.move_on_after(grace_s):
                await process.wait()
            if process.returncode is None:
                process.kill()
        await process.wait()
