"""Store fixtures on each backend: a SQLite file, and real PostgreSQL.

``db`` / ``store`` give a migrated, empty store per test. On PostgreSQL the session database
(``postgres_url``) is migrated once and emptied with TRUNCATE before each test, which is far
cheaper than a new database per test; tests of migrations themselves take ``db_url`` (an empty,
unmigrated database of their own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fathom.store import Database, JobStore
from fathom.store.models import Base
from sqlalchemy import text

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, unmigrated database of this test's own, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'fathom.db'}"
    make: Callable[[], str] = request.getfixturevalue("make_postgres_db")
    return make()


@pytest.fixture(scope="session")
def migrated_postgres(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'data' / 'fathom.db'}")
        database.migrate()
        yield database
        database.dispose()
        return
    database = request.getfixturevalue("migrated_postgres")
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield database


@pytest.fixture
def store(db: Database) -> JobStore:
    return JobStore(db)
