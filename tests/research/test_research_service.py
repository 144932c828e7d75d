"""``ResearchService`` against a real store (SQLite and PostgreSQL), a scripted policy and a real
in-memory tool runner: steps persist as they complete, failures are recorded, dead workers resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Step, Trajectory
from fathom.core.config import AgentSettings
from fathom.core.errors import InvalidArgument, StoreError
from fathom.models.base import SamplingParams
from fathom.research.events import ProgressEvent
from fathom.research.service import ResearchService
from fathom.store.db import Database
from fathom.store.repository import JobStore

from tests.agent.agent_scripted import InMemoryTools, ScriptedBackend

SEARCH = ('\nLet me search.\n</think>\n\n<tool_call>\n{"name": "search_urls", "arguments": '
          '{"query": "K2 first ascent"}}\n</tool_call>')
READ = ('\nRead the K2 page.\n</think>\n\n<tool_call>\n{"name": "query_url", "arguments": '
        '{"url": "https://mountains.example/k2", "goal": "first ascent"}}\n</tool_call>')
ANSWER = "\nThe page says 1954.\n</think>\n\n\\boxed{Lino Lacedelli and Achille Compagnoni}"
QUESTION = "Who made the first ascent of K2?"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fathom.db'}"
    else:
        url = request.getfixturevalue("make_postgres_db")()
    db = Database(url)
    db.migrate()
    yield JobStore(db)
    db.dispose()


def service(store: JobStore, script: list[str], tmp_path: Path) -> ResearchService:
    agent = AgentLoop(ScriptedBackend(script), InMemoryTools(), AgentSettings(), SamplingParams())
    return ResearchService(store=store, agent=agent, synthesizer=None, reports_dir=tmp_path / "reports")


async def test_search_job_persists_every_step_and_streams_progress(store: JobStore, tmp_path: Path) -> None:
    svc = service(store, [SEARCH, READ, ANSWER], tmp_path)
    job_id = await svc.submit(QUESTION, "search")
    events: list[ProgressEvent] = []
    result = await svc.run(job_id, on_event=events.append)

    assert result.answer == "Lino Lacedelli and Achille Compagnoni"
    job = store.get_job(job_id)
    assert job.status == "succeeded" and job.answer == result.answer
    stored = store.load_trajectory(job_id)
    assert stored is not None
    assert [c.name for c in stored.tool_calls] == ["search_urls", "query_url"]
    assert all(c.ok for c in stored.tool_calls)
    assert "1954" in (stored.tool_calls[1].result or "")
    kinds = [e.kind for e in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_done" and kinds.count("step") == 3
    step_events = [e for e in events if e.kind == "step"]
    assert step_events[0].tool_calls == [
        {"name": "search_urls", "target": "K2 first ascent", "ok": True, "error": None}]


async def test_a_failing_model_marks_the_job_and_keeps_its_steps(store: JobStore, tmp_path: Path) -> None:
    svc = service(store, [SEARCH], tmp_path)  # the script runs out: the backend raises ModelError
    job_id = await svc.submit(QUESTION, "search")
    result = await svc.run(job_id)
    # The loop records a model failure as the trajectory's end, not as an exception.
    assert result.trajectory.stop_reason == "error"
    job = store.get_job(job_id)
    assert job.status == "failed" and job.error and "script exhausted" in job.error
    stored = store.load_trajectory(job_id)
    assert stored is not None and len(stored.steps) == 1


async def test_a_dead_workers_job_resumes_from_its_last_step(store: JobStore, tmp_path: Path) -> None:
    first = service(store, [SEARCH, READ, ANSWER], tmp_path)
    job_id = await first.submit(QUESTION, "search")
    # The first worker ran one step, persisted it, then died.
    store.mark_running(job_id, worker_id="dead-worker")
    traj: Trajectory = first.agent.new_trajectory(QUESTION, "search")
    partial = await AgentLoop(ScriptedBackend([SEARCH]), InMemoryTools(), AgentSettings(max_turns=1),
                              SamplingParams()).run(QUESTION, resume=traj)
    tid = store.start_trajectory(job_id, QUESTION, partial.prompt, "scripted")
    step: Step = partial.steps[0]
    store.record_step(tid, step)

    # A new worker picks the job up: only the remaining turns are generated.
    backend = ScriptedBackend([READ, ANSWER])
    second = ResearchService(
        store=store,
        agent=AgentLoop(backend, InMemoryTools(), AgentSettings(), SamplingParams()),
        synthesizer=None, reports_dir=tmp_path,
    )
    result = await second.run(job_id)
    assert result.answer == "Lino Lacedelli and Achille Compagnoni"
    assert len(backend.requests) == 2
    stored = store.load_trajectory(job_id)
    assert stored is not None and [s.index for s in stored.steps] == [0, 1, 2]
    assert store.trajectory_ids(job_id) == [tid]


async def test_ended_jobs_and_empty_questions_are_refused(store: JobStore, tmp_path: Path) -> None:
    svc = service(store, [ANSWER], tmp_path)
    with pytest.raises(InvalidArgument, match="empty"):
        await svc.submit("   ", "search")
    with pytest.raises(InvalidArgument, match="mode"):
        await svc.submit(QUESTION, "essay")  # type: ignore[arg-type]
    job_id = await svc.submit(QUESTION, "search")
    await svc.run(job_id)
    with pytest.raises(StoreError, match="already ended"):
        await svc.run(job_id)
