"""The shared server fixtures of tests/conftest.py start and isolate real servers."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
import redis
from fathom.store import Database, JobStore


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
        assert name is not None and name[0].startswith("fathom_test_")


@pytest.mark.postgres
def test_postgres_schema_url_isolates_tables(postgres_schema_url: str) -> None:
    db = Database(postgres_schema_url)
    db.migrate()
    JobStore(db).create_job("in my schema")
    with psycopg.connect(postgres_schema_url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()
        assert schema is not None and schema[0].startswith("t_")
        rows = conn.execute(f'SELECT question FROM "{schema[0]}".jobs').fetchall()
    assert rows == [("in my schema",)]
    db.dispose()


@pytest.mark.postgres
def test_spawned_postgres_serves_the_store(spawn_postgres: Callable[..., object]) -> None:
    server = spawn_postgres()
    url: str = server.url  # type: ignore[attr-defined]
    db = Database(url)
    db.migrate()
    store = JobStore(db)
    job_id = store.create_job("on a throwaway server")
    assert store.get_job(job_id).question == "on a throwaway server"
    db.dispose()


def test_redis_url_is_a_claimed_database(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set("fathom:test:probe", "1")
    assert client.get("fathom:test:probe") == b"1"
    assert client.exists("fathom:test:claim") == 1
    client.delete("fathom:test:probe")
    client.close()


def test_spawned_redis_answers(spawn_redis: Callable[..., object]) -> None:
    server = spawn_redis()
    client = redis.Redis.from_url(server.url)  # type: ignore[attr-defined]
    assert client.ping() is True
    client.close()
