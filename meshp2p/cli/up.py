"""`meshp2p up`: resolve binaries and models, run a Node, show its progress until Ctrl-C.

(~450 lines: the flags turned into a NodeConfig, and the terminal view of the node that runs; both read the same
args and the same node, so they stay together.)
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio
from rich.console import Console
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from meshp2p.access.gate import AddressLimits
from meshp2p.app.config import load_config
from meshp2p.app.discovery import discover_once
from meshp2p.app.mesh_service import MeshSettings
from meshp2p.app.moe_shards import MoeShardConfig
from meshp2p.app.node import MeshConfig, Node, NodeConfig
from meshp2p.cli.idle import take_over_idle_console
from meshp2p.cli.progress import RichProgress
from meshp2p.errors import BinaryNotFound, ConfigError, MeshP2PError
from meshp2p.home import models_dir
from meshp2p.hosts import ALL_HOSTS, LOOPBACK_HOST
from meshp2p.inference.binaries import LlamaBinaries, find_llama_binaries
from meshp2p.inference.build import build_llama_cpp
from meshp2p.inference.catalog import CatalogEntry, load_catalog
from meshp2p.inference.embedded import DEFAULT_MODEL_ID
from meshp2p.inference.gguf_names import all_parts, model_stem, split_parts
from meshp2p.inference.hub import Hub
from meshp2p.inference.llama_server import BackendState, LlamaServer, ServerOptions
from meshp2p.inference.models import ModelSpec, spec_from_parts
from meshp2p.inference.on_disk import cached_entry_paths
from meshp2p.inference.pairing import SpeculationRules, with_speculation
from meshp2p.inference.processes import stop_leftovers
from meshp2p.inference.progress import TrackedProgress
from meshp2p.inference.resolve import Resolver
from meshp2p.mesh.discovery import rank
from meshp2p.mesh.moe_shards import DEFAULT_MIN_EXPERT_FRACTION
from meshp2p.mesh.planner import FIT_HEADROOM
from meshp2p.p2p.bootstrap_peers import bootstrap_peers
from meshp2p.p2p.identity_store import load_or_create_identity, load_or_create_mesh_secret
from meshp2p.p2p.overlay import OverlayConfig
from meshp2p.wire.errors import WireError
from meshp2p.wire.mesh_id import named_mesh_id, normalise_mesh_name, private_mesh_id
from meshp2p.wire.status import Role
from meshp2p.wire.token import decode_token

log = logging.getLogger(__name__)
_REFRESH_S = 0.1


def run_up(args: argparse.Namespace, console: Console) -> int:
    config = node_config_from_args(args, console)
    # An earlier run of this MESHP2P_HOME that was killed may have left llama.cpp processes holding memory and ports.
    stop_leftovers()
    if config.console_port is not None and take_over_idle_console(config.console_port):
        log.info("stopped the idle console on port %d: this node's console takes its place", config.console_port)
    node = Node(config)
    if config.host == ALL_HOSTS and not node.access.keys_on():
        log.warning("--listen-all with no API key: anyone on the network can use this node's API "
                    "(`meshp2p keys create` turns keys on)")
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
    if args.client and args.model:
        raise ConfigError("--client runs no model, but --model was given", hint="drop one of them")
    mesh = mesh_config_from_args(args)
    binaries = None if args.client else ensure_binaries(console, allow_build=not args.no_build)
    if args.split and (args.client or args.solo or args.standby):
        raise ConfigError("--split serves the --model(s) across peers", hint="drop --client/--solo/--standby")
    if args.split_workers is not None and (not args.split or args.split_workers < 1):
        raise ConfigError("--split-workers N needs --split and N >= 1", hint="e.g. --split --split-workers 2")
    moe_shard = moe_shard_from_args(args)
    if args.standby and (args.client or args.solo):
        raise ConfigError("--standby offers models to a mesh", hint="drop --client/--solo, or drop --standby")
    if args.min_fetch_mbps < 0:
        raise ConfigError("--min-fetch-mbps must be 0 or more", hint="e.g. --min-fetch-mbps 20; 0 turns it off")
    if args.max_upload_mbps is not None and args.max_upload_mbps <= 0:
        raise ConfigError("--max-upload-mbps must be positive", hint="e.g. --max-upload-mbps 100, or leave it out")
    for flag, value in (("--rate-limit", args.rate_limit), ("--max-concurrent", args.max_concurrent)):
        if value < 0:
            raise ConfigError(f"{flag} cannot be negative", hint=f"pass 0 for no limit, or leave {flag} out")
    if args.client and (args.draft or args.spec):
        raise ConfigError("--client runs no model, so there is nothing to speculate for",
                          hint="drop --draft / --spec")
    # A catalog model not on disk is fetched once the mesh is joined (from the members holding it, else from the
    # hub: app/model_fetcher.py); without a mesh it is downloaded here, before anything starts, as is a --draft, and
    # every draft's vocabulary is checked against its model's (inference/pairing.py). A --client node has none to
    # fetch. Models fetched after the start speculate by the same rules (`--spec ngram`, the catalog's pairing).
    resolver = Resolver(progress=RichProgress(console))
    pending: list[CatalogEntry] = []
    later: dict[str, CatalogEntry] = {}  # what was typed for each pending model, and its name
    resolved: list[tuple[str, ModelSpec]] = []
    for name in [] if args.client else args.model or ([] if args.standby else [DEFAULT_MODEL_ID]):
        entry = missing_catalog_model(name) if mesh is not None else None
        if entry is not None:
            pending.append(entry)
            later[name] = later[entry.name] = entry
        else:
            resolved.append((name, resolver.resolve(name)))
    refuse_drafts_for_pending(args.draft or (), args.model or [], later)
    named = with_speculation(resolved, drafts=args.draft or (), ngram=args.spec == "ngram",
                             pairing=not args.no_draft, resolver=resolver)
    rules = SpeculationRules(ngram=args.spec == "ngram", pairing=not args.no_draft)
    models = () if args.client else standby_models(named, rules, resolver) if args.standby else named
    if args.standby and not models and not pending:
        raise ConfigError("--standby has no model to offer",
                          hint=f"pass --model NAME|PATH or put GGUF files in {models_dir()}")
    ids = [m.id for m in models] + [e.name for e in pending]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"two --model arguments have the same id: {', '.join(duplicates)}",
                          hint="give each model once (ids are catalog names or file stems)")
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
        mesh=mesh,
        blackboard=load_config().blackboard,
        standby=args.standby,
        split=args.split,
        split_workers=args.split_workers,
        pending=tuple(pending),
        progress=TrackedProgress(),
        max_upload_mbps=args.max_upload_mbps,
        min_fetch_mbps=args.min_fetch_mbps,
        split_fetch=not args.no_split_fetch,
        address_limits=AddressLimits(rate_rpm=args.rate_limit or None, concurrent=args.max_concurrent or None),
        moe_shard=moe_shard,
        speculation=rules,
    )


def refuse_drafts_for_pending(drafts: Sequence[str], typed: Sequence[str], later: Mapping[str, CatalogEntry]) -> None:
    """A `--draft` for a model fetched after the start (`later`: what was typed for it, and its name) is an error,
    not a draft paired with another model: a draft is checked against its model before anything starts
    (inference/pairing.py), and that model is not here yet. (Its catalog pairing still applies once it arrives.)"""
    for value in drafts:
        if "=" in value and not Path(value).expanduser().is_file():
            target = value.split("=", 1)[0]
        else:
            target = typed[0] if typed else ""
        entry = later.get(target)
        if entry is not None:
            raise ConfigError(f"--draft {value}: {entry.name} is not on disk, so it is fetched once the mesh is "
                              "joined, after the drafts are checked against their models",
                              hint=f"download it first (`meshp2p download {entry.name}`), or drop --draft: the "
                              "catalog's pairing applies to it once it arrives, when its draft is on disk")


def moe_shard_from_args(args: argparse.Namespace) -> MoeShardConfig | None:
    """`--moe shard` and its two knobs, checked; None for the default (the exact layer split)."""
    mode = getattr(args, "moe", "exact")
    min_experts, shard_mb = getattr(args, "moe_min_experts", None), getattr(args, "moe_shard_mb", None)
    if mode != "shard":
        if min_experts is not None or shard_mb is not None:
            raise ConfigError("--moe-min-experts and --moe-shard-mb apply to --moe shard", hint="add --moe shard")
        return None
    if args.client or args.solo or args.standby or args.split:
        raise ConfigError("--moe shard serves the --model(s) as shards of a mesh group",
                          hint="drop --client/--solo/--standby/--split")
    if min_experts is not None and not 0 < min_experts <= 1:
        raise ConfigError("--moe-min-experts is a fraction of each layer's experts", hint="e.g. 0.5 (the default)")
    if shard_mb is not None and shard_mb <= 0:
        raise ConfigError("--moe-shard-mb must be positive", hint="e.g. --moe-shard-mb 20000, or leave it out")
    return MoeShardConfig(min_fraction=DEFAULT_MIN_EXPERT_FRACTION if min_experts is None else min_experts,
                          capacity_bytes=None if shard_mb is None else int(shard_mb * 1e6))


def standby_models(named: tuple[ModelSpec, ...], rules: SpeculationRules, resolver: Resolver) -> tuple[ModelSpec, ...]:
    """What a standby node offers: its --model files (already resolved, downloaded when named and missing) plus every
    GGUF in the model store (speculating by `rules` when promoted, as the --model files do)."""
    specs = {m.id: m for m in named}
    for path in sorted(models_dir().glob("*.gguf")):
        split = split_parts(path.name)
        if split is not None and split[1] != 1:
            continue  # a split model (fetched from members: app/model_fetcher.py) is offered once, by its first file
        try:
            parts = tuple(path.with_name(name) for name in all_parts(path.name))
            spec = spec_from_parts(parts, model_id=model_stem(path.name))
            if spec.id not in specs:
                specs[spec.id] = rules.apply(str(path), spec, resolver)
        except MeshP2PError as exc:
            log.warning("skipping %s: %s", path, exc.message)
    return tuple(specs.values())


def missing_catalog_model(name: str) -> CatalogEntry | None:
    """The catalog entry `name` means, when it is a hub model not on disk here (to fetch once in the mesh)."""
    if Path(name).expanduser().is_file():
        return None
    entry = load_catalog().find(name)
    if entry is None or entry.source != "hub" or cached_entry_paths(entry, Hub()) is not None:
        return None
    return entry


def choose_mesh_automatically(args: argparse.Namespace) -> str:
    """The best public mesh in the DHT (scoring: mesh/discovery.py), or a clear error when there is none."""
    peers = bootstrap_peers(args.bootstrap or ())
    if not peers:
        raise ConfigError("--auto needs bootstrap peers to search the DHT",
                          hint="pass --bootstrap MULTIADDR or set MESHP2P_BOOTSTRAP")
    found = trio.run(lambda: discover_once(peers, region=args.region))
    wanted = next(iter(args.model or []), None)
    for _, candidate in rank(found, region=args.region, model=wanted):
        if candidate.listing.name is not None:
            log.info("--auto chose mesh '%s' (%d nodes)", candidate.listing.name, candidate.listing.nodes)
            return candidate.listing.name
    raise ConfigError("--auto found no joinable public mesh",
                      hint="start one with --mesh-name NAME, or check --region and the bootstrap peers")


def mesh_config_from_args(args: argparse.Namespace) -> MeshConfig | None:
    """Which mesh to be in, from --solo / --join / --mesh-name (else this node's own private mesh)."""
    meshy = [f for f, v in (("--join", args.join), ("--mesh-name", args.mesh_name), ("--publish", args.publish),
                            ("--region", args.region), ("--bootstrap", args.bootstrap), ("--mdns", args.mdns)) if v]
    if args.solo:
        if meshy:
            raise ConfigError(f"--solo keeps the node off the network, but {', '.join(meshy)} was given",
                              hint="drop --solo to join a mesh")
        return None
    if sum(map(bool, (args.join, args.mesh_name, args.auto))) > 1:
        raise ConfigError("--join, --mesh-name and --auto each choose a mesh", hint="give one of them")
    if args.auto:
        args.mesh_name = choose_mesh_automatically(args)
    if args.mdns and not args.listen_all:
        raise ConfigError("--mdns announces this node's LAN address, but peers listen on 127.0.0.1 only",
                          hint="add --listen-all (LAN peers, and anyone else who can reach this machine, can then "
                          "connect and use the API)")
    if args.max_clients is not None and args.max_clients < 1:
        raise ConfigError("--max-clients must be at least 1", hint="leave it out for no limit")
    common = {"region": args.region.strip().upper() if args.region else None, "max_clients": args.max_clients,
              "role": Role.CLIENT if args.client else Role.HOST}
    if args.join:
        try:
            token = decode_token(args.join, now=time.time())
        except WireError as exc:
            raise ConfigError(f"the invite token was rejected ({exc.reason}): {exc.message}",
                              hint="ask a member of the mesh for a fresh token (`meshp2p up` prints one)") from exc
        settings = MeshSettings(mesh_id=token.mesh_id, secret=token.secret, name=token.name,
                                publish=args.publish, join_addrs=token.addrs, **common)
    elif args.mesh_name:
        try:
            name = normalise_mesh_name(args.mesh_name)
        except WireError as exc:
            raise ConfigError(f"--mesh-name {args.mesh_name!r}: {exc.message}",
                              hint="use letters, digits and dashes, e.g. poker-night") from exc
        settings = MeshSettings(mesh_id=named_mesh_id(name), secret=b"", name=name, publish=True, **common)
    else:
        secret = load_or_create_mesh_secret()
        settings = MeshSettings(mesh_id=private_mesh_id(secret), secret=secret, publish=args.publish, **common)
    overlay = OverlayConfig(
        listen_host=ALL_HOSTS if args.listen_all else LOOPBACK_HOST,
        port=args.bind_port,
        bootstrap=bootstrap_peers(args.bootstrap or ()),
        # Clients serve DHT queries too: peers that meet a client-mode node keep failing to query it.
        dht_server=True,
        mdns=args.mdns,
    )
    return MeshConfig(identity=load_or_create_identity(), overlay=overlay, settings=settings,
                      enumerate_host=args.enumerate_host)


def gpu_layers(models: tuple[ModelSpec, ...], max_vram_gb: float | None) -> int | None:
    """0 (CPU only) when the models would not fit the VRAM cap; None leaves llama.cpp's default placement."""
    if max_vram_gb is None:
        return None
    needed = sum(m.size_bytes + (m.speculation.draft_size_bytes if m.speculation else 0) for m in models) * FIT_HEADROOM
    return None if needed <= max_vram_gb * 1e9 and max_vram_gb > 0 else 0


def ensure_binaries(console: Console, *, allow_build: bool) -> LlamaBinaries:
    """Find llama.cpp; build it once (with progress) on a machine that has none."""
    try:
        return find_llama_binaries()
    except BinaryNotFound:
        if not allow_build:
            raise
    console.print("[bold]llama.cpp is not built yet[/]: building the pinned release once (about 5 min on 2 cores).")
    build_llama_cpp(progress=RichProgress(console))
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
            s.model.id: progress.add_task(s.model.id, total=100, state="starting") for s in node.router.servers
        }
        while not all(s.is_ready for s in node.router.servers):
            for s in node.router.servers:
                progress.update(tasks[s.model.id], completed=100 * s.load_progress, state=_describe(s))
            await trio.sleep(_REFRESH_S)
    console.print(_summary(node))
    if node.mesh is not None and node.mesh.service.settings.private:
        # Unwrapped on its own line, so it can be copied whole (also: `meshp2p invite`).
        console.print(f"invite: {node.mesh.service.invite_token()}", soft_wrap=True, highlight=False, markup=False)
    last = {s.model.id: s.state for s in node.router.servers}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_show_hashing, node, console)
        for server in node.router.servers:
            nursery.start_soon(_log_changes, server, last)


async def _show_hashing(node: Node, console: Console) -> None:
    """A bar per large model file being hashed for its content id (once per file; then cached), and per model
    being fetched from members or downloaded after the node started (pending catalog models)."""
    hashing = node.file_ids.hashing
    tracked = node.config.progress
    transfers = tracked.active if isinstance(tracked, TrackedProgress) else {}
    while True:
        while not hashing and not transfers:
            if not node.config.pending:
                return
            await trio.sleep(_REFRESH_S)
        with Progress(TextColumn("[bold]{task.fields[kind]}[/] {task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:
            tasks: dict[str, TaskID] = {}
            while hashing or transfers:
                work = {**{m: ("hashing", d, t) for m, (d, t) in hashing.items()},
                        **{m: ("fetching", d, t) for m, (d, t) in transfers.items()}}
                for name, (kind, done, total) in work.items():
                    if name not in tasks:
                        tasks[name] = progress.add_task(name, total=total, kind=kind)
                    progress.update(tasks[name], completed=done)
                for name in [m for m in tasks if m not in work]:
                    progress.remove_task(tasks.pop(name))
                await trio.sleep(_REFRESH_S)


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
    default = node.router.default_id()
    shards = [] if node.mesh is None else node.mesh.shards
    served = ", ".join(s.model.id for s in node.router.servers) or (
        "no model yet" if shards else "nothing (API client)")
    if node.config.pending:
        served += "; fetching " + ", ".join(e.name for e in node.config.pending) + " (from the mesh, else the hub)"
    lines = [f"[bold green]serving[/] {served}",
             f"OpenAI API  [bold]{node.api_url}[/]" + (f"   (default model: {default})" if default else "")]
    if node.console_url:
        lines.append(f"console     [bold]{node.console_url}/[/]   (JSON: {node.console_url}/api/status)")
    if node.mesh is not None:
        settings, overlay = node.mesh.service.settings, node.mesh.overlay
        kind = f"'{settings.name}' (public)" if not settings.private else "private" + (
            " (listed)" if settings.listed else "")
        how = "started it" if node.mesh.service.created else "joined it"
        lines.append(f"mesh        {kind}, {how}; peer {overlay.peer_id}")
        if not overlay.config.bootstrap:
            lines.append("[yellow]no bootstrap peers[/]: others can join with the invite token or --bootstrap "
                         f"{overlay.addrs()[0]}")
        if settings.private:
            lines.append("invite      printed below; others join with: meshp2p up --join <invite>")
    else:
        lines.append("mesh        none (--solo)")
    if shards:
        lines.append(f"moe shards  {', '.join(m.spec.id for m in shards)}: one shard each of a --moe shard group "
                     f"(at least {shards[0].min_fraction:.0%} of the experts; placement: /api/status moe_shards)")
    if node.access.keys_on():
        lines.append("API keys    on (`meshp2p keys list`)")
    elif node.config.host == ALL_HOSTS:
        lines.append("[bold yellow]warning[/]: --listen-all and no API key: anyone on the network can use this "
                     "node's API (`meshp2p keys create` turns keys on)")
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
