"""Trajectories, steps and tool calls: exact round trips, idempotent step delivery."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import pytest
from fathom.agent.trajectory import Step, ToolCall
from fathom.core.errors import StoreError
from fathom.store import JobStore
from fathom.store.models import StepRecord, ToolCallRecord
from sqlalchemy import func, select

from . import sample


def _job_and_trajectory(store: JobStore) -> tuple[str, str]:
    job_id = store.create_job(sample.QUESTION, "report", {"policy": {"model": "x"}}, "interactive")
    tid = store.start_trajectory(job_id, sample.QUESTION, sample.PROMPT, "fathom-search-4b")
    return job_id, tid


def test_round_trip_is_exact(store: JobStore) -> None:
    job_id, tid = _job_and_trajectory(store)
    traj = sample.trajectory()
    for step in traj.steps:
        assert store.record_step(tid, step) is True
    store.finish_trajectory(tid, traj)

    loaded = store.load_trajectory(job_id)
    assert loaded is not None
    assert loaded == traj
    assert loaded.to_dict() == traj.to_dict()
    # The details that a lossy store would get wrong:
    first = loaded.steps[0]
    assert first.logprobs is not None and first.logprobs[2] == -math.inf
    assert math.copysign(1.0, first.logprobs[3]) == -1.0  # -0.0 stays negative zero
    assert first.logprobs[0] == -0.0123456789012345
    assert first.token_ids == [151644, 77091, 198, 13, 0, 2**31 - 1]
    assert first.tool_calls[1].result == sample.BIG_PAGE and len(first.tool_calls[1].result) > 1_000_000
    assert first.tool_calls[2].name is None and first.tool_calls[2].error
    assert first.meta == {"format_errors": ["invalid json"], "guided_phases": ["search"]}
    assert loaded.steps[2].token_ids is None and loaded.steps[2].logprobs is None
    assert [c.index for c in loaded.tool_calls] == [0, 1, 2]
    assert store.load_trajectory_by_id(tid) == traj


def test_record_step_is_idempotent(store: JobStore, db) -> None:  # type: ignore[no-untyped-def]
    job_id, tid = _job_and_trajectory(store)
    step = sample.steps()[0]
    assert store.record_step(tid, step) is True
    assert store.record_step(tid, step) is False
    # A re-delivery carrying different content keeps the first stored version.
    assert store.record_step(tid, replace(step, text="changed", tool_calls=[])) is False
    loaded = store.load_trajectory(job_id)
    assert loaded is not None and loaded.steps == [step]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(StepRecord)) == 1
        assert s.scalar(select(func.count()).select_from(ToolCallRecord)) == 3


def test_concurrent_redelivery_stores_one_copy(store: JobStore, db) -> None:  # type: ignore[no-untyped-def]
    job_id, tid = _job_and_trajectory(store)
    step = sample.steps()[0]
    results: list[bool] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            results.append(store.record_step(tid, step))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(results) == [False] * 5 + [True]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ToolCallRecord)) == 3
    loaded = store.load_trajectory(job_id)
    assert loaded is not None and loaded.steps == [step]


def test_steps_load_in_index_order_and_partial_trajectory_resumes(store: JobStore) -> None:
    job_id, tid = _job_and_trajectory(store)
    steps = sample.steps()
    store.record_step(tid, steps[1])
    store.record_step(tid, steps[0])
    partial = store.load_trajectory(job_id)
    assert partial is not None
    assert [s.index for s in partial.steps] == [0, 1]
    assert partial.answer is None and partial.stop_reason is None  # not finished yet
    assert partial.question == sample.QUESTION and partial.prompt == sample.PROMPT
    assert partial.model == "fathom-search-4b"

    # finish_trajectory stores what is missing (step 2) without duplicating the rest.
    traj = sample.trajectory()
    store.finish_trajectory(tid, traj)
    assert store.load_trajectory(job_id) == traj


def test_latest_trajectory_and_ids(store: JobStore) -> None:
    job_id, first = _job_and_trajectory(store)
    second = store.start_trajectory(job_id, "q2", "p2", "m2")
    store.record_step(second, Step(index=0, text="t", think=None, tool_calls=[], answer="a"))
    assert store.trajectory_ids(job_id) == [first, second]
    latest = store.load_trajectory(job_id)
    assert latest is not None and latest.question == "q2" and latest.steps[0].answer == "a"


def test_job_without_trajectory_loads_none(store: JobStore) -> None:
    job_id = store.create_job("q", "search")
    assert store.load_trajectory(job_id) is None
    assert store.trajectory_ids(job_id) == []


def test_bad_references_and_bad_steps_raise_store_error(store: JobStore) -> None:
    with pytest.raises(StoreError, match="no job"):
        store.start_trajectory("nope", "q", "p", "m")
    with pytest.raises(StoreError, match="no such trajectory"):
        store.record_step("nope", sample.steps()[2])
    with pytest.raises(StoreError, match="no such trajectory"):
        store.finish_trajectory("nope", sample.trajectory())
    with pytest.raises(StoreError, match="no trajectory"):
        store.load_trajectory_by_id("nope")

    job_id, tid = _job_and_trajectory(store)
    call = ToolCall(index=0, name="search_urls", arguments={}, raw="")
    with pytest.raises(StoreError, match="repeat"):
        store.record_step(tid, Step(index=0, text="", think=None, tool_calls=[call, call], answer=None))
    # Not JSON (NaN in meta): a clear error, and nothing half-written.
    bad = Step(index=0, text="", think=None, tool_calls=[replace(call, meta={"x": math.nan})], answer=None)
    with pytest.raises(StoreError, match="recording step 0"):
        store.record_step(tid, bad)
    traj = store.load_trajectory(job_id)
    assert traj is not None and traj.steps == []
    assert store.record_step(tid, replace(bad, tool_calls=[call])) is True


def test_nul_characters_are_stored_as_replacement_on_every_backend(store: JobStore) -> None:
    job_id, tid = _job_and_trajectory(store)
    call = ToolCall(index=0, name="query_url", arguments={"url": "x\x00y"}, raw="r\x00",
                    result="page\x00text", meta={"k\x00": "v\x00"})
    store.record_step(tid, Step(index=0, text="a\x00b", think=None, tool_calls=[call], answer=None))
    loaded = store.load_trajectory(job_id)
    assert loaded is not None
    step = loaded.steps[0]
    assert step.text == "a\ufffdb"
    assert step.tool_calls[0].result == "page\ufffdtext"
    assert step.tool_calls[0].arguments == {"url": "x\ufffdy"}
    assert step.tool_calls[0].meta == {"k\ufffd": "v\ufffd"}
