"""The access service: the console token lives exactly as long as the node, usage is saved while it changes and
once more at the end. Trio's autojump clock, real files in a temporary MESHP2P_HOME."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers.processes import wait_for

from meshp2p.access.files import read_usage
from meshp2p.access.gate import AddressLimits
from meshp2p.app.access import AccessService


async def test_token_and_usage_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: Any) -> None:
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path))
    token, usage = tmp_path / "console.token", tmp_path / "key-usage.json"
    service = AccessService(AddressLimits())
    assert not service.keys_on()
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        assert service.console_token and token.read_text().strip() == service.console_token
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        service.usage.request("k1", 10.0)
        service.usage.tokens("k1", 3, 4)
        # The save runs in a worker thread, which the autojump clock does not wait for: wait in real time.
        await trio.to_thread.run_sync(wait_for, usage.exists, 30, "the usage file")
        assert read_usage(usage).of("k1").tokens_out == 4 and stat.S_IMODE(usage.stat().st_mode) == 0o600
        service.usage.request("k1", 11.0)  # not saved by the loop yet: the end saves it
        nursery.cancel_scope.cancel()
    assert read_usage(usage).of("k1").requests == 2
    assert not token.exists(), "the token is worth nothing once the node is gone"
