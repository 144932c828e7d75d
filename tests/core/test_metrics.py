"""Prometheus metrics: the exposition over real HTTP, queue depth from real Redis lists (published
through kombu's own Redis transport, priorities included), job states from a real store."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fathom.core import metrics
from fathom.core.metrics import (
    collect_job_states,
    collect_queue_depth,
    count_fetch,
    count_tokens,
    observe_grpc,
    observe_task,
    observe_tool,
    queue_list_names,
    set_browser_in_use,
    start_metrics_server,
)
from fathom.store.db import Database
from fathom.store.repository import JobStore
from prometheus_client import REGISTRY

NAMES = (
    "fathom_queue_depth", "fathom_task_seconds", "fathom_tool_seconds", "fathom_fetch_total",
    "fathom_browser_pages_in_use", "fathom_tokens_total", "fathom_jobs", "fathom_grpc_seconds",
)


def test_metrics_server_serves_our_names_over_http() -> None:
    port = start_metrics_server(0)
    assert port > 0 and start_metrics_server(0) == port == metrics.metrics_port()  # one per process
    observe_tool("query_url", "live", True, 0.2)
    observe_task("fathom.tools.fetch", "train", "ok", 1.5)
    observe_grpc("fathom.v1.ResearchService", "Submit", "OK", 0.003)
    count_fetch("httpx", "ok")
    count_tokens("policy", "completion", 42)
    count_tokens("policy", "prompt", 0)  # nothing to count: no sample is made
    set_browser_in_use(3)
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in NAMES:
        assert f"# TYPE {name} " in text, name
    assert 'fathom_tool_seconds_count{lane="live",ok="true",tool="query_url"} 1.0' in text
    bucket = 'fathom_task_seconds_bucket{lane="train",le="2.5",outcome="ok",task="fathom.tools.fetch"} 1.0'
    assert bucket in text
    assert 'fathom_grpc_seconds_count{code="OK",method="Submit",service="fathom.v1.ResearchService"}' in text
    assert 'fathom_fetch_total{fetcher="httpx",outcome="ok"}' in text
    assert 'fathom_tokens_total{kind="completion",role="policy"}' in text
    assert 'fathom_tokens_total{kind="prompt",role="policy"}' not in text
    assert "fathom_browser_pages_in_use 3.0" in text


def test_priority_lists_follow_kombu_naming() -> None:
    assert queue_list_names("fetch.live", [0, 3, 6, 9]) == [
        "fetch.live", "fetch.live\x06\x163", "fetch.live\x06\x166", "fetch.live\x06\x169",
    ]


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    mark = f"h6test{secrets.token_hex(4)}-"
    yield mark
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"*{mark}*"):
            client.delete(key)
    finally:
        client.close()


def test_queue_depth_counts_every_priority_list_of_each_queue(redis_url: str, prefix: str) -> None:
    from kombu import Connection, Exchange, Queue

    name = f"{prefix}fetch.live"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    with Connection(redis_url) as conn:
        producer = conn.Producer()
        for priority in (0, 0, 5, 9):  # kombu keeps priorities 3..9 in suffixed lists of their own
            producer.publish({"n": priority}, exchange=queue.exchange, routing_key=name,
                             declare=[queue], priority=priority)
    client = redis.Redis.from_url(redis_url)
    try:
        lists = [k.decode() for k in client.scan_iter(match=f"{prefix}fetch.live*")]
        assert len(lists) >= 2  # the plain list and at least one priority list: the case to count
        client.rpush(f"{prefix}research.train", b"m1", b"m2")
    finally:
        client.close()

    depths = collect_queue_depth(redis_url, prefix=prefix)
    assert depths[("fetch", "live")] == 4
    assert depths[("research", "train")] == 2
    assert depths[("fetch", "train")] == 0 and depths[("search", "live")] == 0
    assert len(depths) == 10  # every queue x lane, zero included
    assert REGISTRY.get_sample_value("fathom_queue_depth", {"queue": "fetch", "lane": "live"}) == 4.0
    assert REGISTRY.get_sample_value("fathom_queue_depth", {"queue": "research", "lane": "train"}) == 2.0

    only = collect_queue_depth(redis_url, queues=["fetch"], lanes=["live"], prefix=prefix)
    assert only == {("fetch", "live"): 4}


def test_job_states_by_lane_from_one_count_query(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'fathom.db'}")
    db.migrate()
    try:
        store = JobStore(db)
        live = [store.create_job("what is a lane?", lane="live") for _ in range(3)]
        store.create_job("what is a rollout?", lane="train")
        store.request_cancel(live[0])
        counts = collect_job_states(store)
    finally:
        db.dispose()
    assert counts[("queued", "live")] == 2 and counts[("cancelled", "live")] == 1
    assert counts[("queued", "train")] == 1 and counts[("running", "train")] == 0
    assert REGISTRY.get_sample_value("fathom_jobs", {"state": "queued", "lane": "live"}) == 2.0
    assert REGISTRY.get_sample_value("fathom_jobs", {"state": "succeeded", "lane": "train"}) == 0.0
