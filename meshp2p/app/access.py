"""The node's access service: the keys file it watches, the gate its API asks, the usage it saves, the console
token it writes for its user's own commands.

Usage is saved every SAVE_EVERY_S while it changed (and once more at the end), so `meshp2p keys list` shows
requests, tokens and last use a moment behind the node, and a node killed loses at most that much. The console
token is new on every start and removed at the end: it is worth nothing once this node is gone.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import trio

from meshp2p.access.files import KeysFile, read_usage, write_console_token, write_private
from meshp2p.access.gate import AddressLimits, Gate
from meshp2p.home import console_token_file, key_usage_file, keys_file

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) ships stubs that shadow trio's own types; they name it here.
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

SAVE_EVERY_S = 2.0


class AccessService:
    def __init__(self, address_limits: AddressLimits) -> None:
        self.keys = KeysFile(keys_file())
        self.usage = read_usage(key_usage_file())
        self.gate = Gate(address_limits)
        self.console_token: str | None = None

    def keys_on(self) -> bool:
        return self.keys.current() is not None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started means: the console token is written. Runs until cancelled."""
        token_path = console_token_file()
        self.console_token = await trio.to_thread.run_sync(write_console_token, token_path)
        try:
            task_status.started()
            while True:
                await trio.sleep(SAVE_EVERY_S)
                self.gate.sweep(time.monotonic())
                await self._save()
        finally:
            with trio.CancelScope(shield=True):
                await self._save()
                token_path.unlink(missing_ok=True)

    async def _save(self) -> None:
        if not self.usage.dirty:
            return
        text = json.dumps(self.usage.to_json()) + "\n"
        self.usage.saved()
        try:
            await trio.to_thread.run_sync(write_private, key_usage_file(), text)
        except OSError as exc:
            self.usage.dirty = True
            log.warning("could not save API key usage to %s: %s", key_usage_file(), exc)
