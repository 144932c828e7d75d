"""The store side of durable jobs: lanes, idempotent submits, batches, paging, claims and leases,
cancellation, the sweeper's queries, the event log, progress, export, and migration 0002.

Every test runs on SQLite and on real PostgreSQL (the ``store`` / ``db`` / ``db_url`` fixtures).
Expired leases are made by moving ``lease_expires_at`` into the past, never by sleeping.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fathom.core.errors import StoreError
from fathom.store import Database, JobInfo, JobStore
from fathom.store.models import Job, JobEventRecord, StepRecord, ToolCallRecord
from fathom.store.records import BatchItemIn
from fathom.store.repository import BadPageToken, ClaimLost, RecordNotFound
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from . import sample


def _count(db: Database, model: Any, *where: Any) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _expire_lease(db: Database, job_id: str) -> None:
    with db.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id)
                  .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))


def _at_once(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(0..n-1)`` in n threads released together by a barrier."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


# -- jobs: lanes, new fields, idempotent submit --------------------------------------------------


def test_lanes_are_live_and_train_and_old_names_are_mapped(store: JobStore) -> None:
    assert store.get_job(store.create_job("q")).lane == "live"
    assert store.get_job(store.create_job("q", "search", {}, "interactive")).lane == "live"
    assert store.get_job(store.create_job("q", "search", {}, "training")).lane == "train"
    assert store.get_job(store.create_job("q", "search", {}, "train")).lane == "train"
    with pytest.raises(StoreError, match="lane 'batch'"):
        store.create_job("q", "search", {}, "batch")
    assert [j.lane for j in store.list_jobs(lane="training")[0]] == ["train", "train"]


def test_new_job_fields(store: JobStore) -> None:
    before = datetime.now(UTC)
    job = store.get_job(store.create_job(
        "q", "search", {"k": 1}, "train", priority=7, client_id="alice", deadline_s=90,
        batch_id="b", external_id="item-1", gold_answer="42"))
    assert (job.priority, job.client_id, job.batch_id, job.external_id, job.gold_answer) == (
        7, "alice", "b", "item-1", "42")
    assert (job.attempts, job.cancel_requested, job.lease_expires_at, job.enqueued_at) == (
        0, False, None, None)
    assert job.deadline_at is not None
    assert before + timedelta(seconds=89) <= job.deadline_at <= datetime.now(UTC) + timedelta(seconds=91)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"priority": 10}, "priority"), ({"priority": -1}, "priority"), ({"priority": True}, "priority"),
    ({"deadline_s": 0}, "deadline_s"), ({"deadline_s": float("nan")}, "deadline_s"),
])
def test_bad_job_fields_store_nothing(store: JobStore, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        store.create_job("q", **kwargs)
    assert store.job_counts()["queued"] == 0


def test_priority_is_also_guarded_by_the_database(db: Database) -> None:
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(Job(id="p", question="q", mode="search", priority=11))


def test_submit_is_idempotent_by_client_request_id(store: JobStore, db: Database) -> None:
    first = store.create_job("q", client_id="alice", client_request_id="r1")
    assert store.create_job("other text", client_id="alice", client_request_id="r1") == first
    assert store.get_job(first).question == "q"  # the first stored version is kept
    other_client = store.create_job("q", client_id="bob", client_request_id="r1")
    assert other_client != first
    no_key = {store.create_job("q", client_id="alice") for _ in range(2)}
    empty_key = {store.create_job("q", client_id="alice", client_request_id="") for _ in range(2)}
    assert len(no_key) == 2 and len(empty_key) == 2  # "" (proto default) means no key
    assert _count(db, Job) == 6


def test_racing_submits_store_one_job(store: JobStore, db: Database) -> None:
    ids = _at_once(6, lambda i: store.create_job(f"q{i}", client_id="c", client_request_id="same"))
    assert len(set(ids)) == 1
    assert _count(db, Job, Job.client_request_id == "same") == 1


def test_active_jobs_count_queued_and_running_of_the_client(store: JobStore) -> None:
    a = [store.create_job("q", client_id="alice") for _ in range(4)]
    store.create_job("q", client_id="bob")
    store.claim_job(a[0], "w", 30)
    store.claim_job(a[1], "w", 30)
    store.mark_succeeded(a[1], "x", worker_id="w")
    store.request_cancel(a[2])
    assert store.active_jobs("alice") == 2 and store.active_jobs("bob") == 1 and store.active_jobs("x") == 0


# -- listing ----------------------------------------------------------------------------------


def _pages(store: JobStore, **kwargs: Any) -> list[list[str]]:
    pages, token = [], None
    while True:
        jobs, token = store.list_jobs(page_token=token, **kwargs)
        pages.append([j.id for j in jobs])
        if token is None:
            return pages


def test_list_jobs_pages_newest_first_and_is_stable_under_inserts(store: JobStore) -> None:
    ids = [store.create_job(f"q{i}") for i in range(7)]
    newest_first = sorted(ids, key=lambda i: (store.get_job(i).created_at, i), reverse=True)
    assert _pages(store, page_size=3) == [newest_first[:3], newest_first[3:6], newest_first[6:]]

    page, token = store.list_jobs(page_size=3)
    assert token is not None
    store.create_job("inserted while paging")  # newer: sorts before page 1, shifts nothing
    after, _ = store.list_jobs(page_size=3, page_token=token)
    assert [j.id for j in page] + [j.id for j in after] == newest_first[:6]
    assert store.list_jobs(page_size=50)[1] is None


def test_list_jobs_filters(store: JobStore) -> None:
    live = store.create_job("a", lane="live")
    train = store.create_job("b", lane="train", batch_id="B")
    running = store.create_job("c", lane="train", batch_id="B")
    store.claim_job(running, "w", 30)
    assert [j.id for j in store.list_jobs(lane="live")[0]] == [live]
    assert {j.id for j in store.list_jobs(batch_id="B")[0]} == {train, running}
    assert [j.id for j in store.list_jobs(state="running")[0]] == [running]
    assert [j.id for j in store.list_jobs(state="queued", lane="train")[0]] == [train]
    assert _pages(store, batch_id="B", page_size=1) == [[running], [train]]


@pytest.mark.parametrize("token", ["garbage!!", "bm90IGpzb24", "WzEsMl0"])
def test_list_jobs_rejects_tokens_it_did_not_give(store: JobStore, token: str) -> None:
    with pytest.raises(BadPageToken):
        store.list_jobs(page_token=token)
    with pytest.raises(StoreError, match="page_size"):
        store.list_jobs(page_size=0)
    with pytest.raises(StoreError, match="status"):
        store.list_jobs(state="done")


# -- claims and leases ------------------------------------------------------------------------


def test_claim_renew_and_reclaim_after_lease_expiry(store: JobStore, db: Database) -> None:
    job_id = store.create_job("q")
    first = store.claim_job(job_id, "w1", 30)
    assert first is not None and first.status == "running" and first.worker_id == "w1"
    assert first.attempts == 1 and first.lease_expires_at is not None and first.started_at is not None
    assert first.lease_expires_at > datetime.now(UTC) + timedelta(seconds=25)
    assert store.claim_job(job_id, "w2", 30) is None  # held: nobody else gets it
    assert store.renew_lease(job_id, "w1", 60) is True
    assert store.renew_lease(job_id, "w2", 60) is False

    _expire_lease(db, job_id)  # w1 died
    second = store.claim_job(job_id, "w2", 30)
    assert second is not None and second.worker_id == "w2" and second.attempts == 2
    assert second.started_at == first.started_at
    assert store.renew_lease(job_id, "w1", 30) is False  # the claim is lost
    with pytest.raises(ClaimLost, match="w1"):
        store.mark_succeeded(job_id, "late", worker_id="w1")
    with pytest.raises(ClaimLost):
        store.mark_failed(job_id, "late", worker_id="w1")
    store.mark_succeeded(job_id, "42", worker_id="w2")
    done = store.get_job(job_id)
    assert (done.status, done.answer, done.lease_expires_at) == ("succeeded", "42", None)
    store.mark_succeeded(job_id, "42", worker_id="w2")  # a redelivered finish is a no-op
    assert store.claim_job(job_id, "w3", 30) is None  # finished jobs are never claimed
    assert store.renew_lease(job_id, "w2", 30) is False
    with pytest.raises(RecordNotFound):
        store.claim_job("missing", "w1", 30)
    with pytest.raises(StoreError, match="lease_s"):
        store.claim_job(job_id, "w1", 0)


def test_concurrent_claims_have_exactly_one_winner(store: JobStore, db: Database) -> None:
    for round_ in range(5):
        job_id = store.create_job(f"q{round_}")
        if round_ % 2:  # also the re-claim of an expired lease
            assert store.claim_job(job_id, "dead", 30) is not None
            _expire_lease(db, job_id)
        def claim(i: int, job_id: str = job_id) -> JobInfo | None:
            return store.claim_job(job_id, f"w{i}", 30)

        results = _at_once(4, claim)
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        assert store.get_job(job_id).worker_id == winners[0].worker_id


def test_terminal_states_are_never_left(store: JobStore) -> None:
    job_id = store.create_job("q")
    store.claim_job(job_id, "w", 30)
    store.mark_failed(job_id, "boom", worker_id="w")
    for mark in (lambda: store.mark_succeeded(job_id, "x"), lambda: store.mark_cancelled(job_id),
                 lambda: store.mark_running(job_id)):
        with pytest.raises(StoreError, match="is failed"):
            mark()
    assert store.request_cancel(job_id).status == "failed"
    assert store.get_job(job_id).status == "failed"


# -- cancellation -----------------------------------------------------------------------------


def test_request_cancel(store: JobStore, db: Database) -> None:
    queued, running = store.create_job("q"), store.create_job("r")
    store.claim_job(running, "w", 30)

    got = store.request_cancel(queued)
    assert got.status == "cancelled" and got.finished_at is not None and got.error

    flagged = store.request_cancel(running)
    assert flagged.status == "running" and flagged.cancel_requested
    _expire_lease(db, running)
    assert store.claim_job(running, "w2", 30) is None  # nobody picks up a job being cancelled
    store.mark_cancelled(running, "stopped", worker_id="w")
    assert store.get_job(running).status == "cancelled"
    with pytest.raises(RecordNotFound):
        store.request_cancel("missing")


# -- the sweeper's queries --------------------------------------------------------------------


def test_expired_leases_stale_queued_and_mark_enqueued(store: JobStore, db: Database) -> None:
    held, lost, fresh, old, never = (store.create_job(q) for q in "abcde")
    store.claim_job(held, "w", 60)
    store.claim_job(lost, "w", 60)
    _expire_lease(db, lost)
    assert [j.id for j in store.expired_leases(10)] == [lost]

    assert store.mark_enqueued([fresh, old, fresh]) == 2
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    with db.transaction() as s:
        s.execute(update(Job).where(Job.id == old).values(enqueued_at=long_ago))
        s.execute(update(Job).where(Job.id == never).values(created_at=long_ago - timedelta(seconds=1)))
    assert store.get_job(fresh).enqueued_at is not None
    assert [j.id for j in store.stale_queued(60, 10)] == [never, old]
    assert [j.id for j in store.stale_queued(60, 1)] == [never]
    assert store.mark_enqueued([old, never, "missing"]) == 2
    assert store.stale_queued(60, 10) == []
    assert store.mark_enqueued([]) == 0


# -- batches ----------------------------------------------------------------------------------


def _items(n: int) -> list[BatchItemIn]:
    return [BatchItemIn(question=f"question {i}?", external_id=f"ext-{i}", gold_answer=str(i))
            for i in range(n)]


def test_create_and_get_batch(store: JobStore) -> None:
    batch = store.create_batch(_items(5), mode="search", lane="train", priority=3, name="eval",
                               client_id="alice", settings={"policy": {"model": "m"}})
    assert (batch.name, batch.mode, batch.lane, batch.priority, batch.total) == (
        "eval", "search", "train", 3, 5)
    assert batch.counts["queued"] == 5 and batch.done == 0 and not batch.is_finished
    jobs, _ = store.list_jobs(batch_id=batch.id)
    assert [j.external_id for j in jobs] == [f"ext-{i}" for i in reversed(range(5))]  # file order kept
    assert {(j.lane, j.priority, j.client_id, j.mode) for j in jobs} == {("train", 3, "alice", "search")}
    assert jobs[0].settings == {"policy": {"model": "m"}} and jobs[0].gold_answer == "4"

    store.claim_job(jobs[0].id, "w", 30)
    store.mark_succeeded(jobs[0].id, "4", worker_id="w")
    store.request_cancel(jobs[1].id)
    got = store.get_batch(batch.id)
    assert got.counts == {"queued": 3, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 1}
    assert got.done == 2
    with pytest.raises(RecordNotFound):
        store.get_batch("missing")


def test_batch_submit_is_idempotent_and_validates_everything_first(store: JobStore, db: Database) -> None:
    first = store.create_batch(_items(3), client_id="alice", client_request_id="file-1")
    again = store.create_batch(_items(3), client_id="alice", client_request_id="file-1")
    assert again.id == first.id and _count(db, Job) == 3
    bad = [*_items(2), BatchItemIn(question="  ", external_id="blank")]
    with pytest.raises(StoreError, match="blank"):
        store.create_batch(bad)
    with pytest.raises(StoreError, match="no items"):
        store.create_batch([])
    with pytest.raises(StoreError, match="mode"):
        store.create_batch(_items(1), mode="essay")
    assert _count(db, Job) == 3


def test_ten_thousand_questions_in_one_bulk_insert(store: JobStore, db: Database) -> None:
    started = time.perf_counter()
    batch = store.create_batch(_items(10_000), lane="train", client_id="bulk")
    elapsed = time.perf_counter() - started
    print(f"\n{db.backend}: create_batch of 10,000 jobs took {elapsed:.2f} s")
    assert batch.total == 10_000 and batch.counts["queued"] == 10_000
    assert _count(db, Job, Job.batch_id == batch.id) == 10_000
    assert store.active_jobs("bulk") == 10_000


def test_cancel_batch(store: JobStore) -> None:
    batch = store.create_batch(_items(4))
    jobs, _ = store.list_jobs(batch_id=batch.id)
    store.claim_job(jobs[0].id, "w", 30)
    store.claim_job(jobs[1].id, "w", 30)
    store.mark_succeeded(jobs[1].id, "x", worker_id="w")
    got = store.cancel_batch(batch.id)
    assert got.counts == {"queued": 0, "running": 1, "succeeded": 1, "failed": 0, "cancelled": 2}
    assert store.get_job(jobs[0].id).cancel_requested and store.get_job(jobs[1].id).status == "succeeded"
    with pytest.raises(RecordNotFound):
        store.cancel_batch("missing")


def test_export_rows_streams_answers_reports_timings_and_traces(store: JobStore) -> None:
    batch = store.create_batch(_items(5), mode="report")
    jobs, _ = store.list_jobs(batch_id=batch.id)
    done = jobs[-1]  # the first item of the file
    store.claim_job(done.id, "w", 30)
    tid = store.start_trajectory(done.id, done.question, sample.PROMPT, "fathom-search-4b")
    store.finish_trajectory(tid, sample.trajectory())
    store.save_report(done.id, {"title": "t"}, "# Report\n")
    store.mark_succeeded(done.id, "Goodenough", worker_id="w")

    rows = list(store.export_rows(batch.id, chunk=2))
    assert [r["external_id"] for r in rows] == [f"ext-{i}" for i in range(5)]
    first = rows[0]
    assert (first["state"], first["answer"], first["report"], first["gold_answer"]) == (
        "succeeded", "Goodenough", "# Report\n", "0")
    assert first["created_at"] and first["started_at"] and first["finished_at"] and first["elapsed_s"] >= 0
    assert len(first["steps"]) == 3 and len(first["steps"][0]["tool_calls"]) == 3
    assert first["steps"][0]["tool_calls"][0]["name"] == "search_urls"
    assert "-Infinity" in first["steps"][0]["logprobs"]  # JSON-safe, as stored
    json.dumps(rows, allow_nan=False)
    assert rows[1]["state"] == "queued" and rows[1]["steps"] == [] and rows[1]["report"] is None
    assert list(store.export_rows("missing")) == []


# -- steps: idempotent delivery and progress -------------------------------------------------


def test_redelivered_step_from_two_threads_is_stored_once(store: JobStore, db: Database) -> None:
    job_id = store.create_job("q")
    tid = store.start_trajectory(job_id, "q", sample.PROMPT)
    first = sample.steps()[0]
    for _ in range(3):  # several rounds: each is a fresh race
        results = _at_once(2, lambda i: store.record_step(tid, first))
        assert sorted(results) in ([False, True], [False, False])
    assert _count(db, StepRecord, StepRecord.trajectory_id == tid) == 1
    assert _count(db, ToolCallRecord) == len(first.tool_calls)
    assert store.record_step(tid, first) is False
    assert store.job_progress(job_id) == (1, 3)
    store.record_step(tid, sample.steps()[1])
    assert store.job_progress(job_id) == (2, 3)
    assert store.job_progress("missing") == (0, 0)


# -- events -----------------------------------------------------------------------------------


def test_events_append_in_order_per_stream(store: JobStore) -> None:
    assert store.append_event("job:a", "state", {"state": "queued"}) == 0
    assert store.append_event("job:a", "step", {"index": 0, "text": "ü ✓"}) == 1
    assert store.append_event("job:b", "state", {}) == 0
    assert store.append_event("job:a", "done") == 2
    events = store.events_since("job:a", 0)
    assert [(e.index, e.kind) for e in events] == [(0, "state"), (1, "step"), (2, "done")]
    assert events[1].payload == {"index": 0, "text": "ü ✓"} and events[1].stream == "job:a"
    assert events[0].created_at.tzinfo is not None
    assert [e.index for e in store.events_since("job:a", 1)] == [1, 2]
    assert [e.index for e in store.events_since("job:a", 0, limit=2)] == [0, 1]
    assert store.events_since("job:a", 3) == [] and store.events_since("job:none", 0) == []


def test_bad_events_store_nothing(store: JobStore, db: Database) -> None:
    with pytest.raises(StoreError):
        store.append_event("job:a", "step", {"x": float("nan")})
    with pytest.raises(StoreError, match="stream"):
        store.append_event("", "step", {})
    with pytest.raises(StoreError, match="kind"):
        store.append_event("job:a", "", {})
    assert _count(db, JobEventRecord) == 0


def test_concurrent_writers_get_distinct_consecutive_indexes(store: JobStore) -> None:
    def write(i: int) -> list[int]:
        return [store.append_event("batch:x", "progress", {"writer": i, "n": n}) for n in range(10)]

    indexes = [i for chunk in _at_once(4, write) for i in chunk]
    assert sorted(indexes) == list(range(40))
    assert [e.index for e in store.events_since("batch:x", 0)] == list(range(40))


# -- migration 0002 ---------------------------------------------------------------------------


def test_migration_0002_maps_old_lanes_and_keeps_old_jobs_working(db_url: str) -> None:
    db = Database(db_url)
    try:
        db.migrate("0001")
        with db.engine.begin() as conn:
            for job_id, lane in (("old-i", "interactive"), ("old-t", "training")):
                conn.execute(
                    text("INSERT INTO jobs (id, kind, question, mode, status, lane, settings, created_at) "
                         "VALUES (:id, 'research', 'q', 'search', 'queued', :lane, '{}', :t)"),
                    {"id": job_id, "lane": lane, "t": datetime(2025, 1, 1)},
                )
        db.migrate()
        assert db.current_revision() == "0003"
        store = JobStore(db)
        old_i, old_t = store.get_job("old-i"), store.get_job("old-t")
        assert (old_i.lane, old_t.lane) == ("live", "train")
        assert (old_i.priority, old_i.client_id, old_i.attempts, old_i.cancel_requested) == (0, "", 0, False)
        with pytest.raises(IntegrityError), db.engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET lane = 'interactive' WHERE id = 'old-i'"))
        claimed = store.claim_job("old-t", "w", 30)
        assert claimed is not None and claimed.attempts == 1
        assert store.create_job("new", client_id="c", client_request_id="r") == store.create_job(
            "new", client_id="c", client_request_id="r")
        db.downgrade("0001")
        with db.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, lane FROM jobs WHERE id LIKE 'old-%'")).all()
        lanes = {job_id: lane for job_id, lane in rows}
        assert lanes == {"old-i": "interactive", "old-t": "training"}
    finally:
        db.dispose()
