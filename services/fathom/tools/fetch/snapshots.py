"""Page snapshots: bodies stored content-addressed on disk, provenance in a small SQLite index.

Layout under ``root``::

    blobs/ab/cd/abcd...ef   one file per distinct body (sha256), written atomically, never rewritten
    index.sqlite            one row per fetch (WAL mode), looked up by canonical requested/final URL

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
from datetime import datetime
from pathlib import Path

from fathom.core.errors import ReplayMiss
from fathom.tools.fetch.base import FetchedPage, PageSnapshot
from fathom.tools.fetch.canonical import canonical_url

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


class SnapshotStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._db_path = self.root / "index.sqlite"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._blob_dirs: set[Path] = set()  # made already: skips a mkdir per page
        self._conn().executescript(_SCHEMA)

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
        row = (
            canonical_url(page.url),
            canonical_url(page.final_url),
            snap.url,
            snap.final_url,
            snap.status,
            snap.content_type,
            snap.fetched_at.isoformat(),
            snap.fetcher,
            snap.extractor_version,
            snap.size,
            snap.encoding,
            int(snap.truncated),
            snap.sha256,
        )
        conn = self._conn()
        with conn:
            conn.execute(
                "INSERT INTO snapshots (url_key, final_url_key, url, final_url, status, content_type, "
                "fetched_at, fetcher, extractor_version, size, encoding, truncated, sha256) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return snap

    def latest(self, url: str) -> tuple[PageSnapshot, bytes] | None:
        """The newest snapshot whose requested or final URL is ``url`` (canonicalised)."""
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
                snap = _snapshot(row)
                return snap, self.get_body(snap.sha256)
        return None

    def get_body(self, sha256: str) -> bytes:
        return self._blob_path(sha256).read_bytes()

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
            conn = sqlite3.connect(self._db_path, timeout=30.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self._blobs / sha256[:2] / sha256[2:4] / sha256

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
                fh.write(body)
            os.replace(tmp, path)  # atomic: readers see the whole blob or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


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
