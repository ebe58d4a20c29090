"""The `meshp2p` command: argument parsing and dispatch. Each command lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from rich.console import Console

from meshp2p import __version__
from meshp2p.access.gate import DEFAULT_ADDRESS_CONCURRENT, DEFAULT_ADDRESS_RPM
from meshp2p.app.model_fetcher import DEFAULT_MIN_FETCH_MBPS
from meshp2p.app.node import DEFAULT_API_PORT, DEFAULT_CONSOLE_PORT
from meshp2p.cli.blackboard_parser import add_blackboard_parser
from meshp2p.cli.logs import LOG_FORMATS, configure_logging
from meshp2p.errors import MeshP2PError
from meshp2p.inference.build import BACKENDS

DESCRIPTION = """\
meshp2p pools spare GPUs and CPUs on ordinary machines to serve LLMs. Every node answers on an
OpenAI-compatible API (http://localhost:9337/v1), whichever machine actually holds the model.
With no command, meshp2p says what to run and serves the console (http://127.0.0.1:3131,
read-only) until Ctrl-C.

Environment:
  MESHP2P_HOME       data dir: identity, model store, logs (default ~/.meshp2p)
  MESHP2P_LLAMA_DIR  folder with llama-server / ggml-rpc-server to use instead of the built ones
  MESHP2P_CATALOG    a catalog JSON file to use instead of the packaged one (see `meshp2p download`)
  HF_HOME            Hugging Face's folder; downloads go to its cache, $HF_HOME/hub (default ~/.cache/huggingface)
  HF_TOKEN           a Hugging Face token, for gated repos (accept the licence on the repo's page first)
  HF_HUB_OFFLINE     1: never ask the hub; models must already be in the cache
  HF_ENDPOINT        another hub or a mirror (default https://huggingface.co)
"""


#: command -> "module:function(args, console) -> exit status"
COMMANDS: dict[str | None, str] = {
    "up": "meshp2p.cli.up:run_up",
    "doctor": "meshp2p.cli.doctor:run_doctor",
    "llama": "meshp2p.cli.llama:run_llama",
    "id": "meshp2p.cli.identity:run_id",
    "rotate-key": "meshp2p.cli.identity:run_rotate_key",
    "invite": "meshp2p.cli.invite:run_invite",
    "discover": "meshp2p.cli.discover:run_discover",
    "bootstrap": "meshp2p.cli.bootstrap:run_bootstrap",
    "status": "meshp2p.cli.status:run_status",
    "drop": "meshp2p.cli.drop:run_drop",
    "blackboard": "meshp2p.cli.blackboard:run_blackboard",
    "download": "meshp2p.cli.download:run_download",
    "models": "meshp2p.cli.models:run_models",
    "keys": "meshp2p.cli.keys:run_keys",
    #: No command: what to run, and the read-only console (meshp2p/app/idle.py).
    None: "meshp2p.cli.idle:run_idle",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshp2p", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"meshp2p {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="auto",
                        help="log shape: rich (wrapped, coloured), text (one line per event: time level logger "
                             "message key=value), json (one JSON object per line); auto (default) is rich on a "
                             "terminal and text anywhere else. `up` also appends the lines to "
                             "$MESHP2P_HOME/logs/meshp2p.log")
    parser.add_argument("--console", dest="idle_console", type=int, default=DEFAULT_CONSOLE_PORT, metavar="PORT",
                        help="with no command: the port of the read-only console on 127.0.0.1 (default "
                        f"{DEFAULT_CONSOLE_PORT}); `up --console` sets a node's")
    # No command is idle mode: what to run, and the console (read-only) on :3131 until Ctrl-C.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=False)

    up = commands.add_parser(
        "up",
        help="serve models on the OpenAI-compatible API",
        description="Start llama-server for each model and answer on an OpenAI-compatible API. "
        "With no --model, serves the embedded default model (gemma-3-270m). A model named but not on disk is "
        "downloaded from Hugging Face first, with a progress bar (never on a --client node). Ctrl-C stops everything.",
    )
    up.add_argument("--model", "-m", action="append", metavar="NAME|PATH", default=None,
                    help="a .gguf file; a catalog name or alias (`meshp2p download` lists them; downloaded into the "
                    "Hugging Face cache when missing); hf://OWNER/REPO/FILE.gguf; OWNER/REPO:QUANT (the repo's GGUF "
                    "of that quantisation, llama.cpp's form); or a model in $MESHP2P_HOME/models. Repeat for several "
                    "models (one llama-server each; the first is the default). Default: gemma-3-270m")
    spec = up.add_argument_group(
        "speculative decoding", "A small draft model of the same tokenizer (or n-gram lookup) proposes tokens that the "
        "model checks in one batch: the answer is the model's own, faster when the proposals are accepted. The draft "
        "runs in the model's own llama-server (where the model's layers go: GPU or CPU). By default a model named by "
        "its catalog name uses the catalog's draft when that is already on disk (never downloaded for this; "
        "`meshp2p download NAME --draft`). /api/status shows each model's speculation and acceptance rate.")
    spec.add_argument("--draft", action="append", metavar="[MODEL=]DRAFT", default=None,
                      help="speculate with DRAFT (a path or a name, as for --model; downloaded when missing) for "
                      "the first --model, or for MODEL (as given to --model, or its id) with MODEL=DRAFT; "
                      "repeatable. A draft whose vocabulary differs from its model's is refused before anything starts")
    spec.add_argument("--no-draft", action="store_true",
                      help="no draft model: turn the catalog's automatic pairing off")
    spec.add_argument("--spec", choices=("ngram",), default=None,
                      help="ngram: speculate by n-gram lookup in the text already seen (llama.cpp's ngram-map-k), "
                      "no draft model; for every model here. Pays off on text that repeats (code edits, quoting)")
    up.add_argument("--port", type=int, default=DEFAULT_API_PORT,
                    help=f"port of the OpenAI API (default {DEFAULT_API_PORT})")
    up.add_argument("--console", type=int, default=DEFAULT_CONSOLE_PORT, metavar="PORT",
                    help=f"port of the console and its /api/status (default {DEFAULT_CONSOLE_PORT}; 0 turns it off)")
    up.add_argument("--ctx-size", "-c", type=int, default=None, metavar="TOKENS",
                    help="context size per model in tokens (default: llama.cpp's, the model's training context)")
    up.add_argument("--max-vram", type=float, default=None, metavar="GB",
                    help="GPU memory this node may use; a model larger than 1.1 x GB runs on the CPU, 0 keeps "
                    "every model on the CPU (default: no limit)")
    up.add_argument("--max-upload-mbps", type=float, default=None, metavar="MBPS",
                    help="cap on what this node uploads to mesh members fetching model files from it, in "
                    "megabits per second (default: no cap, right for a LAN; on a metered or shared uplink set one)")
    up.add_argument("--min-fetch-mbps", type=float, default=DEFAULT_MIN_FETCH_MBPS, metavar="MBPS",
                    help="a model fetched from mesh members slower than this, in megabits per second over 5 s, is "
                    f"downloaded from Hugging Face instead, what arrived kept (default {DEFAULT_MIN_FETCH_MBPS:g}; "
                    "0: never give up on members; ignored with HF_HUB_OFFLINE)")
    up.add_argument("--threads", "-t", type=int, default=None,
                    help="CPU threads per llama-server (default: llama.cpp's choice)")
    up.add_argument("--listen-all", action="store_true",
                    help="listen on every interface (0.0.0.0) instead of 127.0.0.1 only, for the API and for "
                    "peers: needed to mesh with other machines; anyone who can reach this one can use the API "
                    "unless API keys are on (`meshp2p keys create`)")
    up.add_argument("--rate-limit", type=int, default=DEFAULT_ADDRESS_RPM, metavar="RPM",
                    help="requests per minute each client address not on this machine may make; more get 429 "
                    f"with Retry-After (default {DEFAULT_ADDRESS_RPM}; 0: no limit; this machine's own clients "
                    "have none)")
    up.add_argument("--max-concurrent", type=int, default=DEFAULT_ADDRESS_CONCURRENT, metavar="N",
                    help="requests (streams included) each client address not on this machine may have in "
                    f"flight at once; more get 429 (default {DEFAULT_ADDRESS_CONCURRENT}; 0: no limit; this "
                    "machine's own clients have none)")
    up.add_argument("--no-build", action="store_true",
                    help="fail instead of building llama.cpp when no binaries are found")
    mesh = up.add_argument_group("mesh", "Which mesh this node is in. Default: this node's own private mesh "
                                 "(its invite token is printed at start).")
    mesh.add_argument("--mesh-name", metavar="NAME",
                      help="join the public mesh NAME, creating it if nobody runs it yet (same command on every node)")
    mesh.add_argument("--auto", action="store_true",
                      help="join the best public mesh found in the DHT (region match, capacity, models, fullness; "
                      "see `meshp2p discover --auto`)")
    mesh.add_argument("--join", metavar="TOKEN", help="join a private mesh with an invite token from one of its nodes")
    mesh.add_argument("--publish", action="store_true",
                      help="list this private mesh in the DHT so `discover` shows it (the listing carries no "
                      "secret: joining still needs an invite token)")
    mesh.add_argument("--region", metavar="CODE", help="tag this node and the mesh listing with a region, e.g. AU")
    mesh.add_argument("--max-clients", type=int, metavar="N",
                      help="stop listing the mesh once N API-client nodes are in it (default: no limit)")
    mesh.add_argument("--standby", action="store_true",
                      help="start no model now: offer the --model files (and the GGUFs in $MESHP2P_HOME/models) "
                      "to the mesh and load one when it is wanted, hot, or its last server left")
    mesh.add_argument("--split", action="store_true",
                      help="serve the --model(s) split by layers over nearby peers (RTT <= 80 ms) that have the same "
                      "file, even when they fit here: for testing and benchmarks (models too big for any one node "
                      "are split without it)")
    mesh.add_argument("--no-split-fetch", action="store_true",
                      help="do not fetch the model files other members ask this node to hold so that it can be "
                      "a worker of their split (default: a node that can be a worker fetches them, once, checked, "
                      "into $MESHP2P_HOME/models, when its disk has room)")
    mesh.add_argument("--split-workers", type=int, metavar="N",
                      help="with --split: use exactly N workers (default: every eligible peer)")
    mesh.add_argument("--moe", choices=("exact", "shard"), default="exact",
                      help="how a Mixture-of-Experts model is served over the mesh: `exact` (default) splits it "
                      "by layers when it does not fit (solo's tokens); `shard` makes this node one shard of a group "
                      "of `--moe shard` nodes with the same file: the whole trunk, the most-used experts and a share "
                      "of the rest, no traffic between nodes, quality measured by tools/bench/moe_bench.py")
    mesh.add_argument("--moe-min-experts", type=float, default=None, metavar="FRACTION",
                      help="with --moe shard: refuse a shard holding fewer than this fraction of each layer's "
                      "experts (default 0.5)")
    mesh.add_argument("--moe-shard-mb", type=float, default=None, metavar="MB",
                      help="with --moe shard: memory this node gives its shard, in MB (default: what it offers "
                      "for models, less 10%% headroom)")
    mesh.add_argument("--client", action="store_true",
                      help="join as an API-only node: run no model, answer the API for the mesh")
    mesh.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                      help="a bootstrap peer (/ip4/../tcp/../p2p/ID); repeatable; also MESHP2P_BOOTSTRAP and "
                      "bootstrap/peers.txt")
    mesh.add_argument("--mdns", action="store_true",
                      help="find meshp2p peers on the local network over mDNS (multicast) and connect to them, "
                      "so nodes on one LAN mesh without --bootstrap; needs --listen-all")
    mesh.add_argument("--bind-port", type=int, default=0, metavar="PORT",
                      help="TCP port for peer-to-peer traffic (default: any free port)")
    mesh.add_argument("--enumerate-host", action="store_true",
                      help="share this machine's GPU name with the mesh (RAM/VRAM sizes are always shared)")
    mesh.add_argument("--solo", action="store_true",
                      help="stay off the network: serve the API locally only, join no mesh")

    doctor = commands.add_parser(
        "doctor", help="check llama.cpp binaries, the default model and ports",
        description="Say what meshp2p found (llama.cpp binaries and version, default model, data dir, ports), "
        "what is missing, and the command that fixes it. Exit status 1 when something required is missing.")
    doctor.add_argument("--port", type=int, default=DEFAULT_API_PORT, help="API port to check is free")

    llama = commands.add_parser("llama", help="manage the llama.cpp build",
                                description="Manage the llama.cpp binaries meshp2p runs.")
    llama_cmds = llama.add_subparsers(dest="llama_command", metavar="ACTION", required=True)
    build = llama_cmds.add_parser(
        "build", help="build the pinned llama.cpp into the cache",
        description="Build llama-server and ggml-rpc-server from the pinned release with the recipe in "
        "vendor/llama.cpp/, into ~/.cache/meshp2p/llama.cpp/<tag>[-backend]/. About 5 minutes on 2 cores.")
    build.add_argument("--backend", choices=BACKENDS, default="cpu", help="GPU backend to build for (default cpu)")
    build.add_argument("--jobs", "-j", type=int, default=None, help="parallel compile jobs (default: all cores)")
    build.add_argument("--native", action="store_true",
                       help="optimise for this CPU (the binaries may not run on other CPUs)")

    ident = commands.add_parser("id", help="print this node's PeerID (and addresses when it runs)",
                                description="Print the PeerID of the identity in $MESHP2P_HOME (created if "
                                "missing) and, when a node runs there, its peer addresses, so scripts can build "
                                "/ip4/HOST/tcp/PORT/p2p/ID bootstrap addresses.")
    ident.add_argument("--json", action="store_true", help="print {peer_id, addrs, key_file} as JSON")
    commands.add_parser("rotate-key", help="replace this node's identity key",
                        description="Make a new Ed25519 identity (new PeerID); the old key is kept as "
                        "identity.key.old. Restart the node afterwards.")

    invite = commands.add_parser("invite", help="print an invite token for this node's private mesh",
                                 description="Print an invite token for the private mesh of the node running with "
                                 "this MESHP2P_HOME; others join with `meshp2p up --join TOKEN`.")
    invite.add_argument("--ttl-hours", type=float, default=None, metavar="H",
                        help="make the token expire after H hours (default: never)")

    discover = commands.add_parser("discover", help="browse meshes in the DHT",
                                   description="Find meshes through the DHT (no directory server): by region, "
                                   "by model, or all listed ones.")
    discover.add_argument("--region", metavar="CODE", help="only meshes with nodes in this region, e.g. AU")
    discover.add_argument("--model", metavar="ID", help="only meshes that serve or want this model")
    discover.add_argument("--json", action="store_true", help="print the listings as JSON")
    discover.add_argument("--auto", action="store_true",
                          help="also say which mesh `up --auto` would join (scoring in mesh/discovery.py)")
    discover.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                          help="bootstrap peer to ask (repeatable; also MESHP2P_BOOTSTRAP)")

    boot = commands.add_parser("bootstrap", help="run a bootstrap node (DHT server, no models)",
                               description="Run a DHT server with no models: the first contact of joining "
                               "nodes. See bootstrap/README.md for running one as a service.")
    boot.add_argument("--bind-port", type=int, default=0, metavar="PORT",
                      help="TCP port to listen on (default: any free port; pin it for a public bootstrap)")
    boot.add_argument("--listen-all", action="store_true",
                      help="listen on every interface (0.0.0.0) instead of 127.0.0.1 only")
    boot.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                      help="other bootstrap peers to connect to (repeatable)")

    drop = commands.add_parser("drop", help="stop serving a model on the running node",
                               description="Stop serving MODEL on the node running with this MESHP2P_HOME (or "
                               "--console PORT); its llama-server is stopped and the mesh is told at once.")
    drop.add_argument("model", metavar="MODEL", help="id of the model to stop serving (see `meshp2p status`)")
    drop.add_argument("--console", type=int, default=None, metavar="PORT",
                      help="console port of the node (default: read from $MESHP2P_HOME/node.json)")

    status = commands.add_parser("status", help="show the running node's status",
                                 description="Ask the node running with this MESHP2P_HOME (or --console PORT) "
                                 "for its status.")
    status.add_argument("--console", type=int, default=None, metavar="PORT",
                        help="console port of the node (default: read from $MESHP2P_HOME/node.json)")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    add_blackboard_parser(commands)

    download = commands.add_parser(
        "download", help="list the model catalog, or download a model by name",
        description="With no NAME: the catalog as a table, marking what is on disk and what fits this machine "
        "(VRAM, or RAM without a GPU, at least 1.1 x the model's size). With NAME (a catalog name or alias, "
        "hf://OWNER/REPO/FILE.gguf or OWNER/REPO:QUANT): download it into the Hugging Face cache ($HF_HOME/hub), "
        "with its size and sha256 checked; an interrupted download resumes. Honours HF_ENDPOINT, HF_TOKEN, "
        "HF_HUB_OFFLINE and HF_HOME.")
    download.add_argument("name", nargs="?", metavar="NAME",
                          help="the model to download (default: list the catalog)")
    download.add_argument("--draft", action="store_true",
                          help="also download the small draft model the catalog pairs with NAME (speculative "
                          "decoding)")
    download.add_argument("--json", action="store_true",
                          help="print the catalog (with on_disk and fits), or the downloaded files, as JSON")

    models = commands.add_parser(
        "models", help="list the models on disk here and in the mesh",
        description="List the models on disk here (catalog models and other GGUFs in the Hugging Face cache, the "
        "embedded model, $MESHP2P_HOME/models) and, when a node runs with this MESHP2P_HOME (or --console PORT), "
        "the models it serves and those its mesh serves or offers.")
    models.add_argument("--json", action="store_true", help="print {on_disk: [...], node: {...} or null} as JSON")
    models.add_argument("--console", type=int, default=None, metavar="PORT",
                        help="console port of the node to ask (default: read from $MESHP2P_HOME/node.json)")
    add_keys_parser(commands)
    return parser


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys", help="create, list and revoke the API's keys",
        description="API keys for this MESHP2P_HOME's node. Off by default; on as soon as a key exists "
        "($MESHP2P_HOME/keys.json, mode 0600, holds only their SHA-256): then every request to the API (but GET "
        "/health) needs `Authorization: Bearer KEY` or `x-api-key: KEY`, and the console's write endpoints need a "
        "key or the node's console token (this user's own commands send it). A running node sees changes on its "
        "next request. Revoking every key keeps keys on (the API then refuses everyone); deleting keys.json turns "
        "them off. Requests that members send through the mesh tunnel need no key: their node checked it.")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="make a key and print it (once)",
                                description="Make a key, print it once on stdout (store it now) and keep only "
                                "its SHA-256.")
    create.add_argument("--name", metavar="NAME", help="a name to tell the key by (default: key-XXXX)")
    create.add_argument("--rate", type=int, default=None, metavar="RPM",
                        help="requests per minute this key may make; more get 429 with Retry-After (default: no "
                        "limit of its own)")
    create.add_argument("--concurrent", type=int, default=None, metavar="N",
                        help="requests (streams included) this key may have in flight at once; more get 429 "
                        "(default: no limit of its own)")
    create.add_argument("--json", action="store_true", help="print the key and its record as one JSON object")
    listing = actions.add_parser("list", help="list the keys with their requests, tokens and last use",
                                 description="List the keys (revoked ones too) with the requests, tokens in and "
                                 "out and last use the running node saved (every 2 s).")
    listing.add_argument("--json", action="store_true", help="print {keys_on, keys: [...]} as JSON")
    revoke = actions.add_parser("revoke", help="revoke a key",
                                description="Revoke a key: a running node refuses it (401) from its next request.")
    revoke.add_argument("key", metavar="KEY", help="the key's name, its id, or a unique prefix of its id")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    configure_logging(console, log_format=args.log_format, verbose=args.verbose, node_log=args.command == "up")
    # Per-request lines from the HTTP client and server drown what an operator needs; -v brings them back.
    for noisy in ("httpx", "httpcore", "meshp2p.http"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    module_name, function_name = COMMANDS[args.command].split(":")
    try:
        # Imported on use: `meshp2p id` should not pay for libp2p and quart.
        command = getattr(importlib.import_module(module_name), function_name)
        code: int = command(args, console)
        return code
    except MeshP2PError as exc:
        console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        if exc.hint:
            console.print(f"[yellow]→[/] {exc.hint}", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
