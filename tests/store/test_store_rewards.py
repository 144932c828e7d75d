"""Rewards stored with their trajectory: one per (trajectory, stage), the breakdown kept exactly,
idempotent under redelivery and concurrent writers, gone with the trajectory's job."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fathom.core.errors import StoreError
from fathom.store import Database, JobStore
from sqlalchemy import inspect

from . import sample


def _trajectory(store: JobStore) -> str:
    job_id = store.create_job(sample.QUESTION, "search", lane="train")
    tid = store.start_trajectory(job_id, sample.QUESTION, sample.PROMPT, "fathom-search-4b")
    store.finish_trajectory(tid, sample.trajectory())
    return tid


def _breakdown(stage: int, reward: float, **extra: Any) -> dict[str, Any]:
    # The shape of RewardBreakdown.to_dict(): every term, labels as dicts, unicode and floats kept.
    return {
        "reward": reward, "r_format": 1.0, "verdict": "incorrect", "correct": False, "exact_match": 0.0,
        "f1": 0.2857142857142857, "stage": stage, "tool_calls": 3, "rho": 1 / 3, "d_s": 1, "d_q": -1,
        "counts": {"UNIQUE_SEARCH": 1, "REDUNDANT_SEARCH": 0, "EXPLORATION": 1, "VERIFICATION": 0,
                   "REDUNDANT_QUERY": 1},
        "labels": [{"step": 0, "index": 0, "label": "UNIQUE_SEARCH"},
                   {"step": 0, "index": 1, "label": "EXPLORATION"}],
        "terms": {"format": 0.1, "search": 0.025, "query": 0.0},
        "judge_model": "exact", "labeller": "embedding", "note": "Lithium-Ionen-Akkus 🔋", **extra,
    }


def test_save_and_read_back_exactly(store: JobStore) -> None:
    tid = _trajectory(store)
    first = _breakdown(1, 0.1)
    second = _breakdown(2, 0.125)
    assert store.save_reward(tid, second) is True
    assert store.save_reward(tid, first) is True
    rewards = store.get_rewards(tid)
    assert [(r.stage, r.reward) for r in rewards] == [(1, 0.1), (2, 0.125)]
    assert rewards[0].breakdown == first and rewards[1].breakdown == second
    assert rewards[1].breakdown["rho"] == 1 / 3  # a float survives JSON / JSONB exactly
    assert all(r.trajectory_id == tid and r.created_at.tzinfo is not None for r in rewards)
    assert store.get_reward(tid, 2) == rewards[1]
    assert store.get_rewards("no-such-trajectory") == []


def test_a_repeat_stores_nothing_and_keeps_the_first(store: JobStore) -> None:
    tid = _trajectory(store)
    assert store.save_reward(tid, _breakdown(1, 0.1)) is True
    assert store.save_reward(tid, _breakdown(1, 1.0, verdict="correct")) is False
    (only,) = store.get_rewards(tid)
    assert (only.reward, only.breakdown["verdict"]) == (0.1, "incorrect")


def test_concurrent_writers_store_one(store: JobStore) -> None:
    tid = _trajectory(store)
    results: list[bool] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            results.append(store.save_reward(tid, _breakdown(2, 0.5 + i / 100)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [False] * 5 + [True]
    assert len(store.get_rewards(tid)) == 1


@pytest.mark.parametrize("bad", [
    {"reward": 0.5},  # no stage
    {"reward": 0.5, "stage": 3},
    {"reward": 0.5, "stage": True},
    {"reward": float("nan"), "stage": 1},
    {"reward": float("inf"), "stage": 1},
    {"reward": "0.5", "stage": 1},
    {"stage": 1},
])
def test_bad_breakdowns_are_refused(store: JobStore, bad: dict[str, Any]) -> None:
    tid = _trajectory(store)
    with pytest.raises(StoreError):
        store.save_reward(tid, bad)
    assert store.get_rewards(tid) == []


def test_unknown_trajectory_is_a_store_error(store: JobStore) -> None:
    with pytest.raises(StoreError, match="no such trajectory"):
        store.save_reward("missing", _breakdown(1, 0.1))


def test_rewards_go_with_the_job(store: JobStore, db: Database) -> None:
    tid = _trajectory(store)
    store.save_reward(tid, _breakdown(1, 0.1))
    job_id = store.get_job(store.list_jobs()[0][0].id).id
    from fathom.store.models import Job

    with db.transaction() as s:
        s.delete(s.get(Job, job_id))
    assert store.get_rewards(tid) == []


def test_migration_0003_adds_and_drops_the_table(db_url: str) -> None:
    db = Database(db_url)
    try:
        db.migrate("0002")
        assert "rewards" not in inspect(db.engine).get_table_names()
        db.migrate()
        assert db.current_revision() == "0003"
        assert "rewards" in inspect(db.engine).get_table_names()
        store = JobStore(db)
        tid = _trajectory(store)
        assert store.save_reward(tid, _breakdown(1, 0.1)) is True
        db.downgrade("0002")
        assert "rewards" not in inspect(db.engine).get_table_names()
        assert store.load_trajectory_by_id(tid).answer == sample.trajectory().answer
    finally:
        db.dispose()
