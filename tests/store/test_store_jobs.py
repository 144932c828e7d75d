"""Jobs: creation, lookup by id prefix, listing, status transitions, heartbeats."""

from __future__ import annotations

import time
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta

import pytest
from fathom.core.errors import StoreError
from fathom.store import Database, JobInfo, JobStore
from fathom.store.models import Job
from sqlalchemy import update


def test_create_and_get_returns_plain_record(store: JobStore) -> None:
    settings = {"policy": {"model": "fathom-search-4b", "temperature": 0.6}, "unicode": "ü ✓"}
    before = datetime.now(UTC)
    job_id = store.create_job("What is RAPO?", "search", settings, "train", batch_id="b-1")
    job = store.get_job(job_id)
    assert isinstance(job, JobInfo)
    assert (job.id, job.question, job.mode, job.lane, job.status, job.kind) == (
        job_id, "What is RAPO?", "search", "train", "queued", "research")
    assert job.settings == settings and job.batch_id == "b-1"
    assert job.created_at.tzinfo is not None and before - timedelta(seconds=5) <= job.created_at
    assert job.started_at is None and job.finished_at is None and not job.is_terminal
    with pytest.raises(FrozenInstanceError):
        job.status = "running"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("question", "mode", "lane", "message"),
    [("  ", "search", "live", "empty"), ("q", "essay", "live", "mode"),
     ("q", "search", "batch", "lane")],
)
def test_create_rejects_bad_input(store: JobStore, question: str, mode: str, lane: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        store.create_job(question, mode, {}, lane)
    assert store.list_jobs() == ([], None)


def test_create_with_existing_id_is_a_store_error(store: JobStore) -> None:
    store.create_job("q", job_id="fixed-id")
    with pytest.raises(StoreError, match="creating job fixed-id"):
        store.create_job("q", job_id="fixed-id")


def test_get_job_by_unique_prefix(store: JobStore) -> None:
    a = store.create_job("a", job_id="abc12345-0000-4000-8000-000000000001")
    b = store.create_job("b", job_id="abc99999-0000-4000-8000-000000000002")
    store.create_job("c", job_id="ff%_0000-0000-4000-8000-000000000003")
    assert store.get_job("abc1").id == a
    assert store.get_job("abc9").id == b
    assert store.get_job(a).id == a
    assert store.get_job(f"  {a[:10]} ").id == a
    with pytest.raises(StoreError, match="ambiguous"):
        store.get_job("abc")
    with pytest.raises(StoreError, match="no job"):
        store.get_job("zzz")
    with pytest.raises(StoreError, match="no job id"):
        store.get_job("")
    # LIKE wildcards in the input are literal characters, not patterns.
    with pytest.raises(StoreError, match="no job"):
        store.get_job("%")
    with pytest.raises(StoreError, match="no job"):
        store.get_job("a_c")
    assert store.get_job("ff%_").question == "c"


def test_recent_jobs_newest_first_with_filters(store: JobStore) -> None:
    ids = []
    for i in range(5):
        ids.append(store.create_job(f"q{i}", "report", {}, "train" if i % 2 else "live",
                                    batch_id="even" if i % 2 == 0 else None))
        time.sleep(0.002)  # distinct creation times
    store.mark_running(ids[1])
    store.mark_running(ids[3])
    store.mark_succeeded(ids[3], "42")
    assert [j.id for j in store.recent_jobs()] == ids[::-1]
    assert [j.id for j in store.recent_jobs(limit=2)] == ids[:2:-1]
    assert [j.id for j in store.recent_jobs(limit=2, offset=2)] == [ids[2], ids[1]]
    assert [j.id for j in store.recent_jobs(status="running")] == [ids[1]]
    assert [j.id for j in store.recent_jobs(status="succeeded")] == [ids[3]]
    assert [j.id for j in store.recent_jobs(status="queued")] == [ids[4], ids[2], ids[0]]
    assert [j.id for j in store.recent_jobs(lane="train")] == [ids[3], ids[1]]
    assert [j.id for j in store.recent_jobs(batch_id="even")] == [ids[4], ids[2], ids[0]]
    assert store.job_counts() == {"queued": 3, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 0}
    assert store.job_counts(batch_id="even")["queued"] == 3
    with pytest.raises(StoreError, match="status"):
        store.recent_jobs(status="done")
    with pytest.raises(StoreError, match="limit"):
        store.recent_jobs(limit=0)


def test_status_lifecycle(store: JobStore) -> None:
    job_id = store.create_job("q", "search")
    store.mark_running(job_id, worker_id="w1")
    job = store.get_job(job_id)
    assert job.status == "running" and job.worker_id == "w1"
    assert job.started_at is not None and job.heartbeat_at is not None
    started = job.started_at

    # Another worker re-claims a running job (resumption): started_at is kept.
    store.mark_running(job_id, worker_id="w2")
    job = store.get_job(job_id)
    assert job.worker_id == "w2" and job.started_at == started

    store.heartbeat(job_id)
    assert store.get_job(job_id).heartbeat_at >= job.heartbeat_at  # type: ignore[operator]

    store.mark_succeeded(job_id, "Paris")
    job = store.get_job(job_id)
    assert job.status == "succeeded" and job.answer == "Paris" and job.is_terminal
    assert job.finished_at is not None and job.finished_at >= started

    store.mark_succeeded(job_id, "ignored")  # a re-delivered terminal mark is a no-op
    assert store.get_job(job_id).answer == "Paris"
    for bad in (store.mark_running, store.mark_cancelled, store.heartbeat):
        with pytest.raises(StoreError, match="is succeeded"):
            bad(job_id)
    with pytest.raises(StoreError, match="is succeeded"):
        store.mark_failed(job_id, "boom")
    assert store.get_job(job_id).status == "succeeded"


def test_failed_and_cancelled(store: JobStore) -> None:
    queued = store.create_job("q")
    with pytest.raises(StoreError, match="is queued"):
        store.mark_succeeded(queued)
    with pytest.raises(StoreError, match="is queued"):
        store.heartbeat(queued)
    store.mark_cancelled(queued, "user asked")
    job = store.get_job(queued)
    assert job.status == "cancelled" and job.error == "user asked" and job.finished_at is not None
    store.mark_cancelled(queued)

    running = store.create_job("q")
    store.mark_running(running)
    store.mark_failed(running, "ModelError: server unreachable ✗")
    job = store.get_job(running)
    assert job.status == "failed" and job.error == "ModelError: server unreachable ✗"

    with pytest.raises(StoreError, match="no job missing"):
        store.mark_running("missing")


def test_stale_jobs_are_running_jobs_without_recent_heartbeat(store: JobStore, db: Database) -> None:
    fresh, stale, queued = store.create_job("f"), store.create_job("s"), store.create_job("q")
    store.mark_running(fresh, "w1")
    store.mark_running(stale, "w2")
    with db.transaction() as s:
        s.execute(update(Job).where(Job.id == stale)
                  .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=10)))
    assert [j.id for j in store.stale_jobs(older_than_s=60)] == [stale]
    assert {j.id for j in store.stale_jobs(older_than_s=-1)} == {fresh, stale}
    assert queued not in {j.id for j in store.stale_jobs(older_than_s=-1)}


def test_store_is_safe_to_share_between_threads(store: JobStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> str:
        job_id = store.create_job(f"question {i}", "search")
        store.mark_running(job_id, f"w{i}")
        store.mark_succeeded(job_id, str(i))
        return store.get_job(job_id).answer or ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(work, range(24)))
    assert answers == [str(i) for i in range(24)]
    assert store.job_counts()["succeeded"] == 24
