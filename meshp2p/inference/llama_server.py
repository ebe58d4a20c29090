"""Supervising one llama-server process per model: start it, watch it load, restart it when it dies.

The supervisor owns the process for its whole life: `run()` lives in the node's nursery, and whatever
ends it (cancellation, Ctrl-C, a crash elsewhere) stops and reaps the child before it returns.
"""

from __future__ import annotations

import enum
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.models import ModelSpec
from meshp2p.inference.ports import free_loopback_port
from meshp2p.inference.processes import last_log_line, spawn, stop_process
from meshp2p.inference.spec_metrics import SPEC_METRICS_POLL_S, SpeculationMeter, SpeculationStatus, parse_spec_counters
from meshp2p.inference.speculation import speculation_args

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) ships stubs that shadow trio's own types; they name it here.
    from trio_typing import TaskStatus

#: Waits between restarts after consecutive failures; the last one repeats.
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: A server that stayed up this long has its backoff reset: its next death is treated as the first.
STABLE_RUN_S = 60.0
#: Loading a big model from a slow disk can take minutes; past this we kill it and try again.
LOAD_TIMEOUT_S = 900.0
HEALTH_POLL_S = 0.05
HEALTH_TIMEOUT_S = 2.0
#: Mapped-file progress stops short of 100 %: after mapping, llama.cpp still prepares buffers.
_MAX_MAPPED_PROGRESS = 0.95


class BackendState(enum.StrEnum):
    STARTING = "starting"
    LOADING = "loading"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ServerOptions:
    """How every llama-server of a node runs; None leaves llama.cpp's own default."""

    ctx_size: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    extra_args: tuple[str, ...] = ()


class LlamaServer:
    """One model's llama-server on a private loopback port, kept alive with backoff."""

    def __init__(
        self,
        binaries: LlamaBinaries,
        model: ModelSpec,
        options: ServerOptions,
        *,
        log_dir: Path,
    ) -> None:
        self.binaries = binaries
        self.model = model
        self.options = options
        self.log_path = log_dir / f"llama-server-{_safe_name(model.id)}.log"
        self.state = BackendState.STARTING
        self.port: int | None = None
        self.pid: int | None = None
        self.restarts = 0
        self.load_progress = 0.0
        self.last_error: str | None = None
        self._retry_at: float | None = None
        self._changed = trio.Event()
        #: Draft tokens proposed and accepted, when the model speculates (read by `watch_speculation`).
        self.speculation_meter = None if model.speculation is None else SpeculationMeter(model.speculation)

    # -- what the rest of the node reads -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}"

    @property
    def is_ready(self) -> bool:
        return self.state is BackendState.READY

    def retry_after_s(self) -> int:
        """A client's best guess of when to retry: the pending restart, else a short default."""
        if self._retry_at is not None:
            return max(1, math.ceil(self._retry_at - trio.current_time()))
        return 1 if self.state is BackendState.LOADING else 2

    def speculation_status(self) -> SpeculationStatus | None:
        """The model's speculation (a draft id or "ngram") and its acceptance so far; None when it does not."""
        return None if self.speculation_meter is None else self.speculation_meter.status()

    def speculation_json(self) -> dict[str, Any] | None:
        """`speculation_status()` as /api/status shows it."""
        status = self.speculation_status()
        return None if status is None else status.to_json()

    async def wait_state(self, *states: BackendState) -> BackendState:
        while self.state not in states:
            await self._changed.wait()
        return self.state

    def command(self, port: int) -> list[str]:
        """The llama-server argument list for this model on `port`."""
        m, o = self.model, self.options
        args = [str(self.binaries.server), "-m", str(m.path), "--host", LOOPBACK_HOST, "--port", str(port),
                "--alias", m.id, "--metrics", "--no-webui"]
        if o.ctx_size is not None:
            args += ["-c", str(o.ctx_size)]
        if o.threads is not None:
            args += ["-t", str(o.threads)]
        if o.gpu_layers is not None:
            args += ["-ngl", str(o.gpu_layers)]
        if m.reranking:
            args += ["--reranking"]
        elif m.embeddings:
            args += ["--embeddings"]
        if m.chat_template is not None:
            args += ["--jinja", "--chat-template", m.chat_template]
        if m.speculation is not None:
            args += speculation_args(m.speculation, gpu_layers=o.gpu_layers, split="--rpc" in m.extra_server_args)
        return [*args, *m.extra_server_args, *o.extra_args]

    # -- supervision ---------------------------------------------------------------------------------

    async def watch_speculation(self) -> None:
        """Read the speculation counters of `/metrics` every SPEC_METRICS_POLL_S while ready (spec_metrics.py),
        until cancelled; returns at once for a model that does not speculate."""
        meter = self.speculation_meter
        if meter is None:
            return
        async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
            while True:
                await self.wait_state(BackendState.READY)
                pid = self.pid
                try:
                    response = await http.get(f"{self.base_url}/metrics")
                    counters = parse_spec_counters(response.text) if response.status_code == 200 else None
                except httpx.TransportError:
                    counters = None
                if counters is not None and pid is not None and pid == self.pid:
                    meter.observe(pid, *counters)
                await trio.sleep(SPEC_METRICS_POLL_S)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep llama-server running until cancelled. Reports started as soon as the first process is up."""
        failures = 0
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with httpx.AsyncClient(timeout=HEALTH_TIMEOUT_S) as http:
                while True:
                    started = trio.current_time()
                    await self._run_once(http, task_status)
                    task_status = trio.TASK_STATUS_IGNORED
                    if trio.current_time() - started >= STABLE_RUN_S:
                        failures = 0
                    delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
                    failures += 1
                    self.restarts += 1
                    self._retry_at = trio.current_time() + delay
                    self._set_state(BackendState.RESTARTING)
                    await trio.sleep(delay)
                    self._retry_at = None
        finally:
            self.pid = None
            self._set_state(BackendState.STOPPED)

    async def _run_once(self, http: httpx.AsyncClient, task_status: TaskStatus[None]) -> None:
        """Start one process, wait until it serves, return when it exits."""
        port = free_loopback_port()
        self.load_progress = 0.0
        with self.log_path.open("ab") as log:
            log.write(f"\n===== meshp2p starts: {' '.join(self.command(port))}\n".encode())
            log.flush()
            process = await spawn(
                self.command(port), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            self.port, self.pid = port, process.pid
            self._set_state(BackendState.LOADING)
            task_status.started()
            try:
                if await self._wait_healthy(http, process):
                    self.load_progress = 1.0
                    self.last_error = None
                    self._set_state(BackendState.READY)
                await process.wait()
                self.last_error = f"llama-server exited with code {process.returncode}: {last_log_line(self.log_path)}"
            finally:
                await stop_process(process)

    async def _wait_healthy(self, http: httpx.AsyncClient, process: trio.Process) -> bool:
        """Poll /health until it says ok (True), the process exits, or loading takes too long (False)."""
        healthy = False
        with trio.move_on_after(LOAD_TIMEOUT_S) as load_deadline:
            while process.returncode is None and not healthy:
                try:
                    response = await http.get(f"http://{LOOPBACK_HOST}:{self.port}/health")
                    healthy = response.status_code == 200
                except httpx.TransportError:
                    pass
                if not healthy:
                    self._update_load_progress(process.pid)
                    await trio.sleep(HEALTH_POLL_S)
        if load_deadline.cancelled_caught:
            self.last_error = f"llama-server did not finish loading within {LOAD_TIMEOUT_S:.0f} s"
            process.kill()
        return healthy

    def _update_load_progress(self, pid: int) -> None:
        """Estimate loading from how much of the model file the process has mapped (Linux); else leave it."""
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                status = f.read()
        except OSError:
            return
        match = re.search(rb"^RssFile:\s+(\d+) kB", status, re.M)
        if match and self.model.size_bytes:
            mapped = int(match.group(1)) * 1024 / self.model.size_bytes
            progress = min(_MAX_MAPPED_PROGRESS, mapped)
            if progress > self.load_progress:
                self.load_progress = progress
                self._notify()

    def _set_state(self, state: BackendState) -> None:
        self.state = state
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


def _safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)
