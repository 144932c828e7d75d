"""``Database``: one engine, sessions, and schema migrations, for SQLite or PostgreSQL by URL.

SQLite (the local default) runs in WAL mode with foreign keys on; write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when a read
lock cannot be upgraded. PostgreSQL goes through psycopg 3; ``postgresql://`` and ``postgres://``
URLs are rewritten to ``postgresql+psycopg://``.

Migrations are Alembic scripts shipped inside the package (``fathom/store/migrations``) and are
configured from code, so ``migrate()`` works from any working directory and from an installed wheel.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.store.columns import dump_json

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30.0
# Any constant works; it only has to be the same for every process migrating the same database.
_MIGRATION_LOCK_KEY = 0x46A7_0D0B
_IMMEDIATE = "fathom_sqlite_immediate"


def normalize_url(url: str) -> URL:
    """Parse ``url`` and pin the driver: psycopg 3 for PostgreSQL, the stdlib for SQLite."""
    try:
        parsed = make_url(url.strip())
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r} ({exc})") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise StoreError(
        f"unsupported database {backend!r} in {parsed.render_as_string(hide_password=True)}: "
        "use sqlite:///path/to/file.db or postgresql://user@host/db"
    )


def _sqlite_file(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


class Database:
    """A database by URL. Thread-safe: every ``session()`` / ``transaction()`` is its own Session."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.backend: str = self.url.get_backend_name()
        self._ensure_sqlite_dir()
        self.engine: Engine = self._create_engine(echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    def _create_engine(self, echo: bool) -> Engine:
        if not self.is_sqlite:
            # A plane process runs dozens of jobs' store calls at once from its I/O threads: keep ten
            # connections and open up to thirty more in a burst, instead of queueing behind five.
            return create_engine(
                self.url, echo=echo, json_serializer=dump_json, pool_pre_ping=True, future=True,
                pool_size=10, max_overflow=30,
            )
        kwargs: dict[str, Any] = {
            # Sessions are per call but calls come from many threads (asyncio.to_thread).
            "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
        }
        if _sqlite_file(self.url) is None:
            kwargs["poolclass"] = StaticPool  # one shared connection, or each thread sees its own db
        engine = create_engine(self.url, echo=echo, json_serializer=dump_json, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine

    def _ensure_sqlite_dir(self) -> None:
        """SQLite creates the file but not its folder (the data dir may not exist yet)."""
        path = _sqlite_file(self.url) if self.is_sqlite else None
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of the SQLite database {path}: {exc}") from exc

    # -- sessions ---------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read session; rolled back (nothing to keep) and closed on exit."""
        with self._sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write session: committed on normal exit, rolled back on error."""
        with self._sessions() as session:
            if self.is_sqlite:
                session.connection(execution_options={_IMMEDIATE: True})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # -- migrations -------------------------------------------------------------------------

    def alembic_config(self) -> Config:
        """Alembic configured from code (no alembic.ini, no dependence on the working directory)."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option(
            "sqlalchemy.url", self.url.render_as_string(hide_password=False).replace("%", "%%")
        )
        return cfg

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision``. Safe to call at every start and from several
        processes at once (PostgreSQL: advisory lock; SQLite: an immediate transaction)."""
        self._run_alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        """Downgrade the schema to ``revision`` ("base" drops every table)."""
        self._run_alembic(command.downgrade, revision)

    def _run_alembic(self, action: Any, revision: str) -> None:
        self._ensure_sqlite_dir()
        cfg = self.alembic_config()
        quiet = logging.getLogger("alembic")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.WARNING)  # it narrates every step at INFO on each start
        try:
            with self.engine.connect() as conn:
                if self.is_sqlite:
                    conn = conn.execution_options(**{_IMMEDIATE: True})
                with conn.begin():
                    if not self.is_sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                    cfg.attributes["connection"] = conn
                    action(cfg, revision)
        except SQLAlchemyError as exc:
            raise StoreError(f"migrating {self!r} to {revision} failed: {exc}") from exc
        log.debug("store_migrated", db=repr(self), revision=revision)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own handling defers it and
    # cannot start an IMMEDIATE transaction).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    _set_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _set_wal(cur: sqlite3.Cursor) -> None:
    """Switch a new database file to WAL. The switch needs the file to itself, and SQLite answers
    "database is locked" at once (without its busy handler) while other processes are opening
    the same new file, so it is retried here for up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
