"""Extractor outputs cached in a small SQLite file (the original did not cache them).

Key: (sha256 of the page text the extractor saw, goal, extractor model, prompt version). Hashing the
text rather than only the snapshot body means a change of main-text reader also changes the key.
The snapshot sha256 is stored beside the entry for provenance.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.tools.extract.evidence import Evidence

log = get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS extraction (
    key TEXT PRIMARY KEY,
    text_sha256 TEXT NOT NULL,
    page_sha256 TEXT,
    goal TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    evidence TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


_INSERT = "INSERT OR REPLACE INTO extraction VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(text_sha: str, goal: str, model: str, prompt_version: str) -> str:
    # Goals differ only in surrounding whitespace more often than one would think.
    payload = json.dumps([text_sha, " ".join(goal.split()), model, prompt_version])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ExtractionCache:
    """Thread-safe: one connection guarded by a lock (entries are tiny; contention is negligible)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10.0)
            with self._conn:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the extraction cache at {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def in_dir(cls, cache_dir: Path) -> ExtractionCache:
        return cls(Path(cache_dir) / "extract" / "extractions.sqlite3")

    def get(self, key: str) -> Evidence | None:
        with self._lock:
            try:
                row = self._conn.execute("SELECT evidence FROM extraction WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:  # a cache must never fail an extraction
                log.warning("extract_cache.read_failed", path=str(self.path), error=str(exc))
                row = None
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        try:
            return Evidence.from_dict(json.loads(row[0]))
        except (ValueError, KeyError, TypeError):
            return None  # an entry from an incompatible version: treat as a miss

    def put(
        self,
        key: str,
        evidence: Evidence,
        *,
        text_sha: str,
        page_sha256: str | None,
        goal: str,
        model: str,
        prompt_version: str,
    ) -> None:
        row = (key, text_sha, page_sha256, goal, model, prompt_version,
               json.dumps(evidence.to_dict()), time.time())
        with self._lock:
            try:
                with self._conn:
                    self._conn.execute(_INSERT, row)
            except sqlite3.Error as exc:
                log.warning("extract_cache.write_failed", path=str(self.path), error=str(exc))

    def __len__(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM extraction").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
