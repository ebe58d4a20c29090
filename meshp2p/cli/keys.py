"""`meshp2p keys create | list | revoke`: the API keys of the node that runs with this MESHP2P_HOME.

The commands edit `$MESHP2P_HOME/keys.json` directly (no node needs to run); a running node sees the change on
its next request. `create` prints the key once, on stdout alone so `KEY=$(meshp2p keys create)` works, and the
advice on stderr; only its SHA-256 is stored. `list` joins the keys with the usage the node saves.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from meshp2p.access.files import read_keyring, read_usage, update_keyring
from meshp2p.access.keys import ApiKey, Keyring
from meshp2p.access.usage import KeyUsage
from meshp2p.errors import ConfigError
from meshp2p.home import key_usage_file, keys_file


def run_keys(args: argparse.Namespace, console: Console) -> int:
    action = {"create": _create, "list": _list, "revoke": _revoke}[args.keys_command]
    return action(args, console)


def _create(args: argparse.Namespace, console: Console) -> int:
    path = keys_file()
    was_on = path.exists()

    def change(ring: Keyring) -> tuple[Keyring, tuple[ApiKey, str]]:
        ring, record, text = ring.create(name=args.name, now=time.time(), rate_rpm=args.rate,
                                         concurrent=args.concurrent)
        return ring, (record, text)

    record, text = update_keyring(path, change)
    if args.json:
        print(json.dumps({**_key_json(record, KeyUsage()), "key": text}))
        return 0
    print(text)
    console.print(f"created API key [bold]{record.name}[/] (id {record.id}): shown once, store it now; "
                  f"{path} keeps only its SHA-256.", highlight=False)
    console.print("use it as `Authorization: Bearer KEY` (OpenAI clients: api_key=KEY) or `x-api-key: KEY` "
                  "(Anthropic clients)", highlight=False)
    if not was_on:
        console.print("[yellow]keys are now on[/]: every request to the API needs a key (GET /health excepted); "
                      f"delete {path} to turn them off", highlight=False)
    return 0


def _list(args: argparse.Namespace, console: Console) -> int:
    ring = read_keyring(keys_file())
    usage = read_usage(key_usage_file())
    if args.json:
        keys = [] if ring is None else [_key_json(k, usage.of(k.id)) for k in ring.keys]
        print(json.dumps({"keys_on": ring is not None, "keys": keys}, indent=2))
        return 0
    if ring is None:
        console.print("keys are off (no keys file): anyone who can reach the API may use it; "
                      "`meshp2p keys create` turns them on", highlight=False)
        return 0
    table = Table(title=f"API keys ({keys_file()})")
    for column in ("id", "name", "state", "created", "limits", "requests", "tokens in", "tokens out", "last use"):
        table.add_column(column, justify="right" if column in ("requests", "tokens in", "tokens out") else "left")
    for key in ring.keys:
        used = usage.of(key.id)
        table.add_row(key.id, key.name, "revoked" if key.revoked else "active", _when(key.created), _limits(key),
                      str(used.requests), str(used.tokens_in), str(used.tokens_out),
                      "never" if used.last_used is None else _when(used.last_used))
    Console().print(table)
    if not any(not k.revoked for k in ring.keys):
        console.print("no active key: the API refuses every request (delete the keys file to turn keys off)",
                      highlight=False)
    return 0


def _revoke(args: argparse.Namespace, console: Console) -> int:
    def change(ring: Keyring) -> tuple[Keyring, tuple[ApiKey, bool]]:
        target = ring.select(args.key)
        ring, revoked = ring.revoke(args.key, now=time.time())
        return ring, (revoked, target.revoked)

    path = keys_file()
    if read_keyring(path) is None:
        raise ConfigError("there are no API keys to revoke (keys are off)", hint="`meshp2p keys create` makes one")
    key, already = update_keyring(path, change)
    if already:
        console.print(f"API key [bold]{key.name}[/] (id {key.id}) was revoked already", highlight=False)
        return 0
    console.print(f"revoked API key [bold]{key.name}[/] (id {key.id}): a running node refuses it from its next "
                  "request on", highlight=False)
    ring = read_keyring(path)
    if ring is not None and all(k.revoked for k in ring.keys):
        console.print(f"no active key is left: keys stay on and the API refuses every request; delete {path} to "
                      "turn keys off", highlight=False)
    return 0


def _key_json(key: ApiKey, used: KeyUsage) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "created": key.created, "rate_rpm": key.rate_rpm,
            "concurrent": key.concurrent, "revoked": key.revoked, "revoked_at": key.revoked_at,
            "requests": used.requests, "tokens_in": used.tokens_in, "tokens_out": used.tokens_out,
            "last_used": used.last_used}


def _limits(key: ApiKey) -> str:
    parts = ([f"{key.rate_rpm}/min"] if key.rate_rpm else []) + (
        [f"{key.concurrent} at once"] if key.concurrent else [])
    return ", ".join(parts) or "-"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
