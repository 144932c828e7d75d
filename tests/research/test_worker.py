"""The research worker and the event bus on a real store (SQLite and PostgreSQL) and real Redis:
one claim at a time, a killed run resumes without duplicate steps, the sweeper requeues, cancel
over ``fathom:cancel`` reaches a running job, and a reconnecting watcher misses no event."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fathom.agent.trajectory import Trajectory
from fathom.core.errors import FailedPrecondition
from fathom.queue.cancel import CancelBus
from fathom.research.bus import EventBus, job_stream
from fathom.research.sweeper import Sweeper
from fathom.research.worker import LocalTrajectoryRunner, SynthesisDone, run_job
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
    wait_for,
)


def step_indexes(store: JobStore, job_id: str) -> list[int]:
    traj = store.load_trajectory(job_id)
    return [] if traj is None else [s.index for s in traj.steps]


async def test_two_workers_on_one_job_run_it_once(store: JobStore) -> None:
    job_id = store.create_job(QUESTION, "search")
    b1, b2 = ScriptedBackend([SEARCH, READ, ANSWER], delay_s=0.05), ScriptedBackend([SEARCH, READ, ANSWER],
                                                                                    delay_s=0.05)
    states = await asyncio.gather(run_job(job_id, context(store, b1, worker_id="w1")),
                                  run_job(job_id, context(store, b2, worker_id="w2")))
    assert sorted(states) == ["running", "succeeded"] or states == ["succeeded", "succeeded"]
    # Exactly one of them generated: the other found the job claimed (or already ended).
    assert sorted([len(b1.requests), len(b2.requests)]) == [0, 3]
    assert step_indexes(store, job_id) == [0, 1, 2] and len(store.trajectory_ids(job_id)) == 1
    assert store.get_job(job_id).status == "succeeded"
    assert await run_job(job_id, context(store, ScriptedBackend([]), worker_id="w3")) == "succeeded"


async def test_a_killed_run_is_swept_and_resumes_from_its_steps(store: JobStore, tmp_path: Path) -> None:
    job_id = store.create_job(QUESTION, "search")
    first = ScriptedBackend([SEARCH, READ, ANSWER], delay_s=0.3)
    dying = asyncio.create_task(run_job(job_id, context(store, first, worker_id="dies", lease_s=0.6)))
    await wait_for(lambda: step_indexes(store, job_id) == [0], "the first step to be recorded")
    dying.cancel()  # the worker process dies: nothing marks the job
    with pytest.raises(asyncio.CancelledError):
        await dying
    assert store.get_job(job_id).status == "running"

    enqueuer = RecordingEnqueuer()
    bus = EventBus(store, None)
    sweeper = Sweeper(store, enqueuer, settings(tmp_path, requeue_after_s=60.0), bus=bus)
    await wait_for(lambda: bool(store.expired_leases(10)), "the dead worker's lease to expire")
    counts = await sweeper.sweep_once()
    assert counts["expired_leases"] == 1 and enqueuer.ids == [job_id]
    assert (await sweeper.sweep_once())["expired_leases"] == 0  # requeued recently: not again

    second = ScriptedBackend([READ, ANSWER])
    assert await run_job(job_id, context(store, second, worker_id="resumes")) == "succeeded"
    assert len(second.requests) == 2  # only the turns after the recorded step
    assert step_indexes(store, job_id) == [0, 1, 2] and len(store.trajectory_ids(job_id)) == 1
    job = store.get_job(job_id)
    assert job.answer == ANSWER_TEXT and job.attempts == 2 and job.worker_id == "resumes"
    kinds = [e.kind for e in store.events_since(job_stream(job_id), 0)]
    assert "job_requeued" in kinds and kinds[-1] == "job_done"
    started = [e for e in store.events_since(job_stream(job_id), 0) if e.kind == "job_started"]
    assert [e.payload["data"]["resumed_steps"] for e in started] == [0, 1]


async def test_the_sweeper_requeues_lost_queued_jobs_once(store: JobStore, tmp_path: Path) -> None:
    job_id = store.create_job(QUESTION, "search", lane="train")  # its message never reached a broker
    store.mark_enqueued([job_id])
    enqueuer = RecordingEnqueuer()
    sweeper = Sweeper(store, enqueuer, settings(tmp_path, requeue_after_s=0.2))
    assert (await sweeper.sweep_once())["stale_queued"] == 0  # enqueued just now
    await wait_for(lambda: bool(store.stale_queued(0.2, 10)), "the message to count as lost")
    assert (await sweeper.sweep_once())["stale_queued"] == 1
    assert enqueuer.calls == [([job_id], "train")]
    assert (await sweeper.sweep_once())["stale_queued"] == 0  # enqueued again just now
    assert store.get_job(job_id).enqueued_at is not None


async def test_a_deadline_fails_the_job(store: JobStore) -> None:
    job_id = store.create_job(QUESTION, "search", deadline_s=0.3)
    backend = ScriptedBackend(lambda i, prompt: SEARCH, delay_s=0.1)
    assert await run_job(job_id, context(store, backend)) == "failed"
    job = store.get_job(job_id)
    assert job.error is not None and job.error.startswith("DEADLINE_EXCEEDED")
    assert store.events_since(job_stream(job_id), 0)[-1].kind == "job_failed"


async def test_cancel_over_redis_reaches_the_running_job(store: JobStore, redis_url: str) -> None:
    job_id = store.create_job(QUESTION, "search")
    backend = ScriptedBackend(lambda i, prompt: SEARCH, delay_s=0.1)
    ctx = context(store, backend, redis_url=redis_url, lease_s=60.0, cancel_poll_s=60.0)
    run = asyncio.create_task(run_job(job_id, ctx))
    await wait_for(lambda: len(step_indexes(store, job_id)) >= 2, "two steps")
    store.request_cancel(job_id)
    bus = CancelBus(redis_url)
    try:
        bus.request(job_id)  # with the lease and the flag poll a minute away, only Redis can stop it
    finally:
        bus.close()
    assert await asyncio.wait_for(run, 30) == "cancelled"
    assert store.events_since(job_stream(job_id), 0)[-1].kind == "job_cancelled"


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "polling"])
async def test_a_reconnecting_watcher_misses_nothing(store: JobStore, request: pytest.FixtureRequest,
                                                     with_redis: bool) -> None:
    redis_url = request.getfixturevalue("redis_url") if with_redis else None
    stream = f"job:watch-{time.monotonic_ns()}"
    publisher = EventBus(store, redis_url)
    watcher = EventBus(store, redis_url, poll_s=0.2)
    total = 40

    def produce() -> None:
        for i in range(total):
            publisher.publish(stream, "step", {"turn": i})
            time.sleep(0.01)
        publisher.publish(stream, "job_done", {"turn": total})

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        seen: list[int] = []
        async for event in watcher.watch(stream, 0):
            seen.append(event.index)
            if len(seen) == 10:
                break  # the client drops its connection mid-stream...
        await asyncio.sleep(0.1)
        async for event in watcher.watch(stream, seen[-1] + 1):  # ...and reconnects from its next index
            seen.append(event.index)
    finally:
        thread.join()
        publisher.close()
        watcher.close()
    assert seen == list(range(total + 1))
    assert [e.payload["turn"] for e in store.events_since(stream, 0, 100)] == list(range(total + 1))


class _StallingSynthesis:
    """A synthesis step that never ends (the worker dies in it); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def synthesize(self, job_id: str, question: str, traj: Trajectory) -> SynthesisDone:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class _RecordingSynthesis:
    def __init__(self) -> None:
        self.seen: list[Trajectory] = []

    async def synthesize(self, job_id: str, question: str, traj: Trajectory) -> SynthesisDone:
        self.seen.append(traj)
        return SynthesisDone(words=3, invalid_citations_removed=0)


@pytest.mark.parametrize("stored_end", [True, False], ids=["end-stored", "only-the-last-step"])
async def test_a_job_that_dies_after_its_trajectory_ended_goes_straight_to_synthesis(
        store: JobStore, tmp_path: Path, stored_end: bool) -> None:
    """The worker died in synthesis (or between recording the answering step and storing the end):
    the requeued job must not ask the policy for more turns (the PolicyService refuses an ended
    trajectory with FAILED_PRECONDITION); it synthesizes what was recorded and succeeds."""
    job_id = store.create_job(QUESTION, "report")
    stalling = _StallingSynthesis()
    ctx = context(store, ScriptedBackend([SEARCH, READ, ANSWER]), worker_id="dies", lease_s=0.6)
    ctx.synthesis = stalling
    dying = asyncio.create_task(run_job(job_id, ctx))
    await wait_for(lambda: stalling.calls == 1, "the first worker to reach synthesis")
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying
    tid = store.trajectory_ids(job_id)[-1]
    if not stored_end:  # as if it died before finish_trajectory: only the steps are there
        stored = store.load_trajectory_by_id(tid)
        stored.stop_reason, stored.answer = None, None
        store.finish_trajectory(tid, stored)
    await wait_for(lambda: bool(store.expired_leases(10)), "the dead worker's lease to expire")

    class _NoMoreTurns(LocalTrajectoryRunner):
        async def run(self, *args: object, **kwargs: object) -> Trajectory:
            raise FailedPrecondition("the trajectory has already ended: its last step made no tool call")

    second = context(store, ScriptedBackend([]), worker_id="resumes")
    second.runner = _NoMoreTurns(second.runner.agent)  # type: ignore[attr-defined]
    recording = _RecordingSynthesis()
    second.synthesis = recording
    assert await run_job(job_id, second) == "succeeded"
    assert [len(t.steps) for t in recording.seen] == [3] and recording.seen[0].answer == ANSWER_TEXT
    assert recording.seen[0].stop_reason == "answered"
    job = store.get_job(job_id)
    assert job.answer == ANSWER_TEXT and job.worker_id == "resumes"
    assert step_indexes(store, job_id) == [0, 1, 2] and len(store.trajectory_ids(job_id)) == 1
    assert store.load_trajectory_by_id(tid).stop_reason == "answered"
