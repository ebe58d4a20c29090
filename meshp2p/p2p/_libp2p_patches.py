"""What meshp2p changes inside py-libp2p, in one place: its logging, how its Noise and yamux move bytes, and a
deadline and one quick retry on every dial. `Overlay` applies them when it builds a host; nothing else here runs on
import. (Over 400 lines on purpose: each patch carries, beside its code, what py-libp2p does, what we do instead and
what it measured, so that a py-libp2p upgrade can be checked patch by patch in one file.) The wire stays standard
Noise XX + yamux, byte for byte: these patches change how many syscalls, scheduler
steps and copies carry the bytes, never the bytes (tests/p2p/test_libp2p_patches.py talks to py-libp2p's own Noise
session and to a stock py-libp2p host in another process).

Logging. `import libp2p` takes over its logger (and sets levels on its children); `tame_logging` hands it back,
silenced unless `-v`: py-libp2p logs routine network weather (a peer without a protocol, a refused dial) at ERROR.

Where bulk bytes go in py-libp2p 0.8.1 (cProfile in thread CPU time and py-spy, both ends of tools/bench/
tunnel_bench.py and model_fetch.py, 2026-12). Not into crypto: the noise library calls `cryptography`'s
ChaCha20-Poly1305 (OpenSSL, ~1.8 GB/s per core here, holding the GIL): a sixth of the CPU stock, a third after
these patches. The rest was Python per Noise message and per yamux frame. Stock, a 64 KiB Noise message cost two
socket reads (its 2-byte length, then its body) and four copies on the way in (`read_exactly`'s bytearray and
bytes, SecureSession's BytesIO and its slices), and a socket write and two copies on the way out; every yamux
frame was copied into its stream's bytearray and out again, joined with whatever else was buffered; and every lock
on a frame's way (about ten) was a trio checkpoint: 175 scheduler steps per MiB across both ends. What each patch
does instead, and what it saved (tools/bench/libp2p_bulk.py, both ends in one process, CPU seconds per GiB with
the patch left out / with every patch, 10 interleaved rounds, 2026-12-03, load 2):

- Noise (`tune_noise`, `_BatchedNoiseSession`): a write encrypts all its Noise messages into one buffer
  (`encrypt_into`) sent with one socket write; a read asks the socket for up to 1 MiB and decrypts every message it
  completes, and yamux reads frame headers and bodies straight from it (`_read_exactly`): 1.85 x.
- Frames (`_FrameBuffer`, `_read_up_to_a_frame`): a stream's received frames stay the bytes objects they came
  in, and a read returns one buffered frame (its own bytes, no copy) rather than a join of all of them: 1.05 x
  (more where the reader falls behind: py-spy put the read path at 25 % of tunnel_bench.py's receiver without it,
  9 % with it).
- Locks (`tune_locks`, `_EagerLock`; NOT applied, see `tune_locks`): a free lock on the frame path is taken
  without a scheduler step: 1.18 x (66 -> 19 steps per MiB).
All three: 2.33 x (9.99 -> 4.29 s/GiB). Between two processes (tunnel_bench.py --skip-mesh, with the tunnel's and
the model fetch's decoders now copying each byte once): receiver 5.9-6.0 -> 3.0-3.2 s/GiB, sender 4.2-4.3 ->
2.6-2.8, 0.08 -> 0.15 of raw TCP's MB/s; README.md has the figures. What is left is Python per frame (trio, the
yamux state machine) and the AEAD itself.

Tried, no measurable effect, not kept: waking a writer at zero window on the peer's WINDOW_UPDATE instead of
py-libp2p's 10 ms poll (no benchmark ever waited at zero window: the receiver grows its window and the socket
buffers push back first); frames of exactly 512 KiB payload and 1 MiB writes; a yamux write that hands header
and payload to Noise without joining them (one copy less); `recv_into` a reused buffer instead of `recv`;
turning the garbage collector off. Decrypting in a worker thread would not help: the AEAD holds the GIL.

Yamux frame size. Bulk throughput over Noise + yamux is bound by per-frame work in Python (trio locks and
wake-ups, a window update per read, one or two Noise messages), not by crypto. py-libp2p caps a DATA frame at
64 KiB *including* its 12-byte header, so a 64 KiB tunnel BODY frame became two yamux frames and three Noise
messages, and a 256 KiB one five frames. With a cap above the tunnel's 256 KiB BODY frame, every BODY frame is one
yamux frame (tools/bench/tunnel_bench.py: CPU per GiB about halved on both ends). This is a sender-side choice only:
yamux never sends more than the window the receiver granted, and receivers size frames by that window (py-libp2p
accepts up to 16 MiB, jvm-libp2p 1 MiB), so peers need not agree on it. The price is head-of-line blocking: one frame
holds the connection's write lock for up to `YAMUX_MAX_FRAME_BYTES` (1-2 ms at the tunnel's loopback rate) before
another stream's frame can go.

Window updates. py-libp2p sends a WINDOW_UPDATE after every read that returned data (PY_YAMUX_RELEASE_ON_READ,
default on): one more frame, Noise message and syscall per gossip message received, and ~4 per MiB of bulk data.
Off, it follows go-yamux: an update when half the window is consumed. Measured: an idle member of a 7-member mesh
3.4 % -> 2.7 % CPU (tools/bench/idle_node.py --others 6), bulk tunnel 4.1 -> 0.4 updates per MiB and 289 -> 446
MB/s (tools/bench/tunnel_bench.py --skip-mesh, shared 2-core machine). It is the receiver's choice alone: the
sender only waits for window, so peers need not agree.

The initial window (`DEFAULT_WINDOW_SIZE`, 256 KiB) is left alone. Raising it would change what each side assumes
the other granted before any window update, so it is only safe when every peer raises it too, and it lets every
stream buffer more unread data; py-libp2p already grows a busy stream's window to 16 MiB, and the benchmark
measured no gain from a larger start.

Dials. py-libp2p bounds no dial but its auto-connector's, and retries a failed one three times; `tune_dials`
bounds every dial of a swarm (`LOOKUP_DIAL_TIMEOUT_S`, or what `dial_timeout` sets for the dials under it) and
retries once, soon.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import trio
from cryptography.exceptions import InvalidTag
from libp2p.io import utils as io_utils
from libp2p.io.exceptions import IncompleteReadError
from libp2p.io.trio import TrioTCPStream
from libp2p.network.config import RetryConfig
from libp2p.network.exceptions import SwarmException
from libp2p.network.stream.net_stream import NetStream
from libp2p.peer.id import ID
from libp2p.security.noise import patterns as noise_patterns
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, SIZE_NOISE_MESSAGE_LEN
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.rw_lock import ReadWriteLock
from libp2p.stream_muxer.yamux import yamux as yamux_module
from noise.constants import MAX_NONCE
from noise.exceptions import NoiseInvalidMessage, NoiseMaxNonceError

#: Every other dial: one that a DHT lookup (ours or py-libp2p's) or a stream to a peer we are not connected to
#: makes. py-libp2p bounds none of them (ConnectionConfig.dial_timeout is read only by its auto-connector), so a
#: departed peer in a routing table could stall a lookup for the OS's TCP connect timeout (~2 min on Linux). 5 s
#: covers a TCP connect whose first two SYNs were lost (retransmits at 1 s and 3 s) plus the Noise and yamux
#: upgrade at internet round trips; loopback and LAN dials take milliseconds.
LOOKUP_DIAL_TIMEOUT_S = 5.0
#: The bound `tune_dials` applies; `dial_timeout` (say, Overlay.connect: an address we were handed on purpose)
#: changes it for the dials made under it.
_dial_timeout_s: ContextVar[float] = ContextVar("meshp2p_dial_timeout_s", default=LOOKUP_DIAL_TIMEOUT_S)
#: One retry of a failed dial, soon. py-libp2p's default (3 retries, 0.1/0.2/0.4 s backoff) spends ~0.7 s on
#: every departed peer a lookup is handed (a finished `discover` client stays in servers' routing tables).
DIAL_RETRIES = 1
DIAL_RETRY_DELAY_S = 0.05
#: Largest yamux DATA frame we send, header included: above the tunnel's 256 KiB BODY frame plus headers, so one
#: write of a BODY frame is one yamux frame (see the module docstring).
YAMUX_MAX_FRAME_BYTES = 512 * 1024
#: Poly1305's tag on every Noise message.
NOISE_TAG_BYTES = 16
#: The most one socket read of a Noise session asks for: up to 16 messages of 64 KiB per await and syscall.
NOISE_READ_BYTES = 1024 * 1024
#: "0": a WINDOW_UPDATE when half the receive window is consumed (go-yamux), not after every read (module docstring).
YAMUX_RELEASE_ON_READ_ENV = "PY_YAMUX_RELEASE_ON_READ"
#: The locks `tune_locks` makes eager (`_EagerLock`), by the class whose constructor builds them; the yamux
#: connection's own two (`streams_lock`, `_write_lock`) are swapped by `_yamux_init`.
_EAGER_LOCKS: tuple[tuple[type, tuple[str, ...]], ...] = (
    (NetStream, ("_state_lock",)),
    (yamux_module.YamuxStream, ("window_lock",)),
    (ReadWriteLock, ("_readers_lock", "_writer_lock")),
    (TrioTCPStream, ("read_lock", "write_lock")),
)

#: py-libp2p's own functions, as imported: each patch calls or replaces these, never a patched one.
_PY_YAMUX_INIT = yamux_module.Yamux.__init__
_PY_YAMUX_READ = yamux_module.YamuxStream.read
_PY_INITS: dict[type, Any] = {}


def tame_logging() -> None:
    """`import libp2p` takes over its logger (and sets levels on its children); give it back to ours."""
    root = logging.getLogger("libp2p")
    root.propagate = True
    root.handlers.clear()
    # What matters to an operator, meshp2p logs itself. `meshp2p -v` turns libp2p's own logging back on.
    root.setLevel(logging.CRITICAL if logging.getLogger().level > logging.DEBUG else logging.DEBUG)
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("libp2p."):
            logging.getLogger(name).setLevel(logging.NOTSET)


def tune_yamux() -> None:
    """Send larger yamux frames, window updates only per half window, and keep received frames as they came
    (module docstring, `_FrameBuffer`).

    py-libp2p reads the first two on every write/read: the frame cap from a module constant, the window-update
    rule from the environment (PY_YAMUX_RELEASE_ON_READ, its own tuning knob; an operator's setting is left
    alone).
    """
    yamux_module.MAX_MESSAGE_SIZE = max(yamux_module.MAX_MESSAGE_SIZE, YAMUX_MAX_FRAME_BYTES)
    os.environ.setdefault(YAMUX_RELEASE_ON_READ_ENV, "0")
    yamux_module.Yamux.__init__ = _yamux_init  # type: ignore[method-assign]
    yamux_module.YamuxStream.read = _read_up_to_a_frame  # type: ignore[method-assign]


async def _read_up_to_a_frame(self: Any, n: int | None = -1) -> bytes:
    """py-libp2p's `YamuxStream.read`, except that a read of at most `n` bytes returns at most what is left of
    the first buffered frame (`_FrameBuffer.first_frame_bytes`).

    py-libp2p joins everything buffered up to `n` into one new bytes object: a reader that fell behind by a few
    frames paid a copy of each of them (11 % of tunnel_bench.py's receiving process, 3 % with this). A frame
    returned on its own is the frame's own bytes, not a copy; the reader asks again for the rest, as a stream reader
    does anyway.
    """
    if n is not None and n > 0:
        buffer = self.conn.stream_buffers.get(self.stream_id)
        if isinstance(buffer, _FrameBuffer):
            event = self.conn.stream_events.get(self.stream_id)
            ended = (self.recv_closed or self.closed or self.reset_received
                     or self.conn.event_shutting_down.is_set())
            if not buffer and event is not None and not ended:
                # What py-libp2p's read waits for first (data, FIN, reset or the connection's end: each sets the
                # event); by the time this task runs, the frame reader has often buffered several frames.
                await event.wait()
            if buffer:
                n = min(n, buffer.first_frame_bytes())
    data: bytes = await _PY_YAMUX_READ(self, n)
    return data


def _yamux_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _PY_YAMUX_INIT(self, *args, **kwargs)
    self.stream_buffers = _StreamBuffers(self.stream_buffers)
    self.streams_lock = _EagerLock()
    self._write_lock = _EagerLock()


class _StreamBuffers(dict[int, Any]):
    """Yamux's received bytes per stream id, where each stream's buffer (py-libp2p stores an empty bytearray when
    a stream opens) is a `_FrameBuffer`."""

    def __setitem__(self, stream_id: int, buffer: Any) -> None:
        super().__setitem__(stream_id, _FrameBuffer() if isinstance(buffer, bytearray) and not buffer else buffer)


class _FrameBuffer:
    """A stream's received bytes, kept as the DATA frames' own bytes objects instead of one bytearray.

    py-libp2p copies every frame's payload into the stream's bytearray and out again with `bytes(buffer)`, and
    the bytearray, emptied by every read, is reallocated and grown anew for each frame. Here a frame's payload is
    stored as it came; a read of everything buffered returns it as is when it is one frame, or joins the frames
    (one copy). It offers what py-libp2p's yamux does with a buffer: `extend`, `len`, truth, `bytes(buf)`,
    `clear`, and `buf[:n]` / `del buf[:n]`. With `_read_up_to_a_frame`: 5 % less CPU per GiB (module docstring).
    """

    __slots__ = ("_at", "_frames", "_size")

    def __init__(self) -> None:
        self._frames: deque[bytes] = deque()
        #: How far the first frame has been read already.
        self._at = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def extend(self, data: bytes) -> None:
        if data:
            self._frames.append(data if type(data) is bytes else bytes(data))
            self._size += len(data)

    def first_frame_bytes(self) -> int:
        """What is left of the first frame (0 when empty)."""
        return len(self._frames[0]) - self._at if self._frames else 0

    def clear(self) -> None:
        self._frames.clear()
        self._at = self._size = 0

    def __bytes__(self) -> bytes:
        return self._peek(self._size)

    def __getitem__(self, key: slice) -> bytes:
        return self._peek(self._prefix(key))

    def __delitem__(self, key: slice) -> None:
        n = self._prefix(key)
        self._size -= n
        while n:
            first = self._frames[0]
            left = len(first) - self._at
            if left > n:
                self._at += n
                return
            self._frames.popleft()
            self._at = 0
            n -= left

    def _prefix(self, key: slice) -> int:
        """How many bytes `buf[:n]` means (the only slice py-libp2p takes of a buffer)."""
        if not isinstance(key, slice) or key.start not in (None, 0) or key.step not in (None, 1):
            raise TypeError("a yamux frame buffer is only read from its start")
        return self._size if key.stop is None else max(0, min(key.stop, self._size))

    def _peek(self, n: int) -> bytes:
        if not n:
            return b""
        first = self._frames[0]
        if len(first) - self._at >= n:
            return first if self._at == 0 and len(first) == n else first[self._at:self._at + n]
        pieces: list[memoryview] = []
        at = self._at
        for frame in self._frames:
            piece = memoryview(frame)[at:at + n]
            pieces.append(piece)
            n -= len(piece)
            at = 0
            if not n:
                break
        return b"".join(pieces)


def tune_noise() -> None:
    """Move Noise transport messages in batches (`_BatchedNoiseSession`): py-libp2p's Noise handshake builds
    every session it returns from the name `SecureSession` in its patterns module."""
    noise_patterns.SecureSession = _BatchedNoiseSession  # type: ignore[attr-defined]
    yamux_module.read_exactly = _read_exactly  # type: ignore[attr-defined]
    yamux_module.Yamux._read_data_body = _read_data_body  # type: ignore[method-assign]


class _BatchedNoiseSession(SecureSession):
    """A Noise transport session that encrypts a whole write into one buffer sent at once, and decrypts every
    message that one large socket read brought.

    py-libp2p (security/noise/io.py, secure_session.py) writes each Noise message (at most 65535 bytes on the
    wire) with its own socket write, after two copies of the plaintext (a slice, the length prefix joined on),
    and reads each message with two socket reads (the 2-byte length, then the body) through a retry loop that
    copies it twice more, and again into a BytesIO for what the caller did not take. The messages are the same
    here, byte for byte: the plaintext cut at `MAX_PLAINTEXT_LENGTH` (go-libp2p's cut too), each message's nonce
    the next of the session's own CipherState (the noise library's, so nonce rules and exhaustion stay its own),
    with the cipher called through the buffer interface (`encrypt_into` writes straight into the outgoing
    buffer). What changes is only how many syscalls, awaits and copies carry them: without this, bulk bytes cost
    1.85 x the CPU (tools/bench/libp2p_bulk.py, module docstring).
    """

    def __init__(self, *, conn: Any, **kwargs: Any) -> None:
        super().__init__(conn=conn, **kwargs)
        #: The TCP connection the handshake ran on (what py-libp2p's NoisePacketReadWriter reads and writes).
        self._raw = conn.read_writer.read_write_closer
        protocol = conn.noise_state.noise_protocol
        self._encrypt_state = protocol.cipher_state_encrypt
        self._decrypt_state = protocol.cipher_state_decrypt
        #: Decrypted bytes not yet read: whole plaintexts, the first one read from `_plain_at` on.
        self._plain: deque[bytes] = deque()
        self._plain_at = 0
        self._plain_bytes = 0
        #: The start of a message whose end has not arrived yet.
        self._partial = bytearray()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        size = len(view)
        # An empty write is one empty message (16 bytes of tag), as py-libp2p sends it.
        count = max(1, -(-size // MAX_PLAINTEXT_LENGTH))
        out = bytearray(size + count * (SIZE_NOISE_MESSAGE_LEN + NOISE_TAG_BYTES))
        out_view = memoryview(out)
        state = self._encrypt_state
        at = 0
        for start in range(0, max(size, 1), MAX_PLAINTEXT_LENGTH):
            piece = view[start:start + MAX_PLAINTEXT_LENGTH]
            length = len(piece) + NOISE_TAG_BYTES
            out[at:at + SIZE_NOISE_MESSAGE_LEN] = length.to_bytes(SIZE_NOISE_MESSAGE_LEN, "big")
            at += SIZE_NOISE_MESSAGE_LEN
            if state.n == MAX_NONCE:
                raise NoiseMaxNonceError("Nonce has depleted!")
            state.cipher.cipher.encrypt_into(state.cipher.format_nonce(state.n), piece, None,
                                             out_view[at:at + length])
            state.n += 1
            at += length
        await self._raw.write(out)

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        if n is None or n < 0:
            while not self._plain_bytes:
                await self._receive()
            return self._take(self._plain_bytes)
        while self._plain_bytes < n:
            await self._receive()
        return self._take(n)

    async def _receive(self) -> None:
        """One socket read; decrypt every message it completes. At EOF, raise what py-libp2p's reader raises."""
        data = await self._raw.read(NOISE_READ_BYTES)
        if not data:
            expected = (int.from_bytes(self._partial[:SIZE_NOISE_MESSAGE_LEN], "big") + SIZE_NOISE_MESSAGE_LEN
                        if len(self._partial) >= SIZE_NOISE_MESSAGE_LEN else SIZE_NOISE_MESSAGE_LEN)
            raise IncompleteReadError(
                f"Connection closed during read operation: expected {expected} bytes but received "
                f"{len(self._partial)} bytes", expected_bytes=expected, received_bytes=len(self._partial))
        view = memoryview(data)
        end = len(view)
        at = 0
        partial = self._partial
        if partial:
            if len(partial) < SIZE_NOISE_MESSAGE_LEN:
                at = min(SIZE_NOISE_MESSAGE_LEN - len(partial), end)
                partial += view[:at]
                if len(partial) < SIZE_NOISE_MESSAGE_LEN:
                    return
            missing = SIZE_NOISE_MESSAGE_LEN + int.from_bytes(partial[:SIZE_NOISE_MESSAGE_LEN], "big") - len(partial)
            took = min(missing, end - at)
            partial += view[at:at + took]
            at += took
            if took < missing:
                return
            self._decrypt(memoryview(partial)[SIZE_NOISE_MESSAGE_LEN:])
            self._partial = bytearray()
        while end - at >= SIZE_NOISE_MESSAGE_LEN:
            length = view[at] << 8 | view[at + 1]
            if end - at - SIZE_NOISE_MESSAGE_LEN < length:
                break
            at += SIZE_NOISE_MESSAGE_LEN
            self._decrypt(view[at:at + length])
            at += length
        if at < end:
            self._partial = bytearray(view[at:])

    def _decrypt(self, ciphertext: memoryview) -> None:
        try:
            plain: bytes = self._decrypt_state.decrypt_with_ad(None, ciphertext)
        except InvalidTag:
            raise NoiseInvalidMessage("Failed authentication of message") from None
        if plain:
            self._plain.append(plain)
            self._plain_bytes += len(plain)

    def _take(self, n: int) -> bytes:
        """`n` bytes of the decrypted ones (there are at least that many)."""
        self._plain_bytes -= n
        first = self._plain[0]
        if self._plain_at == 0 and len(first) == n:
            return self._plain.popleft()
        if len(first) - self._plain_at > n:
            self._plain_at += n
            return first[self._plain_at - n:self._plain_at]
        pieces: list[bytes | memoryview] = []
        while n:
            first = self._plain[0]
            left = len(first) - self._plain_at
            if left <= n:
                pieces.append(memoryview(first)[self._plain_at:] if self._plain_at else first)
                self._plain.popleft()
                self._plain_at = 0
                n -= left
            else:
                pieces.append(memoryview(first)[self._plain_at:self._plain_at + n])
                self._plain_at += n
                n = 0
        return pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else b"".join(pieces)


async def _read_exactly(reader: Any, n: int, retry_count: int = io_utils.DEFAULT_RETRY_READ_COUNT) -> bytes:
    """py-libp2p's `read_exactly`, without its retry loop and two copies where the reader is our Noise session
    (whose `read(n)` returns exactly `n` bytes, or raises at EOF what py-libp2p's does)."""
    if isinstance(reader, _BatchedNoiseSession):
        return await reader.read(n)
    return await io_utils.read_exactly(reader, n, retry_count)


async def _read_data_body(self: Any, length: int) -> bytes:
    """py-libp2p's `Yamux._read_data_body` (a DATA frame's body, bounded in time), through `_read_exactly`."""
    with trio.fail_after(yamux_module._yamux_data_read_timeout()):
        return await _read_exactly(self.secured_conn, length)


def tune_locks() -> None:
    """Give the locks every frame passes (`_EAGER_LOCKS`) the `_EagerLock` behaviour: py-libp2p builds them in
    its constructors, so each constructor is wrapped to swap them after it ran.

    NOT APPLIED by the overlay (2026-12-03): with it, a gossipsub PRUNE to a freshly connected peer went missing
    often (tests/app/test_private_mesh.py's outsider test failed 6 runs of 10; 0 of 10 without). Until that is
    understood it stays here only for tools/bench/libp2p_bulk.py to price (1.18 x on CPU per GiB)."""
    for cls, names in _EAGER_LOCKS:
        cls.__init__ = _with_eager_locks(_PY_INITS.setdefault(cls, cls.__init__), names)  # type: ignore[misc]


def _with_eager_locks(init: Any, names: tuple[str, ...]) -> Any:
    def eager_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        for name in names:
            setattr(self, name, _EagerLock())

    return eager_init


class _EagerLock:
    """A lock that a task takes without yielding when it is free, and otherwise as trio.Lock does (first come,
    first served); it may be released by another task, as the semaphore py-libp2p uses in ReadWriteLock.

    trio's Lock and Semaphore yield to the scheduler on every acquisition, free or not (a checkpoint). A yamux DATA
    frame passes ten of them between the application's write and the peer's read (NetStream's state lock, the
    stream's write and window locks, the connection's write lock, the TCP stream's write lock; on the other side
    the TCP read lock, the connection's streams lock twice, the stream's window and state locks): 66 scheduler
    steps per MiB moved (both ends, 256 KiB frames), 19 with these, and 18 % less CPU (module docstring). A free
    lock is still a cancellation point.
    Every critical section these locks guard is either short or ends in socket I/O, which yields, so no task
    holds the loop for longer than before by more than a few lock operations.
    """

    __slots__ = ("_held", "_lot")

    def __init__(self) -> None:
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    def locked(self) -> bool:
        return self._held

    def acquire_nowait(self) -> None:
        if self._held or self._lot:
            raise trio.WouldBlock
        self._held = True

    async def acquire(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._held or self._lot:
            await self._lot.park()  # `release` hands the lock over: it stays held, by us
        else:
            self._held = True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("release of a lock nobody holds")
        if self._lot:
            self._lot.unpark(count=1)
        else:
            self._held = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def tune_dials(swarm: Any) -> None:
    """One quick retry, and a deadline on every dial of `swarm`: the one place all of them pass (host.connect,
    new_stream)."""
    # new_host has no retry_config parameter; the swarm reads this attribute on every dial.
    swarm.retry_config = RetryConfig(max_retries=DIAL_RETRIES, initial_delay=DIAL_RETRY_DELAY_S)
    dial_peer = swarm.dial_peer

    async def bounded_dial_peer(peer_id: ID) -> Any:
        timeout_s = _dial_timeout_s.get()
        try:
            with trio.fail_after(timeout_s):
                return await dial_peer(peer_id)
        except trio.TooSlowError:
            # A SwarmException, as py-libp2p's own dial failures are, so its callers handle it as one.
            raise SwarmException(f"dial to {peer_id} timed out after {timeout_s} s") from None

    swarm.dial_peer = bounded_dial_peer


@contextmanager
def dial_timeout(timeout_s: float) -> Iterator[None]:
    """Bound the dials made under this block (in this task and those it starts) by `timeout_s`."""
    token = _dial_timeout_s.set(timeout_s)
    try:
        yield
    finally:
        _dial_timeout_s.reset(token)
