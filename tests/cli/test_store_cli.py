"""`fathom store migrate|revision` on a fresh store: an empty store is behind (exit 1), migrate brings
it to head. (The migrations themselves, on SQLite and PostgreSQL, are tested in tests/store.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _fathom(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fathom.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120, check=False)


def _round_trip(env: dict[str, str]) -> None:
    before = _fathom("store", "revision", "--json", env=env)
    assert before.returncode == 1, before.stderr
    doc = json.loads(before.stdout)
    assert doc["current"] is None and doc["head"]
    migrated = _fathom("store", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert f"revision {doc['head']}" in migrated.stdout
    after = _fathom("store", "revision", "--json", env=env)
    assert after.returncode == 0 and json.loads(after.stdout) == {"current": doc["head"], "head": doc["head"]}


def test_migrate_a_fresh_sqlite_store(tmp_path: Path) -> None:
    _round_trip({"FATHOM_DATA_DIR": str(tmp_path), "FATHOM_DATABASE_URL": f"sqlite:///{tmp_path}/jobs.db"})
