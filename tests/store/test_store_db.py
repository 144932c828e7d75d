"""``Database``: URLs, engine settings, migrations (upgrade, downgrade, agreement with the models)."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fathom.core.config import Settings
from fathom.core.errors import StoreError
from fathom.store import Database, JobStore
from fathom.store.db import MIGRATIONS_DIR, normalize_url
from fathom.store.models import Base, Job
from sqlalchemy import inspect, select, text

TABLES = {"jobs", "trajectories", "steps", "tool_calls", "page_snapshots", "reports", "batches", "job_events"}


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@db:5432/fathom", "postgresql+psycopg"),
        ("postgres://u@db/fathom", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/fathom", "postgresql+psycopg"),
        ("sqlite:////var/lib/fathom/fathom.db", "sqlite"),
        ("sqlite://", "sqlite"),
    ],
)
def test_urls_are_normalized(url: str, driver: str) -> None:
    assert normalize_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", ""])
def test_unsupported_or_bad_urls_are_store_errors(url: str) -> None:
    with pytest.raises(StoreError):
        Database(url)


def test_repr_hides_password() -> None:
    db = Database("postgresql://fathom:s3cret@db.internal/fathom")
    assert "s3cret" not in repr(db) and "postgresql+psycopg" in repr(db)


def test_default_settings_url_migrates_into_a_new_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "nested" / "data")
    db = Database(settings.resolved_database_url)
    db.migrate()
    assert settings.sqlite_path.exists()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    db.dispose()


def test_sqlite_runs_wal_with_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'f.db'}")
    db.migrate()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def test_in_memory_sqlite_is_shared_between_threads() -> None:
    db = Database("sqlite://")
    db.migrate()
    store = JobStore(db)
    ids: list[str] = []
    thread = threading.Thread(target=lambda: ids.append(store.create_job("from a thread")))
    thread.start()
    thread.join()
    assert store.get_job(ids[0]).question == "from a thread"
    db.dispose()


def test_migrate_is_idempotent_and_independent_of_cwd(db_url: str, tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)  # no alembic.ini, no migrations folder here
    try:
        db = Database(db_url)
        assert db.current_revision() is None
        db.migrate()
        db.migrate()
        assert db.current_revision() == db.head_revision() == "0003"
        assert set(inspect(db.engine).get_table_names()) >= TABLES
    finally:
        os.chdir(cwd)
        db.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(ctx, Base.metadata) == []
    db.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    db = Database(db_url)
    db.migrate()
    store = JobStore(db)
    store.create_job("before")
    db.downgrade("base")
    assert db.current_revision() is None
    assert not TABLES & set(inspect(db.engine).get_table_names())
    db.migrate()
    assert db.current_revision() == "0003"
    assert store.list_jobs() == ([], None)
    store.create_job("after")
    assert [j.question for j in store.list_jobs()[0]] == ["after"]
    db.dispose()


def test_concurrent_migrations_do_not_collide(db_url: str) -> None:
    """Several processes starting at once each call migrate(); one creates, the others wait."""
    errors: list[BaseException] = []
    dbs = [Database(db_url) for _ in range(4)]

    def run(db: Database) -> None:
        try:
            db.migrate()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert dbs[0].current_revision() == "0003"
    for d in dbs:
        d.dispose()


def test_migrations_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert MIGRATIONS_DIR.parent.name == "store" and MIGRATIONS_DIR.parent.parent.name == "fathom"


def test_json_columns_are_jsonb_on_postgresql_and_json_on_sqlite(db: Database) -> None:
    with db.engine.connect() as conn:
        columns = {c["name"]: c["type"] for c in inspect(conn).get_columns("steps")}
    kind = type(columns["token_ids"]).__name__.upper()
    assert kind == ("JSONB" if db.backend == "postgresql" else "JSON")


def test_json_documents_round_trip_and_can_be_queried(db: Database) -> None:
    store = JobStore(db)
    doc = {"policy": {"model": "m", "temperature": 0.6, "stop": ["</tool_call>"]},
           "big": 2**53 + 1, "neg": -1.5e-300, "none": None, "flag": True, "uni": "日本語 ✓",
           "nested": [[1, 2], {"a": []}]}
    job_id = store.create_job("q", "report", doc)
    assert store.get_job(job_id).settings == doc
    with db.session() as s:
        found = s.scalar(select(Job.id).where(Job.settings["policy"]["model"].as_string() == "m"))
    assert found == job_id


def test_timestamps_come_back_aware_utc(db: Database) -> None:
    store = JobStore(db)
    job_id = store.create_job("q")
    plus_two = timezone(timedelta(hours=2))
    with db.transaction() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.heartbeat_at = datetime(2025, 6, 1, 14, 0, tzinfo=plus_two)
    got = store.get_job(job_id).heartbeat_at
    assert got == datetime(2025, 6, 1, 12, 0, tzinfo=UTC) and got.tzinfo == UTC


def test_write_failures_roll_back(db: Database) -> None:
    store = JobStore(db)
    with pytest.raises(RuntimeError), db.transaction() as s:
        s.add(Job(id="rolled-back", question="q", mode="search"))
        s.flush()
        raise RuntimeError("boom")
    with pytest.raises(StoreError):
        store.get_job("rolled-back")


def test_check_constraints_guard_statuses(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(Job(id="x", question="q", mode="search", status="exploded"))
    with db.session() as s:
        assert s.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
