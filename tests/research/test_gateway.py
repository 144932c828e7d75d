"""``JobGateway`` on a real store (SQLite and PostgreSQL): validation before persistence, idempotent
submits, quotas, bulk batches, and jobs run end to end by the in-process ``LocalEnqueuer``."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from fathom.core.errors import InvalidArgument, NotFound, QuotaExceeded
from fathom.research.bus import EventBus
from fathom.research.gateway import JobGateway, LocalEnqueuer
from fathom.store.records import BatchItemIn
from fathom.store.repository import JobStore

from tests.agent.agent_scripted import ScriptedBackend
from tests.research.plane_helpers import (
    ANSWER,
    ANSWER_TEXT,
    QUESTION,
    READ,
    SEARCH,
    RecordingEnqueuer,
    context,
    settings,
)


def total_jobs(store: JobStore) -> int:
    return sum(store.job_counts().values())


def gateway(store: JobStore, tmp_path: Path, **plane: object) -> tuple[JobGateway, RecordingEnqueuer]:
    enqueuer = RecordingEnqueuer()
    return JobGateway(store, EventBus(store, None), enqueuer, settings(tmp_path, **plane)), enqueuer


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"question": "   "}, "QUESTION_EMPTY"),
    ({"question": "\x00\x01 ?!"}, "QUESTION_NO_TEXT"),
    ({"question": "x" * 101}, "QUESTION_TOO_LONG"),
    ({"mode": "essay"}, "MODE_UNKNOWN"),
    ({"lane": "interactive"}, "LANE_UNKNOWN"),
    ({"priority": 10}, "PRIORITY_OUT_OF_RANGE"),
    ({"priority": -1}, "PRIORITY_OUT_OF_RANGE"),
    ({"deadline_s": -5.0}, "DEADLINE_NEGATIVE"),
])
async def test_bad_submits_are_refused_and_persist_nothing(
    store: JobStore, tmp_path: Path, kwargs: dict[str, object], reason: str
) -> None:
    gw, enqueuer = gateway(store, tmp_path, max_question_chars=100)
    request: dict[str, object] = {"question": QUESTION, **kwargs}
    with pytest.raises(InvalidArgument) as err:
        await gw.submit(**request)  # type: ignore[arg-type]
    assert err.value.reason == reason
    assert err.value.metadata["field"] in ("question", "mode", "lane", "priority", "deadline_s")
    assert total_jobs(store) == 0 and enqueuer.calls == []


async def test_ids_are_checked_and_unknown_ones_not_found(store: JobStore, tmp_path: Path) -> None:
    gw, _ = gateway(store, tmp_path)
    with pytest.raises(InvalidArgument, match="not a valid id"):
        await gw.get("not-a-uuid")
    with pytest.raises(NotFound):
        await gw.get(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await gw.cancel(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        async for _ in gw.watch(str(uuid.uuid4())):
            pass
    with pytest.raises(InvalidArgument):
        await gw.get_batch("1234")


async def test_a_repeated_client_request_id_returns_the_same_job(store: JobStore, tmp_path: Path) -> None:
    gw, enqueuer = gateway(store, tmp_path)
    first = await gw.submit(QUESTION, "search", client_id="alice", client_request_id="req-1")
    again = await gw.submit(QUESTION, "search", client_id="alice", client_request_id="req-1")
    other = await gw.submit(QUESTION, "search", client_id="bob", client_request_id="req-1")
    assert again.id == first.id and other.id != first.id
    assert first.enqueued_at is not None and first.lane == "live"
    assert enqueuer.ids == [first.id, other.id]  # the repeat is not queued twice
    assert total_jobs(store) == 2


async def test_the_client_quota_counts_queued_and_running_jobs(store: JobStore, tmp_path: Path) -> None:
    gw, _ = gateway(store, tmp_path, client_running_quota=2)
    a = await gw.submit(QUESTION, client_id="alice")
    await gw.submit(QUESTION, client_id="alice")
    with pytest.raises(QuotaExceeded) as err:
        await gw.submit(QUESTION, client_id="alice")
    assert err.value.metadata["client_id"] == "alice"
    await gw.submit(QUESTION, client_id="bob")  # another client is not affected
    await gw.cancel(a.id)  # a queued job ends at once and frees its place
    await gw.submit(QUESTION, client_id="alice")
    assert total_jobs(store) == 4


async def test_batches_are_validated_before_anything_is_stored(store: JobStore, tmp_path: Path) -> None:
    gw, enqueuer = gateway(store, tmp_path, max_batch_items=3)
    with pytest.raises(QuotaExceeded):
        await gw.submit_batch(["q1", "q2", "q3", "q4"])
    with pytest.raises(InvalidArgument) as err:
        await gw.submit_batch(["q1", {"question": "  "}, "q3"])
    assert err.value.metadata["index"] == "1" and err.value.metadata["field"] == "items[1].question"
    assert total_jobs(store) == 0 and enqueuer.calls == []


async def test_a_batch_of_ten_thousand_is_one_bulk_insert(store: JobStore, tmp_path: Path) -> None:
    gw, enqueuer = gateway(store, tmp_path)
    items = [BatchItemIn(f"question number {i}?", external_id=f"q{i}") for i in range(10_000)]
    t0 = time.perf_counter()
    batch = await gw.submit_batch(items, mode="search", lane="train", name="bulk", client_id="trainer",
                                  client_request_id="bulk-1")
    elapsed = time.perf_counter() - t0
    print(f"\n10,000-question batch accepted in {elapsed:.2f} s ({store.db.backend})")
    assert batch.total == 10_000 and batch.counts["queued"] == 10_000
    assert len(set(enqueuer.ids)) == 10_000 and {lane for _, lane in enqueuer.calls} == {"train"}
    again = await gw.submit_batch(items, mode="search", lane="train", client_id="trainer",
                                  client_request_id="bulk-1")
    assert again.id == batch.id and len(enqueuer.ids) == 10_000  # idempotent, nothing re-queued
    page, token = await gw.list(state="queued", lane="train", page_size=1000, batch_id=batch.id)
    assert len(page) == 1000 and token


async def test_a_submitted_job_runs_and_its_watch_sees_every_event(store: JobStore, tmp_path: Path) -> None:
    backend = ScriptedBackend([SEARCH, READ, ANSWER])
    ctx = context(store, backend)
    enqueuer = LocalEnqueuer(ctx)
    gw = JobGateway(store, ctx.bus, enqueuer, settings(tmp_path))
    job = await gw.submit(QUESTION, "search", client_id="alice")
    events = [e async for e in gw.watch(job.id)]
    await enqueuer.drain()
    kinds = [e.kind for e in events]
    assert kinds == ["job_started", "step", "step", "step", "job_done"]
    assert [e.index for e in events] == list(range(5))
    assert events[1].payload["tool_calls"] == [
        {"name": "search_urls", "target": "K2 first ascent", "ok": True, "error": None}]
    assert events[-1].payload["state"] == "succeeded" and events[-1].payload["message"] == ANSWER_TEXT
    done = await gw.get(job.id)
    assert done.status == "succeeded" and done.answer == ANSWER_TEXT and done.worker_id == "w1"
    # A late watcher from index 3 gets the rest, and ends.
    assert [e.kind for e in [e async for e in gw.watch(job.id, 3)]] == ["step", "job_done"]


async def test_cancel_reaches_a_running_job_without_redis(store: JobStore, tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda i, prompt: SEARCH, delay_s=0.2)  # searches forever
    ctx = context(store, backend, cancel_poll_s=0.1)
    enqueuer = LocalEnqueuer(ctx)
    gw = JobGateway(store, ctx.bus, enqueuer, settings(tmp_path))
    job = await gw.submit(QUESTION, "search")
    seen = []
    async for event in gw.watch(job.id):
        seen.append(event.kind)
        if event.kind == "step" and "cancel" not in seen:
            seen.append("cancel")
            flagged = await gw.cancel(job.id)
            assert flagged.status == "running" and flagged.cancel_requested
    await enqueuer.drain()
    assert seen[-1] == "job_cancelled"
    assert (await gw.get(job.id)).status == "cancelled"
    traj = store.load_trajectory(job.id)
    assert traj is not None and traj.stop_reason == "cancelled" and len(traj.steps) >= 1


async def test_cancelling_a_queued_job_ends_it_and_its_watch(store: JobStore, tmp_path: Path) -> None:
    gw, _ = gateway(store, tmp_path)
    job = await gw.submit(QUESTION)
    cancelled = await gw.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert [e.kind for e in [e async for e in gw.watch(job.id)]] == ["job_cancelled"]
    assert (await gw.cancel(job.id)).status == "cancelled"  # repeating it changes nothing


async def test_a_batch_runs_to_its_end_and_its_watch_ends(store: JobStore, tmp_path: Path) -> None:
    backend = ScriptedBackend(lambda i, prompt: ANSWER)
    ctx = context(store, backend)
    enqueuer = LocalEnqueuer(ctx)
    gw = JobGateway(store, ctx.bus, enqueuer, settings(tmp_path))
    batch = await gw.submit_batch(["q one?", "q two?", "q three?"], mode="search")
    events = [e async for e in gw.watch_batch(batch.id)]
    await enqueuer.drain()
    ended = [e.payload["job_id"] for e in events if e.kind == "job_ended"]
    assert sorted(ended) == sorted(set(ended)) and len(ended) == 3
    assert "batch_done" in [e.kind for e in events]
    info = await gw.get_batch(batch.id)
    assert info.counts["succeeded"] == 3 and info.is_finished
    assert (await asyncio.to_thread(store.get_batch, batch.id)).done == 3
