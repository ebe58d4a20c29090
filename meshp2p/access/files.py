"""The access files in $MESHP2P_HOME: `keys.json` (written by `meshp2p keys`), `key-usage.json` (written by the
running node) and `console.token` (written by the node at start). All mode 0600, all replaced atomically (a
temporary file in the same folder, then `rename`), so a reader never sees half a file.

The node reads `keys.json` through `KeysFile`, which stats it on each call and re-reads it only when it changed:
a key created or revoked while the node runs takes effect on the next request, for the price of one `stat`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from meshp2p.access.keys import Keyring
from meshp2p.access.usage import UsageBook
from meshp2p.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")

FILE_MODE = 0o600


def write_private(path: Path, text: str) -> None:
    """`path` holds `text`, readable by this user only, from the first byte on (never 0644 for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_keyring(path: Path) -> Keyring | None:
    """The keys in `path`; None when it does not exist (keys off). A broken file is an error, never "keys off"."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the API keys file {path}: {exc}", hint="check its owner and mode") from exc
    try:
        return Keyring.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the API keys file {path} is damaged: {exc}",
                          hint="fix it, or delete it and create the keys again (deleting it turns keys off)") from exc


def write_keyring(path: Path, ring: Keyring) -> None:
    write_private(path, json.dumps(ring.to_json(), indent=2) + "\n")


def update_keyring(path: Path, change: Callable[[Keyring], tuple[Keyring, T]]) -> T:
    """Read, change and write the keys under an exclusive lock (`keys.json.lock`), so two `meshp2p keys`
    commands at once cannot lose each other's key. A missing file is an empty ring (the change turns keys on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ring, result = change(read_keyring(path) or Keyring())
        write_keyring(path, ring)
        return result
    finally:
        os.close(fd)  # closing releases the lock


def read_usage(path: Path) -> UsageBook:
    """The saved usage; an empty book when there is none or it is unreadable (usage is informative only)."""
    try:
        return UsageBook.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return UsageBook()


def write_usage(path: Path, book: UsageBook) -> None:
    write_private(path, json.dumps(book.to_json()) + "\n")


def write_console_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    write_private(path, token + "\n")
    return token


def read_console_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class KeysFile:
    """`keys.json` as the running node sees it: re-read when its inode, size or mtime changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._ring: Keyring | None = None

    def current(self) -> Keyring | None:
        """The keys now (None: keys off). A damaged file keeps the last good keys, or with none, no key at all
        (every request refused): a bad edit closes the node, never opens it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._seen, self._ring = None, None
            return None
        except OSError as exc:
            log.error("cannot stat the API keys file %s: %s; refusing keys until it is readable", self.path, exc)
            return self._ring or Keyring()
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen != self._seen:
            try:
                ring = read_keyring(self.path)
            except ConfigError as exc:
                log.error("%s; %s", exc.message, "keeping the keys read before" if self._ring else "no key is valid")
                self._seen = seen
                self._ring = self._ring or Keyring()
                return self._ring
            self._seen, self._ring = seen, ring if ring is not None else Keyring()
        return self._ring
