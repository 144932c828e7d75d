"""Idempotency by call id, and cancellation reaching an in-flight request."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from fathom.core.config import Settings
from fathom.queue.app import make_celery
from fathom.queue.cancel import CancelBus
from fathom.queue.results import ResultWaiter, ToolResultStore
from fathom.queue.runner import QueueToolRunner
from fathom.queue.worker_runtime import close_runtimes

from tests.queue.conftest import Origin, purge


@pytest.fixture
def origin_app(origin_settings: Settings, redis_url: str):  # type: ignore[no-untyped-def]
    app = make_celery(origin_settings)
    purge(app, redis_url)
    yield app
    close_runtimes()
    purge(app, redis_url)


def _worker(app, queues, concurrency=2):  # type: ignore[no-untyped-def]
    from celery.contrib.testing.worker import start_worker

    return start_worker(app, pool="threads", concurrency=concurrency, queues=queues,
                        perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20)


async def test_same_call_id_runs_the_tool_once(
    origin_settings: Settings, origin_app, origin: Origin  # type: ignore[no-untyped-def]
) -> None:
    url = f"{origin.base_url}/page/once-{uuid.uuid4().hex}"
    call_id = f"idem-{uuid.uuid4().hex}"
    store = ToolResultStore(origin_settings.plane.resolved_redis_url)
    waiter = ResultWaiter(origin_settings.plane.resolved_redis_url)
    try:
        with _worker(origin_app, ["fetch.live"], concurrency=1):
            for _ in range(2):  # two messages, one call
                origin_app.send_task("fathom.tools.fetch", kwargs={"call_id": call_id, "url": url},
                                     queue="fetch.live", routing_key="fetch.live")
            first = await waiter.wait(call_id, 30)
            # A third message through the runner: the recorded result comes back, nothing is fetched.
            runner = QueueToolRunner(origin_settings, "live", celery_app=origin_app, waiter=waiter)
            again = await runner.fetch(url, call_id=call_id)
            # Drain: the worker has taken every message once the queue is empty and nothing is unacked.
            deadline = time.monotonic() + 20
            client = store._client
            while time.monotonic() < deadline and (client.llen("fetch.live") or client.hlen("unacked")):
                await asyncio.sleep(0.05)
    finally:
        await waiter.aclose()
    assert first is not None and first["ok"], first
    assert again.ok and again.text == first["text"] and again.meta["worker"] == first["worker"]
    assert origin.hits[url.removeprefix(origin.base_url)] == 1
    stored = store.get(call_id)
    assert stored is not None and stored["started_at"] == first["started_at"]


async def test_cancel_reaches_the_inflight_request_within_a_second(
    origin_settings: Settings, origin_app, origin: Origin  # type: ignore[no-untyped-def]
) -> None:
    job_id = f"job-{uuid.uuid4().hex}"
    bus = CancelBus(origin_settings.plane.resolved_redis_url)
    waiter = ResultWaiter(origin_settings.plane.resolved_redis_url)
    runner = QueueToolRunner(origin_settings, "live", job_id=job_id, celery_app=origin_app, waiter=waiter)
    try:
        with _worker(origin_app, ["fetch.live"]):
            call = asyncio.create_task(
                runner.call("query_url", {"url": f"{origin.base_url}/slow", "goal": "anything"}))
            assert await asyncio.to_thread(origin.slow_started.wait, 30), "the worker never fetched /slow"
            asked = time.monotonic()
            bus.request(job_id)
            result = await asyncio.wait_for(call, 30)
            answered = time.monotonic()
    finally:
        await waiter.aclose()
        bus.close()
    assert not result.ok and "cancelled" in result.text and result.meta["error"] == "Cancelled"
    assert answered - asked < 1.0, f"result came {answered - asked:.2f} s after the cancel"
    assert origin.closed_at is not None and origin.closed_at - asked < 1.0, "the request was left open"


async def test_a_task_started_after_the_cancel_does_not_run(
    origin_settings: Settings, origin_app, origin: Origin  # type: ignore[no-untyped-def]
) -> None:
    job_id = f"job-{uuid.uuid4().hex}"
    bus = CancelBus(origin_settings.plane.resolved_redis_url)
    bus.request(job_id)
    assert bus.is_cancelled(job_id)
    waiter = ResultWaiter(origin_settings.plane.resolved_redis_url)
    runner = QueueToolRunner(origin_settings, "live", job_id=job_id, celery_app=origin_app, waiter=waiter)
    try:
        with _worker(origin_app, ["fetch.live"]):
            # Bounded: the cancelled call must come back at once; a hang fails here, not at the suite timeout.
            result = await asyncio.wait_for(
                runner.call("query_url", {"url": f"{origin.base_url}/page/late", "goal": "x"}), 90)
    finally:
        await waiter.aclose()
        bus.close()
    assert not result.ok and result.meta["error"] == "Cancelled"
    assert origin.hits == {}
