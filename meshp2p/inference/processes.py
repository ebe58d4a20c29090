"""Starting and stopping child processes so that none outlives its owner."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

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


LOG_TAIL_BYTES = 4096


def last_log_line(path: Path) -> str:
    """A child's last words in its log file, for status and error messages ("no output" when there are none)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"
