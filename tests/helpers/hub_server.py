"""A Hugging Face Hub on 127.0.0.1 that speaks the protocol as huggingface_hub 2.x uses it, for download tests.

Two servers, as on the real hub, so that huggingface_hub's "a redirect off the hub is the CDN" rule applies:
- the hub (`endpoint`): `GET /api/models/OWNER/NAME[/revision/REV]?blobs=true` (model info with `siblings`, sizes
  and `lfs.sha256`), and `HEAD|GET /OWNER/NAME/resolve/REV/FILE`. An LFS file answers `302` to the CDN with
  `X-Repo-Commit`, `X-Linked-Etag` (its sha256), `X-Linked-Size` and `ETag`; a small file answers `200` itself with
  a git-style `ETag`. Errors carry the hub's `X-Error-Code`: `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`
  (404), `GatedRepo` (401 without the right `Authorization: Bearer`);
- the CDN: `GET /blobs/SHA256` with `Range: bytes=N-` (206 + `Content-Range`).

Faults a test can ask for, each on the CDN: `cut_after(sha, n)` sends the headers of the whole answer, `n` bytes,
then closes the connection, once; `stall_after(sha, n)` sends `n` bytes and waits until `release()` (or its
timeout) before closing; `corrupt(sha)` serves other bytes under the same sha256. Every request is recorded
(`requests`) so a test can say how many were made and what they carried.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

#: Every socket read of the servers gives up after this; a stalled answer waits at most this for `release()`.
SOCKET_TIMEOUT_S = 30.0
GATED_TOKEN = "hf_test_gated_token"
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    #: Names served as plain git files (no LFS): huggingface_hub then has no sha256 for them.
    not_lfs: frozenset[str] = frozenset()
    commit: str = ""

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(repr(sorted(self.files)).encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    server: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class LocalHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _blobs: dict[str, bytes] = field(default_factory=dict)
    _cuts: dict[str, int] = field(default_factory=dict)
    _stalls: dict[str, int] = field(default_factory=dict)
    _corrupt: set[str] = field(default_factory=set)
    _digests: dict[int, tuple[bytes, str, str]] = field(default_factory=dict)
    _released: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    endpoint: str = ""
    cdn: str = ""

    def add_repo(self, repo_id: str, files: dict[str, bytes], **kwargs: Any) -> Repo:
        repo = Repo(dict(files), **kwargs)
        self.repos[repo_id] = repo
        for data in files.values():
            self._blobs[hashlib.sha256(data).hexdigest()] = data
        return repo

    def digests(self, data: bytes) -> tuple[str, str]:
        """(sha256, git sha1) of a served file, computed once: the real hub does not hash a file per request, and a
        benchmark (tools/bench/hub_download.py) must not charge that to the client."""
        with self._lock:
            known = self._digests.get(id(data))
        if known is None or known[0] is not data:
            known = (data, hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest())
            with self._lock:
                self._digests[id(data)] = known
        return known[1], known[2]

    def cut_after(self, data: bytes, n: int) -> None:
        self._cuts[hashlib.sha256(data).hexdigest()] = n

    def stall_after(self, data: bytes, n: int) -> None:
        self._stalls[hashlib.sha256(data).hexdigest()] = n

    def release(self) -> None:
        self._released.set()

    def corrupt(self, data: bytes) -> None:
        self._corrupt.add(hashlib.sha256(data).hexdigest())

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def made(self, server: str | None = None, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if (server is None or r.server == server)
                    and (method is None or r.method == method)]


def _handler(hub: LocalHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = SOCKET_TIMEOUT_S

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the test output is the record
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, *, body: bool) -> None:
            hub.record(Request(role, self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            path = unquote(urlsplit(self.path).path)
            if role == "cdn":
                self._blob(path, body)
            elif m := _INFO.match(path):
                self._info(m["repo"], m["rev"])
            elif m := _RESOLVE.match(path):
                self._resolve(m["repo"], m["rev"], m["file"], body)
            else:
                self._send(404, b"not found")

        def _info(self, repo_id: str, rev: str | None) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                return
            siblings = []
            for name, data in sorted(repo.files.items()):
                sha, git_sha = hub.digests(data)
                entry: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": git_sha}
                if name not in repo.not_lfs:
                    entry["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": 134}
                siblings.append(entry)
            info = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False, "gated": repo.gated,
                    "siblings": siblings}
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})

        def _resolve(self, repo_id: str, rev: str, name: str, body: bool) -> None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound",
                                                          "X-Error-Message": "Repository not found"})
                return
            if rev not in ("main", repo.commit):
                self._send(404, b"Invalid rev id", {"X-Error-Code": "RevisionNotFound"})
                return
            if repo.gated and self.headers.get("Authorization") != f"Bearer {GATED_TOKEN}":
                self._send(401, b"gated", {
                    "X-Error-Code": "GatedRepo",
                    "X-Error-Message": f"Access to model {repo_id} is restricted. You must have access to it and be "
                                       "authenticated to access it. Please log in."})
                return
            data = repo.files.get(name)
            if data is None:
                self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
                return
            if name in repo.not_lfs:
                git_sha = hashlib.sha1(data).hexdigest()
                self._send(200, data if body else b"", {"ETag": f'"{git_sha}"', "X-Repo-Commit": repo.commit},
                           length=len(data))
                return
            sha, git_sha = hub.digests(data)
            self._send(302, b"", {"Location": f"{hub.cdn}/blobs/{sha}?repo={repo_id}", "X-Repo-Commit": repo.commit,
                                  "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)),
                                  "ETag": f'"{git_sha}"'})

        def _blob(self, path: str, body: bool) -> None:
            sha = path.removeprefix("/blobs/")
            data = hub._blobs.get(sha)
            if data is None:
                self._send(404, b"no such blob")
                return
            if sha in hub._corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            start = 0
            status = 200
            headers = {"Accept-Ranges": "bytes", "ETag": f'"{sha}"'}
            if (wanted := self.headers.get("Range")) is not None:
                m = re.fullmatch(r"bytes=(\d+)-", wanted)
                if m is None or int(m[1]) >= len(data):
                    self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                    return
                start, status = int(m[1]), 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            payload = data[start:]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not body:
                return
            cut, stall = hub._cuts.pop(sha, None), hub._stalls.pop(sha, None)
            if cut is None and stall is None:
                self.wfile.write(payload)
                return
            self.wfile.write(payload[: cut if cut is not None else stall])
            if stall is not None:
                hub.stalled.set()
                hub._released.wait(SOCKET_TIMEOUT_S)
            self.close_connection = True  # the rest never comes: the client sees the body end early

        def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None, *,
                  length: int | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if self.command != "HEAD" and data:
                self.wfile.write(data)

    return Handler


@contextmanager
def local_hub() -> Iterator[LocalHub]:
    """The hub and its CDN on 127.0.0.1 ephemeral ports, stopped (and their threads joined) on exit."""
    hub = LocalHub()
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub, role)) for role in ("hub", "cdn")]
    threads = []
    try:
        for server in servers:
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            threads.append(thread)
        hub.endpoint, hub.cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        yield hub
    finally:
        hub.release()
        for server in servers:
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(SOCKET_TIMEOUT_S)
