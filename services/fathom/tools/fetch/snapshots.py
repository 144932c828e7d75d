"""Page snapshots: bodies stored content-addressed on disk, provenance in an index shared by processes.

Layout under ``root``::

    blobs/ab/cd/abcd...ef   one file per distinct body (sha256), written atomically, never rewritten
    index.sqlite            one row per fetch (WAL mode), looked up by canonical requested/final URL

Many processes on one machine (fetch workers, the synthesizer, extraction processes) share one
root: a blob is written to a temporary file in its own folder and renamed into place, so a reader
sees the whole body or none, and two writers of the same body write the same bytes; the SQLite
index runs in WAL mode with a busy timeout, so concurrent writers queue instead of failing. Tasks
pass content hashes between processes: ``get_body(sha256)`` works anywhere the root is mounted.

With ``index_url`` (a SQLAlchemy URL, normally the job store's database) the index is the
``page_snapshots`` table of that database instead, for processes that share a database but not
a disk for the index (the blobs still need a shared root).

Methods are synchronous (local disk, short); async callers use ``asyncio.to_thread``. One SQLite
connection per thread, so the store is safe to share between threads and the event loop.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fathom.core.errors import ReplayMiss
from fathom.tools.fetch.base import FetchedPage, PageSnapshot
from fathom.tools.fetch.canonical import canonical_url

if TYPE_CHECKING:
    from fathom.store.db import Database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url_key TEXT NOT NULL,
    final_url_key TEXT NOT NULL,
    url TEXT NOT NULL,
    final_url TEXT NOT NULL,
    status INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    fetched_at TEXT NOT NULL,
    fetcher TEXT NOT NULL,
    extractor_version TEXT NOT NULL,
    size INTEGER NOT NULL,
    encoding TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_url ON snapshots (url_key, id);
CREATE INDEX IF NOT EXISTS snapshots_final_url ON snapshots (final_url_key, id);
"""
_COLUMNS = (
    "sha256, url, final_url, status, content_type, fetched_at, fetcher, extractor_version, size, "
    "encoding, truncated"
)
BUSY_TIMEOUT_S = 30.0
_HEX = frozenset("0123456789abcdef")


class SnapshotCorrupt(ValueError):
    """A stored blob's bytes do not hash to its name (a disk fault or a foreign write)."""


class SnapshotIndex(Protocol):
    """Where snapshot provenance rows live: one row per fetch, newest wins per URL."""

    def add(self, snap: PageSnapshot) -> None: ...
    def latest(self, url: str) -> PageSnapshot | None: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


class SnapshotStore:
    """Content-addressed page bodies under ``root`` and an index of fetches.

    ``index_url``: None keeps the index in ``root/index.sqlite``; a database URL (sqlite:/// or
    postgresql://) keeps it in that database's ``page_snapshots`` table."""

    def __init__(self, root: Path, index_url: str | None = None) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._blob_dirs: set[Path] = set()  # made already: skips a mkdir per page
        self.index_url = index_url
        self.index: SnapshotIndex = (
            SqliteSnapshotIndex(self.root / "index.sqlite") if index_url is None
            else DatabaseSnapshotIndex(index_url)
        )

    def put(self, page: FetchedPage, extractor_version: str) -> PageSnapshot:
        sha = hashlib.sha256(page.body).hexdigest()
        self._write_blob(sha, page.body)
        snap = PageSnapshot(
            sha256=sha,
            url=page.url,
            final_url=page.final_url,
            status=page.status,
            content_type=page.content_type,
            fetched_at=page.fetched_at,
            fetcher=page.fetcher,
            extractor_version=extractor_version,
            size=len(page.body),
            encoding=page.encoding,
            truncated=page.truncated,
        )
        # Blob first, row second: a row never points at a body that is not there yet.
        self.index.add(snap)
        return snap

    def latest(self, url: str) -> tuple[PageSnapshot, bytes] | None:
        """The newest snapshot whose requested or final URL is ``url`` (canonicalised)."""
        snap = self.index.latest(url)
        if snap is None:
            return None
        return snap, self.get_body(snap.sha256)

    def has_body(self, sha256: str) -> bool:
        return self._blob_path(sha256).is_file()

    def get_body(self, sha256: str) -> bytes:
        """The body stored under ``sha256``, checked against its name. ``FileNotFoundError`` when
        no process stored it under this root; ``SnapshotCorrupt`` when the bytes do not match."""
        body = self._blob_path(sha256).read_bytes()
        if hashlib.sha256(body).hexdigest() != sha256.lower():
            raise SnapshotCorrupt(f"snapshot blob {sha256} under {self._blobs} does not match its hash")
        return body

    def count(self) -> int:
        return self.index.count()

    def close(self) -> None:
        self.index.close()

    def _blob_path(self, sha256: str) -> Path:
        sha = sha256.lower() if isinstance(sha256, str) else ""
        if len(sha) != 64 or not _HEX.issuperset(sha):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self._blobs / sha[:2] / sha[2:4] / sha

    def _write_blob(self, sha256: str, body: bytes) -> None:
        path = self._blob_path(sha256)
        if path.exists():  # content-addressed: same name, same bytes
            return
        if path.parent not in self._blob_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._blob_dirs.add(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o644)  # other processes (other users too) read blobs
                fh.write(body)
            # Atomic, also across processes: readers see the whole blob or none; two processes
            # writing the same body replace the same bytes with the same bytes.
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class SqliteSnapshotIndex:
    """The index in a SQLite file next to the blobs (WAL, busy timeout, one connection per thread)."""

    def __init__(self, path: Path) -> None:
        self._db_path = path
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        _retry_locked(lambda: self._conn().executescript(_SCHEMA))

    def add(self, snap: PageSnapshot) -> None:
        row = (
            canonical_url(snap.url), canonical_url(snap.final_url), snap.url, snap.final_url, snap.status,
            snap.content_type, snap.fetched_at.isoformat(), snap.fetcher, snap.extractor_version,
            snap.size, snap.encoding, int(snap.truncated), snap.sha256,
        )
        conn = self._conn()
        # One statement in an immediate transaction: the write lock is taken (or waited for on the
        # busy timeout) up front, never upgraded from a read lock (which fails at once).
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "INSERT INTO snapshots (url_key, final_url_key, url, final_url, status, content_type, "
                "fetched_at, fetcher, extractor_version, size, encoding, truncated, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def latest(self, url: str) -> PageSnapshot | None:
        key = canonical_url(url)
        # Prefer an exact match on the requested URL; fall back to pages that ended at this URL.
        for column in ("url_key", "final_url_key"):
            row = (
                self._conn()
                .execute(
                    f"SELECT {_COLUMNS} FROM snapshots WHERE {column} = ? ORDER BY id DESC LIMIT 1", (key,)
                )
                .fetchone()
            )
            if row is not None:
                return _snapshot(row)
        return None

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM snapshots").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in add()).
            conn = sqlite3.connect(
                self._db_path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))  # type: ignore[union-attr]
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn


def _retry_locked(op: Any) -> None:
    """Run ``op``, retrying "database is locked". Switching a new file to WAL needs the file to
    itself, and SQLite answers at once (without its busy handler) while other processes are
    opening the same new file; so the first statements of a connection retry up to the timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            op()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


class DatabaseSnapshotIndex:
    """The index in the job store's ``page_snapshots`` table (SQLAlchemy Core; SQLite or PostgreSQL).

    The table is unique on (sha256, url): fetching the same body from the same URL again refreshes
    that row (its ``fetched_at`` and provenance) instead of adding one, and ``latest`` orders by
    ``fetched_at``. URLs are matched as stored and in canonical form (the table keeps no separate
    canonical key). Rows recorded by ``JobStore.record_snapshot`` are the same rows."""

    def __init__(self, url: str) -> None:
        from fathom.store.db import Database

        self.db: Database = Database(url)
        self._ensure_table()

    def _ensure_table(self) -> None:
        from sqlalchemy import inspect

        if not inspect(self.db.engine).has_table("page_snapshots"):
            self.db.migrate()  # a fresh database: the store's own schema, not a private copy

    def add(self, snap: PageSnapshot) -> None:
        from fathom.store.models import PageSnapshotRecord

        values = {
            "sha256": snap.sha256, "url": snap.url, "final_url": snap.final_url, "status": snap.status,
            "content_type": snap.content_type[:255], "fetched_at": _aware(snap.fetched_at),
            "fetcher": snap.fetcher[:32], "extractor_version": snap.extractor_version[:64],
            "size": snap.size, "encoding": None if snap.encoding is None else snap.encoding[:64],
            "truncated": bool(snap.truncated),
        }
        refresh = {k: v for k, v in values.items() if k not in ("sha256", "url")}
        if self.db.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt: Any = sqlite_insert(PageSnapshotRecord).values(**values)
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(PageSnapshotRecord).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["sha256", "url"], set_=refresh)
        with self.db.transaction() as s:
            s.execute(stmt)

    def latest(self, url: str) -> PageSnapshot | None:
        from sqlalchemy import select

        from fathom.store.models import PageSnapshotRecord as R
        from fathom.store.rows import snapshot_from

        keys = sorted({url.strip(), canonical_url(url)})
        for column in (R.url, R.final_url):
            query = select(R).where(column.in_(keys)).order_by(R.fetched_at.desc(), R.id.desc()).limit(1)
            with self.db.session() as s:
                row = s.scalars(query).first()
                if row is not None:
                    return snapshot_from(row)
        return None

    def count(self) -> int:
        from sqlalchemy import func, select

        from fathom.store.models import PageSnapshotRecord as R

        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(R)) or 0)

    def close(self) -> None:
        self.db.dispose()


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def stored_page(
    snap: PageSnapshot, body: bytes, url: str, fetcher: str, elapsed_s: float = 0.0
) -> FetchedPage:
    """The page a snapshot recorded, as a fetcher would have returned it."""
    return FetchedPage(url=url, final_url=snap.final_url, status=snap.status,
                       content_type=snap.content_type, body=body, fetcher=fetcher,
                       fetched_at=snap.fetched_at, encoding=snap.encoding, elapsed_s=elapsed_s,
                       truncated=snap.truncated)


def _snapshot(row: tuple[object, ...]) -> PageSnapshot:
    sha, url, final_url, status, ctype, fetched_at, fetcher, version, size, encoding, truncated = row
    return PageSnapshot(
        sha256=str(sha),
        url=str(url),
        final_url=str(final_url),
        status=int(str(status)),
        content_type=str(ctype),
        fetched_at=datetime.fromisoformat(str(fetched_at)),
        fetcher=str(fetcher),
        extractor_version=str(version),
        size=int(str(size)),
        encoding=None if encoding is None else str(encoding),
        truncated=bool(truncated),
    )


class ReplayFetcher:
    """Answers only from snapshots, so a run can be repeated exactly and offline."""

    name = "replay"

    def __init__(self, store: SnapshotStore) -> None:
        self._store = store

    async def fetch(self, url: str, *, deadline_s: float) -> FetchedPage:
        return self.fetch_stored(url)[0]

    def fetch_stored(self, url: str) -> tuple[FetchedPage, PageSnapshot]:
        started = time.monotonic()
        hit = self._store.latest(url)
        if hit is None:
            raise ReplayMiss(
                url, "replay mode: no stored snapshot for this URL (record it in live mode first)"
            )
        snap, body = hit
        return stored_page(snap, body, url, self.name, elapsed_s=time.monotonic() - started), snap

    async def aclose(self) -> None:
        return None
