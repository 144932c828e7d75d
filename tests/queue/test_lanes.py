"""Lanes: a worker of both lanes takes every live message before any train message, and train work
runs whenever no live work waits (measured order: the start times the worker records)."""

from __future__ import annotations

import time
import uuid

from celery import Celery
from fathom.core.config import Settings
from fathom.queue.names import queue_name, worker_queues
from fathom.queue.results import ToolResultStore

from tests.queue.conftest import WorkerFactory


def _send(app: Celery, lane: str, call_id: str, query: str) -> None:
    q = queue_name("search", lane)
    app.send_task("fathom.tools.search_urls", kwargs={"call_id": call_id, "query": query, "top_k": 2},
                  queue=q, routing_key=q)


def _collect(store: ToolResultStore, call_ids: list[str], timeout: float) -> dict[str, dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    found: dict[str, dict] = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline and len(found) < len(call_ids):
        for call_id in call_ids:
            if call_id not in found and (record := store.get(call_id)) is not None:
                found[call_id] = record
        time.sleep(0.05)
    return found


def test_live_before_train_and_train_not_starved(
    settings: Settings, celery_app: Celery, thread_worker: WorkerFactory
) -> None:
    tag = uuid.uuid4().hex[:8]
    train = [f"train-{tag}-{i}" for i in range(20)]
    live = [f"live-{tag}-{i}" for i in range(5)]
    for i, call_id in enumerate(train):  # train first: queued earlier, still served later
        _send(celery_app, "train", call_id, f"Einstein relativity {i}")
    for i, call_id in enumerate(live):
        _send(celery_app, "live", call_id, f"Marie Curie {i}")
    store = ToolResultStore(settings.plane.resolved_redis_url)
    try:
        with thread_worker(queues=worker_queues(["search"], "both"), concurrency=1):
            records = _collect(store, train + live, timeout=60)
    finally:
        store.close()
    assert len(records) == 25, f"only {len(records)} of 25 calls finished"
    order = sorted(records.values(), key=lambda r: r["started_at"])
    lanes = ["live" if r["call_id"].startswith("live-") else "train" for r in order]
    assert lanes[:5] == ["live"] * 5, lanes
    assert all(r["ok"] for r in order)


def test_train_runs_when_live_is_idle(
    settings: Settings, celery_app: Celery, thread_worker: WorkerFactory
) -> None:
    tag = uuid.uuid4().hex[:8]
    train = [f"idle-{tag}-{i}" for i in range(3)]
    store = ToolResultStore(settings.plane.resolved_redis_url)
    try:
        with thread_worker(queues=worker_queues(["search"], "both"), concurrency=1):
            for call_id in train:
                _send(celery_app, "train", call_id, "Eiffel Tower")
            records = _collect(store, train, timeout=30)
    finally:
        store.close()
    assert sorted(records) == sorted(train)
