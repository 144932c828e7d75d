"""Shared fixtures: real PostgreSQL and Redis for integration tests.

Nothing here is a mock. Each fixture uses the server already running on this machine when it is
reachable, and otherwise starts a throwaway one from the installed binaries in a temporary
directory (stopped and deleted at the end of the session).

PostgreSQL
    ``postgres_server``  (session) admin URL of a server on which databases may be created.
                         Order: ``$FATHOM_TEST_POSTGRES_URL``; 127.0.0.1:5432 as user ``postgres``
                         then ``root`` (trust auth, database ``test``); else ``initdb`` + ``pg_ctl``
                         (found under /usr/lib/postgresql/*/bin) on a free port.
    ``postgres_url``     (session) URL of a fresh empty database with a random name, created for
                         this test session and dropped after it. Share it by using unique ids/rows,
                         or create your own schema inside it.
    ``make_postgres_db`` (function) factory: ``make_postgres_db()`` -> URL of another fresh empty
                         database, dropped when the test ends. For tests that need a pristine
                         database (migrations). Costs ~0.5 s per database on a busy machine.
    ``postgres_schema_url`` (function) the session database with a fresh empty schema of this
                         test's own first on ``search_path`` (dropped after the test): cheap
                         per-test isolation for code that creates unqualified tables.
    URLs are ``postgresql://user@host:port/db``; give them to ``fathom.store.Database`` as they are
    (it selects psycopg 3), or to psycopg directly.

Redis
    ``redis_server``     (session) ``redis://host:port`` of a server. Order: ``$FATHOM_TEST_REDIS_URL``;
                         127.0.0.1:6379 when it answers PING; else ``redis-server --save ''`` on a
                         free port.
    ``redis_url``        (session) ``redis://host:port/N``: a logical database claimed for this
                         session only (it was empty; a claim key ``fathom:test:claim`` marks it),
                         flushed at the end. Keep the claim key (no FLUSHDB of your own in tests,
                         delete your keys instead) so parallel sessions do not pick the same db.

Set ``FATHOM_TEST_SPAWN_SERVERS=1`` to ignore running servers and always start throwaway ones.
``spawn_postgres`` / ``spawn_redis`` are factories for tests that need a server of their own (to
stop it mid-test, say); what they start is stopped at the end of the test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fathom.corpus.store import Corpus
from fathom.serve.stack import free_port, redis_pings

# The local web's default origin (127.0.0.1:8765) is stable so stored URLs stay valid; tests run a
# private web on a free port instead, so parallel sessions never share (and stop) each other's.
os.environ.setdefault("FATHOM_WEB__PORT", "0")

PG_HOST = "127.0.0.1"
PG_PORT = 5432
REDIS_PORT = 6379
REDIS_CLAIM_KEY = "fathom:test:claim"


def _spawn_forced() -> bool:
    return os.environ.get("FATHOM_TEST_SPAWN_SERVERS", "").lower() in ("1", "true", "yes")


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class ThrowawayServer:
    """A server process we started, with the directory it lives in."""

    url: str
    directory: Path
    stop_command: list[str] | None = None
    process: subprocess.Popen[bytes] | None = None
    run_as: str | None = None
    log: Path | None = None

    def stop(self) -> None:
        if self.stop_command is not None:
            subprocess.run(self.stop_command, user=self.run_as, capture_output=True, timeout=60, check=False)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


# -- PostgreSQL ------------------------------------------------------------------------------


def _pg_binary(name: str) -> str:
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True)
    if found:
        return found[0]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise RuntimeError(f"PostgreSQL binary {name!r} not found under /usr/lib/postgresql/*/bin or PATH")


def start_postgres() -> ThrowawayServer:
    """initdb + pg_ctl start on a free port in a fresh temporary directory (trust auth)."""
    # initdb refuses to run as root: run the server as the system `postgres` user then.
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError("running as root and no `postgres` user to run initdb as") from exc
        run_as = "postgres"
    directory = Path(tempfile.mkdtemp(prefix="fathom-pg-"))
    if run_as:
        shutil.chown(directory, user=run_as)
    data, log = directory / "data", directory / "server.log"
    port = free_port()
    subprocess.run(
        [_pg_binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--no-sync", "--no-instructions"],
        user=run_as, check=True, capture_output=True, timeout=120,
    )
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    pg_ctl = _pg_binary("pg_ctl")
    started = subprocess.run(
        [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
        user=run_as, capture_output=True, timeout=90, check=False,
    )
    server = ThrowawayServer(
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        directory=directory,
        stop_command=[pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
        run_as=run_as,
        log=log,
    )
    if started.returncode != 0:
        text = log.read_text(errors="replace") if log.exists() else ""
        server.stop()
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.decode(errors='replace')}\n{text}")
    return server


def _pg_can_create(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            return bool(row and row[0])
    except psycopg.Error:
        return False


def _running_postgres() -> str | None:
    if not _port_open(PG_HOST, PG_PORT):
        return None
    for user in ("postgres", "root"):
        for dbname in ("test", "postgres"):
            url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{dbname}"
            if _pg_can_create(url):
                return url
    return None


def create_postgres_database(admin_url: str, prefix: str = "fathom_test") -> str:
    """Create an empty database with a random name; return its URL."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(name)))
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def drop_postgres_database(admin_url: str, url: str) -> None:
    import psycopg
    from psycopg import sql

    name = url.rpartition("/")[2]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        # FORCE: a pool a test forgot to dispose must not keep the database alive.
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    env = os.environ.get("FATHOM_TEST_POSTGRES_URL")
    if env:
        yield env
        return
    running = None if _spawn_forced() else _running_postgres()
    if running:
        yield running
        return
    server = start_postgres()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    url = create_postgres_database(postgres_server)
    try:
        yield url
    finally:
        drop_postgres_database(postgres_server, url)


@pytest.fixture
def make_postgres_db(postgres_server: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(create_postgres_database(postgres_server))
        return made[-1]

    yield make
    for url in made:
        drop_postgres_database(postgres_server, url)


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    # libpq `options` sets search_path for every connection made from this URL.
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def spawn_postgres() -> Iterator[Callable[[], ThrowawayServer]]:
    servers: list[ThrowawayServer] = []

    def spawn() -> ThrowawayServer:
        servers.append(start_postgres())
        return servers[-1]

    yield spawn
    for server in servers:
        server.stop()


# -- Redis -----------------------------------------------------------------------------------


def start_redis() -> ThrowawayServer:
    """redis-server on a free port, no persistence, in a fresh temporary directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found on PATH")
    directory = Path(tempfile.mkdtemp(prefix="fathom-redis-"))
    port = free_port()
    log = directory / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--daemonize", "no"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    server = ThrowawayServer(url=f"redis://127.0.0.1:{port}", directory=directory, process=proc, log=log)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if redis_pings(server.url, timeout=2.0):
            return server
        time.sleep(0.05)
    text = log.read_text(errors="replace")
    server.stop()
    raise RuntimeError(f"redis-server did not start on port {port}:\n{text}")


def claim_redis_db(server_url: str, token: str) -> int | None:
    """Claim an empty logical database (1..15, random order) on a shared server, or None."""
    import random

    import redis

    indexes = list(range(1, 16))
    random.shuffle(indexes)
    for index in indexes:
        client = redis.Redis.from_url(f"{server_url}/{index}", socket_timeout=2)
        try:
            # DBSIZE then SET NX: of two sessions seeing the same empty db only one wins the claim.
            if client.dbsize() == 0 and client.set(REDIS_CLAIM_KEY, token, nx=True, ex=6 * 3600):
                return index
        except redis.ResponseError:
            return None  # the server has fewer databases than 16
        finally:
            client.close()
    return None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    env = os.environ.get("FATHOM_TEST_REDIS_URL")
    if env:
        yield env.rstrip("/")
        return
    local = f"redis://127.0.0.1:{REDIS_PORT}"
    if not _spawn_forced() and _port_open("127.0.0.1", REDIS_PORT) and redis_pings(local, timeout=2.0):
        yield local
        return
    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: str) -> Iterator[str]:
    import redis

    token = secrets.token_hex(8)
    spawned: ThrowawayServer | None = None
    index = claim_redis_db(redis_server, token)
    if index is None:  # the shared server is full of other sessions: use one of our own
        spawned = start_redis()
        index = claim_redis_db(spawned.url, token)
        assert index is not None
    base = spawned.url if spawned else redis_server
    url = f"{base}/{index}"
    try:
        yield url
    finally:
        client = redis.Redis.from_url(url, socket_timeout=5)
        with contextlib.suppress(redis.RedisError):
            if client.get(REDIS_CLAIM_KEY) in (token.encode(), None):
                client.flushdb()
        client.close()
        if spawned is not None:
            spawned.stop()


@pytest.fixture
def spawn_redis() -> Iterator[Callable[[], ThrowawayServer]]:
    servers: list[ThrowawayServer] = []

    def spawn() -> ThrowawayServer:
        servers.append(start_redis())
        return servers[-1]

    yield spawn
    for server in servers:
        server.stop()


# --- a small real corpus (HotpotQA + MuSiQue paragraphs), shared by the corpus and search tests ---


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.shared_data import build_small_corpus

    return build_small_corpus(tmp_path_factory.mktemp("corpus") / "small")


@pytest.fixture(scope="session")
def small_corpus(small_corpus_dir: Path) -> Corpus:
    return Corpus.open(small_corpus_dir)
