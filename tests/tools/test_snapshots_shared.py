"""One snapshot store shared by many processes: no torn blob, no lost row, no 'database is locked'.

Real processes (multiprocessing, spawn) write to one root at the same moment; the index is the
SQLite file next to the blobs, or the job store's database (SQLite file or PostgreSQL).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fathom.store.db import Database
from fathom.store.repository import JobStore
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.snapshots import SnapshotCorrupt, SnapshotStore, stored_page

WRITERS = 4
PAGES_EACH = 12
BODY_BYTES = 300_000  # large enough that a torn write would show as a short or mixed blob


def _page(url: str, body: bytes, *, final_url: str | None = None, at: datetime | None = None) -> FetchedPage:
    return FetchedPage(url=url, final_url=final_url or url, status=200, content_type="text/html",
                       body=body, fetcher="httpx", fetched_at=at or datetime.now(UTC), encoding="utf-8")


def _body(tag: str) -> bytes:
    """A large body that is different for every tag, with no repeated block."""
    seed = hashlib.sha256(tag.encode()).digest()
    out = bytearray()
    counter = 0
    while len(out) < BODY_BYTES:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:BODY_BYTES])


def _shared_url(i: int) -> str:
    return f"http://127.0.0.1:8765/wiki/shared_{i}"


def _writer(root: str, index_url: str | None, worker: int, barrier: object, errors: object) -> None:
    """One process: open the store at the same moment as the others, then write shared pages (same URL
    and body in every process) and own pages, reading every shared body back as it goes."""
    try:
        barrier.wait(timeout=60)  # type: ignore[attr-defined]
        store = SnapshotStore(Path(root), index_url=index_url)
        for i in range(PAGES_EACH):
            shared = store.put(_page(_shared_url(i), _body(f"shared-{i}")), "v1")
            own = store.put(_page(f"http://127.0.0.1:8765/wiki/w{worker}_{i}", _body(f"w{worker}-{i}")), "v1")
            assert store.get_body(shared.sha256) == _body(f"shared-{i}")
            assert store.get_body(own.sha256) == _body(f"w{worker}-{i}")
        store.close()
    except BaseException:
        errors.put(f"writer {worker}: {traceback.format_exc()}")  # type: ignore[attr-defined]
        raise


def _race(root: Path, index_url: str | None) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    errors = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(str(root), index_url, w, barrier, errors)) for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in procs] == [0] * WRITERS


def _check_after_race(store: SnapshotStore, rows_expected: int) -> None:
    assert store.count() == rows_expected
    for i in range(PAGES_EACH):
        hit = store.latest(_shared_url(i))
        assert hit is not None and hit[1] == _body(f"shared-{i}")
        for w in range(WRITERS):
            snap, body = store.latest(f"http://127.0.0.1:8765/wiki/w{w}_{i}") or (None, b"")
            assert snap is not None and body == _body(f"w{w}-{i}") and snap.size == BODY_BYTES
    blobs = [p for p in (store.root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == PAGES_EACH * (WRITERS + 1)  # one blob per distinct body; no temp file left
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name  # whole, never torn


def test_four_processes_share_the_file_index(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    _race(root, None)
    store = SnapshotStore(root)
    try:
        _check_after_race(store, rows_expected=WRITERS * PAGES_EACH * 2)  # a row per fetch
    finally:
        store.close()


def test_four_processes_share_a_database_index_on_sqlite(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    url = f"sqlite:///{tmp_path / 'store' / 'fathom.db'}"
    _race(root, url)
    store = SnapshotStore(root, index_url=url)
    try:
        # Unique on (sha256, url): the 4 writers of each shared page refresh one row.
        _check_after_race(store, rows_expected=PAGES_EACH * (WRITERS + 1))
    finally:
        store.close()


@pytest.mark.postgres
def test_four_processes_share_a_database_index_on_postgres(
    tmp_path: Path, make_postgres_db: Callable[[], str]
) -> None:
    url = make_postgres_db()
    root = tmp_path / "snapshots"
    _race(root, url)
    store = SnapshotStore(root, index_url=url)
    try:
        _check_after_race(store, rows_expected=PAGES_EACH * (WRITERS + 1))
    finally:
        store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fathom.db'}"
    return str(request.getfixturevalue("make_postgres_db")())


def test_database_index_newest_wins_and_matches_canonical_urls(tmp_path: Path, index_url: str) -> None:
    store = SnapshotStore(tmp_path / "snapshots", index_url=index_url)
    try:
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        store.put(_page("http://Example.org:80/a", b"<p>one</p>", at=t0), "v1")
        store.put(_page("http://example.org/a", b"<p>two</p>", at=t0 + timedelta(seconds=1)), "v1")
        hit = store.latest("http://example.org/a")
        assert hit is not None and hit[1] == b"<p>two</p>"
        # The same body fetched again later from the same URL refreshes its row: it is newest again.
        store.put(_page("http://example.org/a", b"<p>one</p>", at=t0 + timedelta(seconds=2)), "v1")
        assert store.latest("http://example.org/a")[1] == b"<p>one</p>"  # type: ignore[index]
        assert store.count() == 3
        # A redirect target is found by its final URL; an unknown URL is a miss.
        store.put(_page("http://example.org/old", b"<p>moved</p>", final_url="http://example.org/new"), "v1")
        snap, body = store.latest("http://example.org/new") or (None, b"")
        assert snap is not None and snap.url == "http://example.org/old" and body == b"<p>moved</p>"
        assert store.latest("http://example.org/none") is None
        page = stored_page(snap, body, "http://example.org/new", "replay")
        assert page.final_url == "http://example.org/new" and page.body == body
    finally:
        store.close()


def test_database_index_rows_are_the_job_stores_rows(tmp_path: Path, index_url: str) -> None:
    store = SnapshotStore(tmp_path / "snapshots", index_url=index_url)
    try:
        snap = store.put(_page("http://example.org/p", b"<p>provenance</p>"), "v7")
    finally:
        store.close()
    db = Database(index_url)
    try:
        found = JobStore(db).find_snapshots(sha256=snap.sha256)
    finally:
        db.dispose()
    assert [(s.url, s.extractor_version, s.size) for s in found] == [("http://example.org/p", "v7", 17)]


def test_bodies_are_read_by_hash_from_any_store_on_the_root(tmp_path: Path) -> None:
    writer = SnapshotStore(tmp_path)
    sha = writer.put(_page("http://example.org/x", b"<p>by hash</p>"), "v1").sha256
    reader = SnapshotStore(tmp_path)  # another store (as another process opens it) on the same root
    try:
        assert reader.get_body(sha) == b"<p>by hash</p>" and reader.has_body(sha)
        assert reader.get_body(sha.upper()) == b"<p>by hash</p>"
        with pytest.raises(FileNotFoundError):
            reader.get_body("0" * 64)
        with pytest.raises(ValueError, match="not a sha256"):
            reader.get_body("../../etc/passwd")
        blob = tmp_path / "blobs" / sha[:2] / sha[2:4] / sha
        assert blob.stat().st_mode & 0o777 == 0o644
        blob.write_bytes(b"<p>changed on disk</p>")
        with pytest.raises(SnapshotCorrupt, match=sha):
            reader.get_body(sha)
    finally:
        writer.close()
        reader.close()
