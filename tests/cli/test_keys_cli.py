"""`meshp2p keys create | list | revoke` as a user runs them: real processes, MESHP2P_HOME in a temporary folder."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers.processes import clean_environ

from meshp2p.access.files import write_usage
from meshp2p.access.usage import UsageBook

COMMAND_TIMEOUT_S = 60


def keys(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshp2p", "keys", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, env={**clean_environ(), "MESHP2P_HOME": str(home),
                                                          "COLUMNS": "200"})


def listed(home: Path) -> dict[str, Any]:
    done = keys(home, "list", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert listed(home) == {"keys_on": False, "keys": []}
    off = keys(home, "list")
    assert off.returncode == 0 and "keys are off" in off.stderr

    made = keys(home, "create", "--name", "alice", "--rate", "30")
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip()
    assert text.startswith("mp-sk-") and "\n" not in text, "stdout is the key alone"
    assert "keys are now on" in made.stderr and "x-api-key" in made.stderr
    path = home / "keys.json"
    assert text not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600

    bob = json.loads(keys(home, "create", "--name", "bob", "--concurrent", "2", "--json").stdout)
    assert bob["key"].startswith("mp-sk-") and bob["key"] not in path.read_text()
    duplicate = keys(home, "create", "--name", "alice")
    assert duplicate.returncode == 1 and "exists already" in duplicate.stderr

    state = listed(home)
    alice = next(k for k in state["keys"] if k["name"] == "alice")
    assert state["keys_on"] and (alice["rate_rpm"], alice["requests"], alice["last_used"]) == (30, 0, None)
    assert "key" not in alice and "sha256" not in alice

    # What a running node saves every 2 s shows in the list.
    book = UsageBook()
    book.request(alice["id"], 1_700_000_000.0)
    book.tokens(alice["id"], 12, 34)
    write_usage(home / "key-usage.json", book)
    alice = next(k for k in listed(home)["keys"] if k["name"] == "alice")
    assert (alice["requests"], alice["tokens_in"], alice["tokens_out"]) == (1, 12, 34)
    table = keys(home, "list")
    assert table.returncode == 0 and "alice" in table.stdout and "34" in table.stdout and "30/min" in table.stdout

    unknown = keys(home, "revoke", "nobody")
    assert unknown.returncode == 1 and "no key is named" in unknown.stderr and "keys list" in unknown.stderr
    assert keys(home, "revoke", bob["id"][:5]).returncode == 0, "a unique id prefix names a key"
    last = keys(home, "revoke", "alice")
    assert last.returncode == 0 and "keys stay on" in last.stderr
    state = listed(home)
    assert state["keys_on"] and all(k["revoked"] for k in state["keys"]), "revoking the last key keeps keys on"


def test_every_flag_has_help() -> None:
    for action in ("create", "list", "revoke"):
        shown = subprocess.run([sys.executable, "-m", "meshp2p", "keys", action, "--help"], capture_output=True,
                               text=True, timeout=COMMAND_TIMEOUT_S)
        assert shown.returncode == 0 and "usage:" in shown.stdout
    up = subprocess.run([sys.executable, "-m", "meshp2p", "up", "--help"], capture_output=True, text=True,
                        timeout=COMMAND_TIMEOUT_S).stdout
    assert "--rate-limit" in up and "--max-concurrent" in up
