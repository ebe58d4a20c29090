"""One file's bytes over plain HTTP(S) into a partial file, resumed with `Range`, hashed while they arrive.

Why not huggingface_hub's `http_get`: it reads through httpx, whose transport hands the body over 64 KiB at a time
through Python-level HTTP parsing; on loopback it moved about a third of what `curl` moves from the same server
(tools/bench/hub_download.py), and the SHA-256 check then read the whole file a second time. Here the standard
library's `http.client` reads the body straight into a few reused 4 MiB buffers (`readinto1`, which waits for the
socket with the interpreter lock released), each socket read is written to the file at once (so the partial file
holds every byte received, whatever stops the download) and each full buffer is handed to a hashing thread (hashlib
releases the lock too), so receiving, writing and hashing overlap on separate cores and the file is never read
back. What huggingface_hub's download did and this keeps: its headers (`build_hf_headers`: user agent,
`HF_TOKEN`), its timeout (`HF_HUB_DOWNLOAD_TIMEOUT`), the proxies of the environment (`HTTPS_PROXY`, `NO_PROXY`),
redirects followed with the token dropped off the hub's origin, and a cut connection resumed from the byte it
stopped at (a few tries in a row without progress, then DownloadFailed; a later run resumes the partial file).
"""

from __future__ import annotations

import hashlib
import http.client
import queue
import threading
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import urljoin, urlsplit

from meshp2p.errors import AccessDenied, DownloadFailed

BUFFER_BYTES = 4 * 2**20
#: Buffers in flight between the receiving loop and the hasher: enough to keep both busy, little memory.
BUFFERS = 4
#: Tries in a row that bring no new byte before giving up (a connection cut each time, a server that stalls).
TRIES_WITHOUT_PROGRESS = 5
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def fetch_to(url: str, partial: Path, *, size: int, headers: Mapping[str, str], timeout_s: float,
             on_bytes: Callable[[int], None], drop_auth_off: str) -> str:
    """Append the bytes of `url` after those already in `partial` until it holds `size` bytes; return the
    SHA-256 (hex) of the whole file. `drop_auth_off` is the origin (`scheme://host:port`) the Authorization
    header may go to; `on_bytes(n)` is told of every `n` new bytes (progress)."""
    hasher = _Hasher(partial)
    try:
        with partial.open("ab") as out:
            stalled = 0
            last: OSError | http.client.HTTPException | None = None
            while (have := out.tell()) < size:
                try:
                    _receive(url, out, have=have, size=size, headers=headers, timeout_s=timeout_s,
                             on_bytes=on_bytes, drop_auth_off=drop_auth_off, hasher=hasher)
                except (OSError, http.client.HTTPException) as exc:
                    last = exc
                else:
                    last = None
                stalled = 0 if out.tell() > have else stalled + 1
                if stalled >= TRIES_WITHOUT_PROGRESS:
                    raise DownloadFailed(f"{urlsplit(url).netloc} sent no more bytes after {have} of {size} "
                                         f"({TRIES_WITHOUT_PROGRESS} tries): {last or 'the connection closed'}",
                                         hint="run the command again: the download resumes where it stopped")
        return hasher.hexdigest()
    finally:
        hasher.close()


def _receive(url: str, out: _Appendable, *, have: int, size: int, headers: Mapping[str, str], timeout_s: float,
             on_bytes: Callable[[int], None], drop_auth_off: str, hasher: _Hasher) -> None:
    """One GET from byte `have` (following redirects), its body appended to `out` until it ends or breaks."""
    wanted = {**headers, "Accept-Encoding": "identity"}
    if have:
        wanted["Range"] = f"bytes={have}-"
    for _ in range(MAX_REDIRECTS + 1):
        if _origin(url) != drop_auth_off:
            wanted = {k: v for k, v in wanted.items() if k.lower() != "authorization"}
        connection, target = _connect(url, timeout_s)
        try:
            connection.request("GET", target, headers=wanted)
            response = connection.getresponse()
            if response.status in _REDIRECTS and (location := response.getheader("Location")):
                url = urljoin(url, location)
                continue
            _check_status(response, url, have)
            _append_body(response, out, size=size, on_bytes=on_bytes, hasher=hasher)
            return
        finally:
            connection.close()
    raise DownloadFailed(f"more than {MAX_REDIRECTS} redirects from {url}")


def _append_body(response: http.client.HTTPResponse, out: _Appendable, *, size: int,
                 on_bytes: Callable[[int], None], hasher: _Hasher) -> None:
    """Append the body to `out` as it arrives, until it ends, breaks or `out` holds `size` bytes.

    Every socket read goes to the file at once, so the partial file holds every byte received whatever stops the
    download (a cut, Ctrl-C): the next try resumes from exactly there. The hasher gets whole buffers."""
    remaining = None if response.chunked else response.length
    while True:
        buffer = hasher.free_buffer()
        view = memoryview(buffer)
        filled = n = 0
        try:
            while filled < len(buffer) and out.tell() < size:
                n = _read_some(response, view[filled:], remaining)
                if not n:
                    break
                if remaining is not None:
                    remaining -= n
                out.write(view[filled:filled + n])
                filled += n
                on_bytes(n)
        finally:
            if filled:
                hasher.feed(buffer, filled)
            else:
                hasher.give_back(buffer)
        if not n or out.tell() >= size:
            return


def _read_some(response: http.client.HTTPResponse, into: memoryview, remaining: int | None) -> int:
    """At most one socket read's worth of the body into `into` (0 at its end); a body shorter than its
    Content-Length raises IncompleteRead, as `response.read` would."""
    if remaining is None or response.fp is None:
        return response.readinto(into)  # chunked or unsized: http.client decodes it
    if not remaining:
        return 0
    n = response.fp.readinto1(into[:remaining])
    if not n:
        raise http.client.IncompleteRead(b"", remaining)
    return n


def _check_status(response: http.client.HTTPResponse, url: str, have: int) -> None:
    expected = 206 if have else 200
    if response.status == expected:
        return
    where = urlsplit(url).netloc
    if response.status in (401, 403):
        raise AccessDenied(f"{where} refused the download ({response.status})",
                           hint="set HF_TOKEN to a token that can read the repo, and accept its licence on its page")
    if have and response.status == 200:
        raise DownloadFailed(f"{where} does not resume downloads (it answered 200 to a Range request)",
                             hint="delete the .incomplete file in the Hugging Face cache and run the command again")
    raise DownloadFailed(f"{where} answered {response.status} {response.reason} for the file's bytes",
                         hint="run the command again later; the download resumes where it stopped")


def _connect(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for `url` (through the environment's proxy when it names one) and the request target."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    proxy = urllib.request.getproxies().get(parts.scheme)
    connection: http.client.HTTPConnection
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(via.hostname or "", via.port or 8080, timeout=timeout_s)
            connection.set_tunnel(host, port)
        else:
            connection = http.client.HTTPConnection(via.hostname or "", via.port or 8080, timeout=timeout_s)
            target = url
        return connection, target
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(host, port, timeout=timeout_s), target


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class _Appendable(Protocol):
    """What `_receive` writes to (a binary file opened for appending)."""

    def write(self, data: memoryview, /) -> int: ...

    def tell(self) -> int: ...


class _Hasher:
    """SHA-256 of the partial file's existing bytes, then of every buffer fed, in a thread of its own.

    The receiving loop takes a free buffer, fills it, writes it and feeds it; the hasher gives it back once hashed,
    so at most BUFFERS are in flight and the loop waits (for a free one) only when hashing falls behind.
    """

    def __init__(self, partial: Path) -> None:
        self._digest = hashlib.sha256()
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(BUFFERS):
            self._free.put(bytearray(BUFFER_BYTES))
        self._work: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._failed: BaseException | None = None
        self._closed = False
        # The bytes there now, not what the receiving loop appends meanwhile (those are fed).
        prefix = partial.stat().st_size if partial.is_file() else 0
        self._thread = threading.Thread(target=self._run, args=(partial, prefix), name="sha256", daemon=True)
        self._thread.start()

    def free_buffer(self) -> bytearray:
        if self._failed is not None:
            raise DownloadFailed(f"hashing the download failed: {self._failed}")
        return self._free.get()

    def give_back(self, buffer: bytearray) -> None:
        self._free.put(buffer)

    def feed(self, buffer: bytearray, n: int) -> None:
        self._work.put((buffer, n))

    def hexdigest(self) -> str:
        self.close()
        if self._failed is not None:
            raise DownloadFailed(f"hashing the download failed: {self._failed}")
        return self._digest.hexdigest()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._work.put(None)
            self._thread.join()

    def _run(self, partial: Path, prefix: int) -> None:
        try:
            if prefix:
                with partial.open("rb") as existing:
                    while prefix and (block := existing.read(min(BUFFER_BYTES, prefix))):
                        self._digest.update(block)
                        prefix -= len(block)
        except OSError as exc:
            self._failed = exc
        while (item := self._work.get()) is not None:
            buffer, n = item
            if self._failed is None:
                self._digest.update(memoryview(buffer)[:n])
            self._free.put(buffer)
