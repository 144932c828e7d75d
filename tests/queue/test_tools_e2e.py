"""search_urls / fetch through Redis and a real Celery worker, compared with the in-process Toolbox."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery
from fathom.core.config import Settings
from fathom.corpus.web import LocalWeb
from fathom.queue.results import ResultWaiter, ToolResultStore
from fathom.queue.runner import QueueToolRunner
from fathom.tools.toolbox import build_toolbox

from tests.queue.conftest import WorkerFactory


async def test_search_urls_end_to_end_matches_toolbox(
    settings: Settings, celery_app: Celery, thread_worker: WorkerFactory, local_web: LocalWeb
) -> None:
    direct_box = build_toolbox(settings, local_web_base=local_web.base_url)
    try:
        direct = await direct_box.call("search_urls", {"query": "Marie Curie radioactivity", "top_k": 3})
    finally:
        await direct_box.aclose()
    waiter = ResultWaiter(settings.plane.resolved_redis_url)
    runner = QueueToolRunner(settings, "live", trajectory_id="t1", celery_app=celery_app, waiter=waiter)
    try:
        with thread_worker(queues=["search.live"]):
            result = await runner.call("search_urls", {"query": "Marie Curie radioactivity", "top_k": 3})
    finally:
        await waiter.aclose()
    assert direct.ok and result.ok
    assert result.text == direct.text
    assert local_web.base_url in result.text
    assert result.meta["hits"] == direct.meta["hits"]


async def test_bad_arguments_are_refused_before_the_queue(settings: Settings, celery_app: Celery) -> None:
    runner = QueueToolRunner(settings, "live", celery_app=celery_app)
    result = await runner.call("search_urls", {"query": "  ", "top_k": 3})
    assert not result.ok and "empty" in result.text and result.meta["error"] == "ArgumentError"
    result = await runner.call("search_urls", {"query": "x", "top_k": 99})
    assert not result.ok and "between 1 and 20" in result.text
    result = await runner.call("nope", {})
    assert not result.ok and result.meta["error"] == "UnknownTool"


async def test_raw_fetch_returns_page_fields(
    settings: Settings, celery_app: Celery, thread_worker: WorkerFactory, local_web: LocalWeb
) -> None:
    url = local_web.url_for(local_web.corpus.ids()[0])
    waiter = ResultWaiter(settings.plane.resolved_redis_url)
    runner = QueueToolRunner(settings, "live", celery_app=celery_app, waiter=waiter)
    call_id = f"fetch-{uuid.uuid4().hex}"
    try:
        with thread_worker(queues=["fetch.live"]):
            result = await runner.fetch(url, call_id=call_id)
    finally:
        await waiter.aclose()
    assert result.ok, result.text
    assert result.meta["status"] == 200 and result.meta["final_url"].startswith(local_web.base_url)
    assert result.meta["content_type"] == "text/html" and result.meta["rendered"] is False
    assert len(result.meta["snapshot_sha256"]) == 64 and result.text.strip()
    stored = ToolResultStore(settings.plane.resolved_redis_url).get(call_id)
    assert stored is not None and stored["text"] == result.text


async def test_query_url_end_to_end_records_the_snapshot(
    settings: Settings, celery_app: Celery, thread_worker: WorkerFactory, local_web: LocalWeb
) -> None:
    doc_id = local_web.corpus.ids()[0]
    url = local_web.url_for(doc_id)
    waiter = ResultWaiter(settings.plane.resolved_redis_url)
    runner = QueueToolRunner(settings, "live", job_id=f"job-{uuid.uuid4().hex}", celery_app=celery_app,
                             waiter=waiter)
    try:
        with thread_worker(queues=["fetch.live"]):
            result = await runner.call("query_url", {"url": url, "goal": "Who is this about?"})
    finally:
        await waiter.aclose()
    assert result.ok, result.text
    assert url in result.text
    assert result.meta["snapshot"]["sha256"] == result.meta["snapshot_sha256"]
    assert result.meta["worker"] and result.meta["call_id"]


def test_enqueuer_sends_many_on_one_connection(settings: Settings, celery_app: Celery) -> None:
    import json

    import redis
    from fathom.queue.runner import CeleryEnqueuer

    ids = [f"job-{i}-{uuid.uuid4().hex[:6]}" for i in range(200)]
    sent = CeleryEnqueuer(celery_app).enqueue_research(ids, "train")
    assert sent == 200
    client = redis.Redis.from_url(settings.plane.broker_url)
    try:
        raw = client.lrange("research.train", 0, -1)
        assert client.llen("research.live") == 0
    finally:
        client.close()
    bodies = [json.loads(m) for m in raw]
    assert {b["headers"]["task"] for b in bodies} == {"fathom.research.run"}
    assert len(bodies) == 200
    with pytest.raises(ValueError, match="unknown lane"):
        CeleryEnqueuer(celery_app).enqueue_research(ids[:1], "gold")
