"""The keep-alive pool to llama-server (backends/http11.py) against a real llama-server: a connection outlives
streamed answers (vendor/llama.cpp/patches/0002-server-stream-keep-alive.patch), a connection the server closed
while idle is left out before use, and a request leaves in one socket write."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio
from helpers.processes import llama_server

from meshp2p.backends.http11 import UpstreamPool
from meshp2p.inference.binaries import LlamaBinaries

STREAMED = json.dumps({"prompt": "Paris is", "max_tokens": 3, "stream": True, "temperature": 0}).encode()
PLAIN = json.dumps({"prompt": "Paris is", "max_tokens": 3, "temperature": 0}).encode()


class CountingPool(UpstreamPool):
    """Counts the TCP connections it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    async def _open(self, key: tuple[str, int]) -> trio.SocketStream:
        self.opened += 1
        return await super()._open(key)


async def answer(pool: UpstreamPool, port: int, body: bytes) -> bytes:
    response = await pool.request("POST", "127.0.0.1", port, "/v1/completions", body)
    try:
        assert response.status == 200
        return await response.read()
    finally:
        await response.aclose()


@pytest.fixture
def backend_port(llama_binaries: LlamaBinaries, tiny_models, tmp_path: Path):
    with llama_server(llama_binaries.server, tiny_models.dense, tmp_path / "llama.log") as base:
        yield urlsplit(base).port


def test_one_connection_serves_streamed_and_plain_answers_in_turn(backend_port: int) -> None:
    async def main() -> int:
        pool = CountingPool()
        try:
            for body in (STREAMED, PLAIN, STREAMED, STREAMED, PLAIN, STREAMED):
                text = await answer(pool, backend_port, body)
                assert text.endswith(b"data: [DONE]\n\n") if body is STREAMED else json.loads(text)["choices"]
            return pool.opened
        finally:
            await pool.aclose()

    assert trio.run(main) == 1


def test_a_connection_the_server_closed_while_idle_is_not_used(backend_port: int) -> None:
    async def main() -> tuple[int, int]:
        pool = CountingPool()
        try:
            await answer(pool, backend_port, STREAMED)
            (conn,) = pool._idle[("127.0.0.1", backend_port)]
            conn.stream.socket.shutdown(1)  # half-close: llama-server closes its end, as after its idle timeout
            with trio.fail_after(10):
                await trio.lowlevel.wait_readable(conn.stream.socket)  # llama-server's FIN
            assert conn.closed_while_idle()
            sent_on_dead = 0
            original = conn.send

            async def counting_send(*events: object) -> None:
                nonlocal sent_on_dead
                sent_on_dead += 1
                await original(*events)  # type: ignore[arg-type]

            conn.send = counting_send  # type: ignore[method-assign]
            await answer(pool, backend_port, STREAMED)
            return pool.opened, sent_on_dead
        finally:
            await pool.aclose()

    opened, sent_on_dead = trio.run(main)
    assert (opened, sent_on_dead) == (2, 0)


def test_a_request_leaves_in_one_write(backend_port: int) -> None:
    """Every write that wakes llama-server costs a wake-up there; head and body go out together."""
    writes: list[int] = []

    class WriteCountingPool(UpstreamPool):
        async def _open(self, key: tuple[str, int]) -> trio.SocketStream:
            stream = await super()._open(key)
            send_all = stream.send_all

            async def counted(data: bytes | bytearray | memoryview) -> None:
                writes.append(len(data))
                await send_all(data)

            stream.send_all = counted  # type: ignore[method-assign]
            return stream

    async def main() -> None:
        pool = WriteCountingPool()
        try:
            await answer(pool, backend_port, STREAMED)
        finally:
            await pool.aclose()

    trio.run(main)
    assert len(writes) == 1 and writes[0] > len(STREAMED)
