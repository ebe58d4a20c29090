"""Starting and stopping child processes so that none outlives its owner.

Three layers, because a node can die in ways that run none of its `finally` blocks (SIGKILL, the OOM killer, a
crash), and a llama-server left behind holds its memory (VRAM on a GPU machine) and its port:
1. `stop_process` in `finally` blocks: the normal way (SIGTERM, then SIGKILL, always reaped).
2. On Linux, every child asks the kernel for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`, set between fork
   and exec). The signal follows the *thread* that forked, not the process, and `trio.lowlevel.open_process`
   forks in one of trio's worker threads, which exit after 10 s idle: that would kill every llama-server 10 s
   after it started. So `spawn` forks on trio's own thread, the main thread, which lives as long as the process
   (fork + exec blocks the loop for a few milliseconds), and wraps the child with trio's `Process._create`, the
   one private trio call here (trio 0.35; tests/e2e/test_process_hygiene.py notices if it breaks). A parent
   that died before the child's prctl is caught by comparing `getppid()` with the PID the parent had.
3. Every child's PID and command line is recorded in `$MESHP2P_HOME/children.json` while it runs, and
   `stop_leftovers` (run by `meshp2p up` before it starts anything) kills the recorded processes that are still
   alive *and* still run the recorded command line, so a PID the kernel reused for something else is never
   killed. This covers systems without PDEATHSIG and children that escaped it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from meshp2p.home import children_file

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGKILL when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl: nobody would ever stop us
            os._exit(1)

    return preexec


async def spawn(command: Sequence[str], **kwargs: Any) -> trio.Process:
    """Start a child that dies with this process, recorded in children.json until `stop_process` reaps it.

    `kwargs` go to `subprocess.Popen`; pipes are not supported (children here write to their log files)."""
    # Deliberately blocking, on this thread: the parent-death signal follows the thread that forks (see above).
    popen = subprocess.Popen(list(command), preexec_fn=_die_with_parent(os.getpid()), **kwargs)  # noqa: ASYNC220
    process: trio.Process = trio.Process._create(popen, None, None, None)  # type: ignore[attr-defined]
    _record(process.pid, list(command))
    await trio.lowlevel.checkpoint()
    return process


def _read_record(path: Path) -> dict[str, list[str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, list) and all(isinstance(a, str) for a in v)}


def _write_record(path: Path, record: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)  # atomic: a node killed mid-write leaves the old record, never half a file


def _record(pid: int, command: list[str]) -> None:
    path = children_file()
    record = _read_record(path)
    record[str(pid)] = command
    _write_record(path, record)


def _forget(pid: int) -> None:
    path = children_file()
    record = _read_record(path)
    if record.pop(str(pid), None) is not None:
        _write_record(path, record)


def _command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def stop_leftovers() -> list[int]:
    """Kill the children an earlier run of this MESHP2P_HOME left running; returns their PIDs.

    Only a process whose command line is exactly the recorded one is killed (a reused PID is left alone)."""
    path = children_file()
    stopped = []
    for pid_text, command in _read_record(path).items():
        pid = int(pid_text) if pid_text.isdigit() else 0
        if pid <= 1 or pid == os.getpid() or _command_line(pid) != command:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
            log.warning("stopped %s (pid %d), left running by an earlier meshp2p of this MESHP2P_HOME",
                        Path(command[0]).name, pid)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return stopped


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
        _forget(process.pid)


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
