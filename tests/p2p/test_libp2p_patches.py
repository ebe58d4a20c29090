"""What we change inside py-libp2p's Noise and yamux (p2p/_libp2p_patches.py) changes how bytes are moved, never
the bytes on the wire: our Noise session talks to py-libp2p's own, message cuts and EOF included; the yamux frame
buffer behaves as the bytearray it replaces; and a patched overlay moves bulk bytes both ways with a stock
py-libp2p host in another process (which never imports meshp2p)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from helpers.network import network
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.security.noise import patterns as noise_patterns
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
from libp2p.security.secure_session import SecureSession
from noise.exceptions import NoiseInvalidMessage

from meshp2p.p2p._libp2p_patches import _BatchedNoiseSession, _FrameBuffer

#: Around every cut: one Noise message's plaintext, and one socket read of our session (256 KiB).
SIZES = [1, 11, MAX_PLAINTEXT_LENGTH - 1, MAX_PLAINTEXT_LENGTH, MAX_PLAINTEXT_LENGTH + 1, 2 * MAX_PLAINTEXT_LENGTH,
         256 * 1024 - 1, 256 * 1024 + 5, 3 * 2**20 + 7]


@asynccontextmanager
async def noise_pair() -> AsyncIterator[tuple[SecureSession, SecureSession]]:
    """Two py-libp2p Noise sessions (initiator, responder) over a socket pair, handshaken by py-libp2p's own
    code with its own session class (whatever an overlay built earlier in this process patched)."""
    ends = socket.socketpair()
    raws = [RawConnection(TrioTCPStream(trio.SocketStream(trio.socket.from_stdlib_socket(s))), initiator=i == 0)
            for i, s in enumerate(ends)]
    keys = [create_new_key_pair() for _ in raws]
    patterns = [noise_patterns.PatternXX(ID.from_pubkey(k.public_key), k.private_key,
                                         create_x25519_key_pair().private_key) for k in keys]
    sessions: list[Any] = [None, None]
    patched = noise_patterns.SecureSession
    noise_patterns.SecureSession = SecureSession  # type: ignore[attr-defined]
    try:
        async def outbound() -> None:
            sessions[0] = await patterns[0].handshake_outbound(raws[0], ID.from_pubkey(keys[1].public_key))

        async def inbound() -> None:
            sessions[1] = await patterns[1].handshake_inbound(raws[1])

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outbound)
                nursery.start_soon(inbound)
    finally:
        noise_patterns.SecureSession = patched  # type: ignore[attr-defined]
    try:
        yield sessions[0], sessions[1]
    finally:
        for raw in raws:
            await raw.close()


def batched(stock: SecureSession) -> _BatchedNoiseSession:
    """Ours, taking over a stock session's connection and cipher states (as if the handshake had built it)."""
    return _BatchedNoiseSession(local_peer=stock.local_peer, local_private_key=stock.local_private_key,
                                remote_peer=stock.remote_peer, remote_permanent_pubkey=stock.remote_permanent_pubkey,
                                is_initiator=stock.is_initiator, conn=stock.conn)


async def read_all(session: Any, size: int, *, piece: int | None) -> bytes:
    got = bytearray()
    while len(got) < size:
        got += await session.read(piece if piece is None else min(piece, size - len(got)))
    return bytes(got)


@pytest.mark.parametrize("ours_dials", [True, False], ids=["ours-initiator", "ours-responder"])
async def test_our_noise_session_and_py_libp2ps_understand_each_other(ours_dials: bool):
    async with noise_pair() as (initiator, responder):
        ours, theirs = (batched(initiator), responder) if ours_dials else (batched(responder), initiator)
        rng = random.Random(7)
        for size in SIZES:
            data = rng.randbytes(size)
            for sender, receiver in ((ours, theirs), (theirs, ours)):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender.write, data)
                    # Whole reads (what yamux asks) and short ones (a reader of whatever has arrived).
                    assert await read_all(receiver, size, piece=size) == data
                nursery_data = rng.randbytes(size)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sender.write, nursery_data)
                    assert await read_all(receiver, size, piece=None if size > 1000 else 1) == nursery_data


async def test_an_empty_write_is_one_empty_message_as_py_libp2p_sends_it():
    async with noise_pair() as (initiator, responder):
        ours = batched(initiator)
        await ours.write(b"")
        await ours.write(b"after")
        # py-libp2p's reader takes an empty message for a close; what follows is intact (the nonces agree).
        with pytest.raises(ConnectionClosedError):
            await responder.read()
        assert await responder.read(5) == b"after"
        # Ours passes over an empty message from py-libp2p's writer.
        await responder.write(b"")
        await responder.write(b"next")
        assert await ours.read(4) == b"next"


async def test_a_clean_close_reads_as_py_libp2ps_clean_eof_and_a_cut_message_does_not():
    async with noise_pair() as (initiator, responder):
        ours = batched(responder)
        await initiator.close()
        with pytest.raises(IncompleteReadError) as clean:
            await ours.read(12)
        assert clean.value.is_clean_close
    async with noise_pair() as (initiator, responder):
        ours = batched(responder)
        raw = initiator.conn.read_writer.read_write_closer
        await raw.write(b"\x01\x00" + b"x" * 100)  # a message announced as 256 bytes, then the connection ends
        await raw.close()
        with pytest.raises(IncompleteReadError) as cut:
            await ours.read(12)
        assert not cut.value.is_clean_close


async def test_a_tampered_message_fails_authentication():
    async with noise_pair() as (initiator, responder):
        ours = batched(responder)
        raw = initiator.conn.read_writer.read_write_closer
        forged = bytearray(initiator.conn.encrypt(b"hello"))
        forged[3] ^= 1
        await raw.write(len(forged).to_bytes(2, "big") + bytes(forged))
        with pytest.raises(NoiseInvalidMessage):
            await ours.read(5)


def test_the_frame_buffer_behaves_as_the_bytearray_it_replaces():
    rng = random.Random(3)
    ours, theirs = _FrameBuffer(), bytearray()
    for _ in range(3000):
        op = rng.random()
        if op < 0.45:
            data = rng.randbytes(rng.choice([0, 1, 5, 100, 4096]))
            ours.extend(data)
            theirs.extend(data)
        elif op < 0.75:
            n = rng.randint(0, len(theirs) + 3)
            assert ours[:n] == bytes(theirs[:n])
            del ours[:n]
            del theirs[:n]
        elif op < 0.9:
            assert bytes(ours) == bytes(theirs)
        else:
            ours.clear()
            theirs.clear()
        assert len(ours) == len(theirs) and bool(ours) == bool(theirs)
    with pytest.raises(TypeError):
        ours[1:2]


STOCK_HOST = textwrap.dedent("""
    # A stock py-libp2p host (Noise + yamux, nothing of meshp2p imported): answers /echo/1.0.0 with what it reads,
    # until EOF. Prints its address, runs until stdin closes.
    import sys, trio, multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.x25519 import create_new_key_pair as x25519
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID, Transport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX, Yamux
    from libp2p.network.stream.exceptions import StreamEOF

    async def echo(stream):
        try:
            while True:
                await stream.write(await stream.read(100_000))
        except StreamEOF:
            await stream.close()

    async def main():
        kp = create_new_key_pair()
        host = new_host(key_pair=kp, sec_opt={PROTOCOL_ID: Transport(kp, noise_privkey=x25519().private_key)},
                        muxer_opt={TProtocol(YAMUX): Yamux},
                        connection_config=ConnectionConfig(max_connections_per_peer=1))
        host.set_stream_handler(TProtocol("/echo/1.0.0"), echo)
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            print(f"{host.get_addrs()[0]}", flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)
    trio.run(main)
""")


async def test_a_patched_overlay_moves_bulk_bytes_both_ways_with_a_stock_py_libp2p_host():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = await trio.lowlevel.open_process([sys.executable, "-c", STOCK_HOST], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, cwd="/", env=env)
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(1024) or b"\n"
        addr = line.decode().strip()
        assert "/p2p/" in addr, "the stock host did not start"
        async with network() as net:
            node = await net.start_overlay(bootstrap=(addr,))
            peer = node.overlay.connected_peers()[0]
            data = random.Random(5).randbytes(5 * 2**20 + 3)
            with trio.fail_after(60):
                stream = await node.overlay.open_stream(peer, "/echo/1.0.0")

                async def send() -> None:
                    view = memoryview(data)
                    for start in range(0, len(data), 700_001):  # odd pieces: frames cut at odd places
                        await stream.write(bytes(view[start:start + 700_001]))
                    await stream.close()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send)
                    got = bytearray()
                    while len(got) < len(data):
                        got += await stream.read(1 << 20)
            assert bytes(got) == data
    finally:
        assert proc.stdin is not None
        await proc.stdin.aclose()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_read_returns_one_buffered_frame_at_a_time_then_eof_at_once():
    """Frames are handed out as they came (no join of everything buffered); after the peer's FIN the reader
    sees EOF at once, on this read and on the next."""
    pieces = [bytes([i]) * 100_000 for i in range(3)]
    async with network() as net:
        server = await net.start_overlay()
        client = await net.start_overlay(bootstrap=(server.overlay.addrs()[0],))
        sent = trio.Event()

        async def three_frames(stream: Any) -> None:
            for piece in pieces:
                await stream.write(piece)
            await stream.close()
            sent.set()

        server.overlay.host.set_stream_handler(TProtocol("/frames/1.0.0"), three_frames)
        with trio.fail_after(10):
            stream = await client.overlay.open_stream(server.overlay.peer_id, "/frames/1.0.0")
            await sent.wait()
            await trio.sleep(0.2)  # all three frames and the FIN are buffered on our side by now
            assert [await stream.read(1 << 20) for _ in pieces] == pieces
            for _ in range(2):
                with pytest.raises(StreamEOF):
                    await stream.read(1 << 20)
