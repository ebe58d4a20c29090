"""Supervising the worker's `ggml-rpc-server`: the llama.cpp process that runs a host's layers on this machine.

llama.cpp's RPC protocol has no authentication or encryption, and a client can make the server allocate memory
and run arbitrary graphs: the server therefore binds 127.0.0.1 only, and peers reach it solely through the
`/meshp2p/rpc/1.0.0` libp2p stream (protocols/rpc-tunnel.md), which admits mesh members only.

Same life cycle as `LlamaServer`: `run()` lives in a nursery, reports started once the port accepts TCP
connections, restarts the process with backoff when it dies, and stops and reaps it whatever ends `run()`.
`OnDemandRpcServer` starts it the first time a split asks for it.

The patched server (vendor/llama.cpp/patches/0001-rpc-local-gguf.patch) indexes the `--gguf` files it was started
with, once; it has no way to take another file while it runs. A model file that arrives later (fetched for a
split this node was recruited to: app/recruitment.py) is therefore given to it by a restart: the next connection
that finds no other connection open and the server's files out of date restarts it with the current files first
(each connection is its own RPC session, so nobody loses state; with `-c` the files already indexed are read back
from the cache). While a split is connected the restart waits for its end, and that split's weights for the new
file cross the tunnel as stock llama.cpp sends them.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from meshp2p.errors import BackendUnavailable, BinaryNotFound
from meshp2p.home import meshp2p_home
from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.binaries import BUILD_COMMAND, LlamaBinaries
from meshp2p.inference.llama_server import RESTART_BACKOFF_S, STABLE_RUN_S, BackendState
from meshp2p.inference.ports import free_loopback_port
from meshp2p.inference.processes import last_log_line, spawn, stop_process

if TYPE_CHECKING:
    from trio_typing import TaskStatus

#: The RPC server binds in well under a second; past this the start counts as failed.
START_TIMEOUT_S = 15.0
#: Failed starts in a row before the first successful one; then `run()` raises instead of retrying for ever.
#: More than one, because a free port can be taken between our probe and the child's bind.
START_ATTEMPTS = 3
PORT_POLL_S = 0.02
LOG_NAME = "ggml-rpc-server.log"
#: llama.cpp keeps its RPC file cache (tensors over 10 MB, by content hash) under $LLAMA_CACHE/rpc; with `--gguf`
#: files the patched server also keeps their tensor index there (`gguf-index-*.bin`), so a restart need not rehash.
LLAMA_CACHE_ENV = "LLAMA_CACHE"


log = logging.getLogger(__name__)

#: The option added by vendor/llama.cpp/patches/0001-rpc-local-gguf.patch; a stock ggml-rpc-server exits on it.
GGUF_OPTION = "--gguf"


def default_rpc_cache_dir() -> Path:
    return meshp2p_home() / "cache" / "rpc"


@functools.lru_cache(maxsize=8)
def _takes_gguf(binary: Path, mtime_ns: int) -> bool:
    try:
        done = subprocess.run([str(binary), "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return GGUF_OPTION.encode() in done.stdout + done.stderr


def supports_local_gguf(binary: Path) -> bool:
    """Whether this ggml-rpc-server takes `--gguf` (asked once per build, from its --help)."""
    try:
        return _takes_gguf(binary, binary.stat().st_mtime_ns)
    except OSError:
        return False


class RpcServer:
    """One `ggml-rpc-server` on a private loopback port, kept alive with backoff."""

    def __init__(
        self,
        binaries: LlamaBinaries,
        *,
        log_dir: Path,
        threads: int | None = None,
        devices: tuple[str, ...] = (),
        cache: bool = True,
        cache_dir: Path | None = None,
        gguf_paths: Iterable[Path] | Callable[[], Iterable[Path]] = (),
    ) -> None:
        """`gguf_paths`: model files on this machine (every shard of a split GGUF). The RPC server (built with
        vendor/llama.cpp/patches/0001-rpc-local-gguf.patch) indexes their tensors by content hash and reads any
        weight a host offers by hash from them, so the host sends no weights for those models. A callable is
        asked again at each (re)start, so models that arrived since are included."""
        if binaries.rpc_server is None:
            raise BinaryNotFound(
                f"no ggml-rpc-server next to {binaries.server}",
                hint=f"run `{BUILD_COMMAND}` (it builds llama.cpp with -DGGML_RPC=ON)",
            )
        self.binary: Path = binaries.rpc_server
        self.threads = threads
        self.devices = devices
        self.cache = cache
        self.cache_dir = cache_dir or default_rpc_cache_dir()
        self.gguf_paths = gguf_paths
        self.log_path = log_dir / LOG_NAME
        self.state = BackendState.STARTING
        self.port: int | None = None
        self.pid: int | None = None
        self.restarts = 0
        self.last_error: str | None = None
        #: The `--gguf` files the running process was started with (what it indexed).
        self.started_with: tuple[str, ...] = ()
        self._process: trio.Process | None = None
        self._restart_asked = False
        self._changed = trio.Event()

    @property
    def endpoint(self) -> str:
        """`host:port` as llama-server's `--rpc` takes it (only meaningful on this machine)."""
        return f"{LOOPBACK_HOST}:{self.port}"

    def _wanted_ggufs(self) -> list[str]:
        return list(dict.fromkeys(str(p) for p in (self.gguf_paths() if callable(self.gguf_paths)
                                                   else self.gguf_paths)))

    def local_ggufs(self) -> list[str]:
        """The model files to pass as `--gguf` (once each, in order); none if the binary cannot take them."""
        paths = self._wanted_ggufs()
        if paths and not supports_local_gguf(self.binary):
            log.warning("%s has no %s (built without meshp2p's patches?): workers will receive weights over the "
                        "network; rebuild with `%s`", self.binary, GGUF_OPTION, BUILD_COMMAND)
            return []
        return paths

    def command(self, port: int) -> list[str]:
        args = [str(self.binary), "-H", LOOPBACK_HOST, "-p", str(port)]
        if self.threads is not None:
            args += ["-t", str(self.threads)]
        if self.devices:
            args += ["-d", ",".join(self.devices)]
        if self.cache:
            args += ["-c"]
        for path in self.local_ggufs():
            args += [GGUF_OPTION, path]
        return args

    def stale(self) -> bool:
        """Whether the running server lacks model files this node has now (it indexes its files only at start)."""
        if self._process is None or self.state is not BackendState.READY:
            return False
        wanted = self._wanted_ggufs()
        return bool(wanted) and tuple(wanted) != self.started_with and supports_local_gguf(self.binary)

    async def restart(self) -> int:
        """Restart the running server at once (no backoff, not counted in `restarts`) so that it starts with the
        current `gguf_paths`; the new port once it accepts connections."""
        process = self._process
        if process is not None and process.returncode is None:
            self._restart_asked = True
            self._set_state(BackendState.RESTARTING)
            process.terminate()
        return await self.wait_ready()

    def environment(self) -> dict[str, str]:
        return {**os.environ, LLAMA_CACHE_ENV: str(self.cache_dir)}

    async def wait_ready(self) -> int:
        """The port once the server accepts connections (waits through a restart)."""
        while self.state is not BackendState.READY:
            if self.state is BackendState.STOPPED:
                raise BackendUnavailable(f"the RPC server stopped ({self.last_error or 'cancelled'})", retry_after_s=5)
            await self._changed.wait()
        assert self.port is not None
        return self.port

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the RPC server running until cancelled; reports its port once it accepts TCP connections.

        Raises BackendUnavailable if it never came up in START_ATTEMPTS tries (a broken binary, say), so that
        `nursery.start` does not wait for ever; after a first success it restarts for as long as it runs.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.cache:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        if self.gguf_paths:  # ask the binary (`--help`) off the event loop; command() then finds the answer cached
            await trio.to_thread.run_sync(supports_local_gguf, self.binary)
        failures = 0
        ever_ready = False
        self._set_state(BackendState.STARTING)
        try:
            while True:
                started = trio.current_time()
                if await self._run_once(task_status):
                    task_status = trio.TASK_STATUS_IGNORED
                    ever_ready = True
                if self._restart_asked:  # restart(): with the files it has now, at once
                    self._restart_asked = False
                    continue
                if trio.current_time() - started >= STABLE_RUN_S:
                    failures = 0
                failures += 1
                if not ever_ready and failures >= START_ATTEMPTS:
                    raise BackendUnavailable(
                        f"ggml-rpc-server did not start ({self.last_error})", retry_after_s=30,
                        hint=f"see {self.log_path}",
                    )
                delay = RESTART_BACKOFF_S[min(failures - 1, len(RESTART_BACKOFF_S) - 1)]
                self.restarts += 1
                self._set_state(BackendState.RESTARTING)
                await trio.sleep(delay)
        finally:
            self.pid = None
            self._set_state(BackendState.STOPPED)

    async def _run_once(self, task_status: TaskStatus[int]) -> bool:
        """Start one process, wait until its port accepts connections, return when it exits. True if it was up."""
        port = free_loopback_port()
        command = self.command(port)
        ggufs = tuple(command[i + 1] for i, arg in enumerate(command) if arg == GGUF_OPTION)
        ready = False
        with self.log_path.open("ab") as log:
            log.write(f"\n===== meshp2p starts: {' '.join(command)}\n".encode())
            log.flush()
            process = await spawn(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.environment()
            )
            self.port, self.pid, self._process, self.started_with = port, process.pid, process, ggufs
            try:
                if await self._wait_listening(process, port):
                    ready = True
                    self.last_error = None
                    self._set_state(BackendState.READY)
                    task_status.started(port)
                await process.wait()
                if not self._restart_asked:
                    last_words = last_log_line(self.log_path)
                    self.last_error = f"ggml-rpc-server exited with code {process.returncode}: {last_words}"
            finally:
                await stop_process(process)
                self.pid, self._process = None, None
        return ready

    async def _wait_listening(self, process: trio.Process, port: int) -> bool:
        """Poll until the port accepts a TCP connection (True), the process exits, or START_TIMEOUT_S passes."""
        listening = False
        with trio.move_on_after(START_TIMEOUT_S) as deadline:
            while process.returncode is None and not listening:
                try:
                    probe = await trio.open_tcp_stream(LOOPBACK_HOST, port)
                except OSError:
                    await trio.sleep(PORT_POLL_S)
                    continue
                # The server serves clients one after another; a probe that says nothing is dropped at once.
                await probe.aclose()
                listening = True
        if deadline.cancelled_caught:
            self.last_error = f"ggml-rpc-server did not listen within {START_TIMEOUT_S:.0f} s"
            process.kill()
        return listening

    def _set_state(self, state: BackendState) -> None:
        self.state = state
        self._changed.set()
        self._changed = trio.Event()


class OnDemandRpcServer:
    """Starts an RpcServer the first time `port()` is awaited: a worker runs one only when a split needs it.

    `run()` holds the nursery the server lives in (start it in the node's nursery); `port` is the callable
    `RpcTunnelServer` takes, asked once per connection. `busy()` says whether a connection is open (the tunnel's
    count): a server whose files are out of date is restarted by `port` only when none is (module docstring).
    """

    def __init__(self, server: RpcServer, *, busy: Callable[[], bool] = lambda: False) -> None:
        self.server = server
        self.busy = busy
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()
        self._started = False

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    async def port(self) -> int:
        if self._nursery is None:
            raise BackendUnavailable("the RPC server is not running (the node is stopping)", retry_after_s=5)
        async with self._lock:
            if not self._started:
                port: int = await self._nursery.start(self.server.run)
                self._started = True
                return port
            if self.server.stale() and not self.busy():
                log.info("restarting ggml-rpc-server: model files arrived since it started (%s), so that it "
                         "loads their weights from disk", ", ".join(Path(p).name for p in self.server.local_ggufs()
                                                                   if p not in self.server.started_with))
                return await self.server.restart()
        return await self.server.wait_ready()
