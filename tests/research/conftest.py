"""Store fixtures (a migrated SQLite file and real PostgreSQL) for the research tests."""

from tests.store.conftest import db, migrated_postgres, store

__all__ = ["db", "migrated_postgres", "store"]
