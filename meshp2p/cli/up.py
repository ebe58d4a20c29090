"""`meshp2p up`: resolve binaries and models, run a Node, show its progress until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal

import trio
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from meshp2p.errors import BinaryNotFound, ConfigError, MeshP2PError
from meshp2p.inference.binaries import LlamaBinaries, find_llama_binaries
from meshp2p.inference.build import build_llama_cpp
from meshp2p.inference.catalog import DEFAULT_MODEL_ID, resolve_model
from meshp2p.inference.llama_server import BackendState, LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec
from meshp2p.node import ALL_HOSTS, LOOPBACK_HOST, Node, NodeConfig

log = logging.getLogger("meshp2p.up")
#: Model files take this much more memory than their size once loaded (KV cache, buffers).
MEMORY_OVERHEAD = 1.1
_REFRESH_S = 0.1


def run_up(args: argparse.Namespace, console: Console) -> int:
    config = node_config_from_args(args, console)
    node = Node(config)
    try:
        trio.run(_serve, node, console)
    except BaseExceptionGroup as group:
        raise _first_meshp2p_error(group) from group
    console.print("[bold]meshp2p stopped[/]: every llama-server was stopped and its port freed.")
    return 0


def node_config_from_args(args: argparse.Namespace, console: Console) -> NodeConfig:
    for flag, value in (("--port", args.port), ("--console", args.console)):
        if not 0 <= value <= 65535 or (flag == "--port" and value == 0):
            raise ConfigError(f"{flag} {value} is not a usable port", hint=f"pass {flag} between 1 and 65535")
    if args.max_vram is not None and args.max_vram < 0:
        raise ConfigError("--max-vram cannot be negative", hint="pass a size in GB, or 0 for CPU only")
    binaries = ensure_binaries(console, allow_build=not args.no_build)
    models = tuple(resolve_model(name) for name in (args.model or [DEFAULT_MODEL_ID]))
    ids = [m.id for m in models]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"two --model arguments have the same id: {', '.join(duplicates)}",
                          hint="give each model once (ids are file stems)")
    return NodeConfig(
        models=models,
        binaries=binaries,
        server_options=ServerOptions(
            ctx_size=args.ctx_size, threads=args.threads, gpu_layers=gpu_layers(models, args.max_vram)
        ),
        host=ALL_HOSTS if args.listen_all else LOOPBACK_HOST,
        api_port=args.port,
        console_port=args.console or None,
        max_vram_gb=args.max_vram,
    )


def gpu_layers(models: tuple[ModelSpec, ...], max_vram_gb: float | None) -> int | None:
    """0 (CPU only) when the models would not fit the VRAM cap; None leaves llama.cpp's default placement."""
    if max_vram_gb is None:
        return None
    needed = sum(m.size_bytes for m in models) * MEMORY_OVERHEAD
    return None if needed <= max_vram_gb * 1e9 and max_vram_gb > 0 else 0


def ensure_binaries(console: Console, *, allow_build: bool) -> LlamaBinaries:
    """Find llama.cpp; build it once (with progress) on a machine that has none."""
    try:
        return find_llama_binaries()
    except BinaryNotFound:
        if not allow_build:
            raise
    console.print("[bold]llama.cpp is not built yet[/]: building the pinned release once (about 5 min on 2 cores).")
    build_llama_cpp(console=console)
    return find_llama_binaries()


async def _serve(node: Node, console: Console) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        await nursery.start(node.run)
        nursery.start_soon(_show_progress, node, console)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s received: stopping", signal.Signals(signum).name)
            scope.cancel()
            return


async def _show_progress(node: Node, console: Console) -> None:
    """A load bar per model until all are ready, then the summary; afterwards log state changes."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {
            s.model.id: progress.add_task(s.model.id, total=100, state="starting") for s in node.servers
        }
        while not all(s.is_ready for s in node.servers):
            for s in node.servers:
                progress.update(tasks[s.model.id], completed=100 * s.load_progress, state=_describe(s))
            await trio.sleep(_REFRESH_S)
    console.print(_summary(node))
    last = {s.model.id: s.state for s in node.servers}
    async with trio.open_nursery() as nursery:
        for server in node.servers:
            nursery.start_soon(_log_changes, server, last)


async def _log_changes(server: LlamaServer, last: dict[str, BackendState]) -> None:
    while True:
        await server.wait_state(*(s for s in BackendState if s is not last[server.model.id]))
        last[server.model.id] = server.state
        if server.state is BackendState.READY:
            log.info("%s is ready again (pid %s, restart %d)", server.model.id, server.pid, server.restarts)
        elif server.state is BackendState.RESTARTING:
            log.warning("%s: %s; restarting in %d s (log: %s)", server.model.id, server.last_error,
                        server.retry_after_s(), server.log_path)


def _describe(server: LlamaServer) -> str:
    if server.state is BackendState.RESTARTING and server.last_error:
        return f"restarting: {server.last_error[:80]}"
    return server.state.value


def _summary(node: Node) -> Panel:
    lines = [f"[bold green]serving[/] {', '.join(s.model.id for s in node.servers)}",
             f"OpenAI API  [bold]{node.api_url}[/]   (default model: {node.router.default.model.id})"]
    if node.console_url:
        lines.append(f"status      {node.console_url}/api/status")
    lines.append("[dim]Ctrl-C stops every llama-server and frees its port[/]")
    return Panel("\n".join(lines), title="meshp2p", expand=False)


def _first_meshp2p_error(group: BaseExceptionGroup) -> BaseException:
    """trio wraps errors from tasks in groups; surface ours so the CLI prints its hint."""
    for exc in group.exceptions:
        if isinstance(exc, MeshP2PError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_meshp2p_error(exc)
            if isinstance(inner, MeshP2PError):
                return inner
    return group
