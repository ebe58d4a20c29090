"""The node's blackboard on disk: accepted posts and rejection counts in one SQLite file in the data dir.

Posts survive restarts, and the store is where replays are caught across them: `add` returns False for an id
it already holds. Every method is small, synchronous and blocking; trio code calls them through
`trio.to_thread.run_sync(store.add, post, raw)`. A lock serialises the calls, since to_thread may run
successive calls on different worker threads and several may be in flight at once.

Durability: WAL with `synchronous=NORMAL`. A committed post survives a crash of the process; after a power
loss or OS crash the last few commits may roll back (the database stays consistent), and sync fetches those
posts again from peers. Readers (`meshp2p blackboard read`) may open the file while the node writes to it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from meshp2p.errors import MeshP2PError
from meshp2p.wire.blackboard import MAX_DIGEST_ITEMS, Post

STORE_FILE_NAME = "blackboard.sqlite"
#: `PRAGMA user_version`: bump with a migration when the schema changes.
SCHEMA_VERSION = 1
#: Waiting for another process's write lock (the CLI reading while the node writes) before failing.
BUSY_TIMEOUT_MS = 5000
#: Ids per `IN (...)` query, below SQLite's smallest default parameter limit (999).
_ID_CHUNK = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    id     BLOB PRIMARY KEY,
    author TEXT NOT NULL,
    pk     BLOB NOT NULL,
    name   TEXT,
    ts     INTEGER NOT NULL,
    text   TEXT NOT NULL,
    tags   TEXT NOT NULL,
    thread BLOB,
    raw    BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS posts_ts ON posts (ts DESC, id DESC);
CREATE INDEX IF NOT EXISTS posts_author_ts ON posts (author, ts DESC);
CREATE INDEX IF NOT EXISTS posts_thread ON posts (thread) WHERE thread IS NOT NULL;
CREATE TABLE IF NOT EXISTS rejections (
    reason TEXT PRIMARY KEY,
    count  INTEGER NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = "id, author, pk, name, ts, text, tags, thread"
_Row = tuple[bytes, str, bytes, str | None, int, str, str, bytes | None]


class BlackboardStoreError(MeshP2PError):
    """The blackboard database cannot be used as it is."""


class BlackboardStore:
    """Posts by id, newest-first reads, pruning by age and count, the sync digest, and rejection counters.

    Tags are kept as one text column, each tag followed by a space and the whole preceded by one
    (`" gpu llama "`): tags are `[a-z0-9_-]`, so `instr(tags, ' gpu ')` finds exactly the tag `gpu`.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise BlackboardStoreError(
                f"cannot open the blackboard database {self.path}: {exc}",
                hint="stop the node, move the file aside and start again; peers resend recent posts",
            ) from None
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BlackboardStoreError(
                f"{self.path} was written by a newer meshp2p (schema {version} > {SCHEMA_VERSION})",
                hint="upgrade meshp2p, or move the file aside to start an empty blackboard",
            )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.create_function("bb_fold", 1, _fold, deterministic=True)
        with self._db:
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BlackboardStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------ posts

    def add(self, post: Post, raw: bytes) -> bool:
        """Keep an accepted post and the exact bytes `decode_post` accepted it from (re-served by sync, so they
        must be the author's). False if its id is already here: a replay, also across restarts."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO posts (id, author, pk, name, ts, text, tags, thread, raw)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    post.id,
                    post.author,
                    post.public_key,
                    post.name,
                    post.ts,
                    post.text,
                    _tags_column(post.tags),
                    post.thread,
                    raw,
                ),
            )
            return cursor.rowcount == 1

    def get(self, post_id: bytes) -> Post | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM posts WHERE id = ?", (post_id,)).fetchone()
        return None if row is None else _post(row)

    def find_prefix(self, id_hex_prefix: str) -> list[Post]:
        """Posts whose hex id starts with a prefix the user typed (`reply 3fa9…`); several if it is ambiguous."""
        prefix = id_hex_prefix.strip().lower()
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            return []
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM posts WHERE substr(hex(id), 1, ?) = ? ORDER BY ts DESC LIMIT 10",
                (len(prefix), prefix.upper()),
            ).fetchall()
        return [_post(row) for row in rows]

    def raw(self, ids: Sequence[bytes]) -> list[bytes]:
        """The stored bytes of these posts (for a sync reply), newest first; ids not held are skipped."""
        found: list[tuple[int, bytes]] = []
        with self._lock:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                found += self._db.execute(f"SELECT ts, raw FROM posts WHERE id IN ({marks})", chunk).fetchall()
        return [raw for _, raw in sorted(found, key=lambda row: row[0], reverse=True)]

    def feed(
        self, limit: int, since_ms: int | None = None, author: str | None = None, tag: str | None = None
    ) -> list[Post]:
        """The newest `limit` posts, newest first, optionally only since a time, by one author, with one tag."""
        return self.candidates((), limit=limit, since_ms=since_ms, author=author, tag=tag)

    def candidates(
        self,
        terms: Iterable[str],
        *,
        limit: int,
        since_ms: int | None = None,
        author: str | None = None,
        tag: str | None = None,
    ) -> list[Post]:
        """Newest posts matching the filters whose text, name or tags contain any of `terms` (all posts if none).

        A prefilter for `search.search_store`: terms are compared with the Unicode case-folded text (Python's
        `str.casefold`, registered as an SQL function), so it finds every post the ranking would match.
        """
        where: list[str] = []
        args: list[object] = []
        if since_ms is not None:
            where.append("ts >= ?")
            args.append(since_ms)
        if author is not None:
            where.append("author = ?")
            args.append(author)
        if tag is not None:
            where.append("instr(tags, ?) > 0")
            args.append(f" {tag} ")
        likes = []
        for term in terms:
            likes.append("instr(bb_fold(text), ?) > 0 OR instr(bb_fold(name), ?) > 0 OR instr(tags, ?) > 0")
            args += [term, term, term]
        if likes:
            where.append("(" + " OR ".join(likes) + ")")
        sql = f"SELECT {_COLUMNS} FROM posts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        args.append(max(0, limit))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_post(row) for row in rows]

    def count(self) -> int:
        with self._lock:
            n: int = self._db.execute("SELECT count(*) FROM posts").fetchone()[0]
        return n

    def prune(self, now_ms: int, ttl_s: float, capacity: int) -> int:
        """Drop posts older than the TTL, then all but the newest `capacity`; returns how many went."""
        with self._lock, self._db:
            expired = self._db.execute("DELETE FROM posts WHERE ts < ?", (now_ms - ttl_s * 1000,)).rowcount
            surplus = self._db.execute(
                "DELETE FROM posts WHERE id NOT IN (SELECT id FROM posts ORDER BY ts DESC, id DESC LIMIT ?)",
                (max(0, capacity),),
            ).rowcount
        return expired + surplus

    # ------------------------------------------------------------ sync

    def horizon(self, now_ms: int, ttl_s: float, capacity: int) -> int:
        """The oldest `ts` this node would keep: the TTL's edge, or the oldest kept post's `ts` once full.

        A node asks peers for posts `since` its horizon only, so it is not sent posts it would prune at once.
        """
        edge = int(now_ms - ttl_s * 1000)
        with self._lock:
            row = self._db.execute(
                "SELECT ts FROM posts ORDER BY ts DESC, id DESC LIMIT 1 OFFSET ?", (max(0, capacity - 1),)
            ).fetchone()
        return edge if row is None else max(edge, int(row[0]))

    def digest(self, since_ms: int) -> list[tuple[bytes, int]]:
        """(id, ts) of the posts since `since_ms`, newest first, at most `MAX_DIGEST_ITEMS`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, ts FROM posts WHERE ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
                (since_ms, MAX_DIGEST_ITEMS),
            ).fetchall()
        return [(bytes(pid), int(ts)) for pid, ts in rows]

    def missing(self, ids: Sequence[bytes]) -> list[bytes]:
        """The ids in `ids` this store does not hold, in the order given (what to ask a peer for)."""
        have: set[bytes] = set()
        with self._lock:
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                have |= {bytes(r[0]) for r in self._db.execute(f"SELECT id FROM posts WHERE id IN ({marks})", chunk)}
        return [pid for pid in dict.fromkeys(ids) if pid not in have]

    # ------------------------------------------------------------ rejections

    def count_rejection(self, reason: str, n: int = 1) -> None:
        """Add `n` to a reason's counter (`BLACKBOARD_REASONS`); kept across restarts for `meshp2p status`."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO rejections (reason, count) VALUES (?, ?)"
                " ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count",
                (reason, n),
            )

    def rejections(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT reason, count FROM rejections ORDER BY reason").fetchall()
        return {str(reason): int(count) for reason, count in rows}


def _fold(value: str | None) -> str:
    return "" if value is None else value.casefold()


def _tags_column(tags: Iterable[str]) -> str:
    return " " + "".join(f"{tag} " for tag in tags)


def _post(row: _Row) -> Post:
    pid, author, pk, name, ts, text, tags, thread = row
    return Post(
        id=bytes(pid),
        author=author,
        public_key=bytes(pk),
        ts=int(ts),
        text=text,
        name=name,
        tags=tuple(tags.split()),
        thread=None if thread is None else bytes(thread),
    )


def _chunks(ids: Sequence[bytes]) -> list[list[bytes]]:
    items = list(ids)
    return [items[i : i + _ID_CHUNK] for i in range(0, len(items), _ID_CHUNK)]
