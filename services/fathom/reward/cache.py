"""Verdicts and step labels cached on disk, so a judge model is asked each question once.

RAPO judges G rollouts of the same prompt every epoch, and many of them give the same answer; an LLM
judge at temperature 0 would give the same verdict each time, so we keep it. One SQLite file in
``cache_dir/reward/``; the key is a SHA-256 over every input that can change the result (the
caller lists them: question, answer, sorted golds, judge model, prompt version), so changing the
model or the prompt version simply misses the old entries instead of reusing them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fathom.core.config import Settings

CACHE_FILE = "reward-cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
)
"""


def cache_key(*parts: Any) -> str:
    """A stable digest of JSON-serialisable parts (order matters: callers sort what is a set)."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RewardCache:
    """A small key/value store of JSON values by (kind, key); safe to share between threads.

    ``kind`` separates verdicts from labels so that one file holds both without key clashes.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection, serialised by the lock: the judge runs in one event loop, and SQLite
        # handles other processes (several reward workers) through its own file locking.
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30.0)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(_SCHEMA)
            self._conn.commit()

    @classmethod
    def for_settings(cls, settings: Settings) -> RewardCache:
        return cls(settings.cache_dir / "reward" / CACHE_FILE)

    def get(self, kind: str, key: str) -> Any | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM entries WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, kind: str, key: str, value: Any) -> None:
        data = json.dumps(value, ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO entries (kind, key, value, created_at) VALUES (?, ?, ?, ?)",
                (kind, key, data, time.time()),
            )
            self._conn.commit()

    def __len__(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
