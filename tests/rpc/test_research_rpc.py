"""ResearchService over a real socket, with the real JobGateway, store (SQLite and PostgreSQL),
EventBus on Redis and Celery producer on Redis: what a client sees, and what gets persisted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from fathom.core.config import Settings
from fathom.core.errors import InvalidArgument, NotFound, QuotaExceeded, Unavailable
from fathom.research.bus import EventBus, batch_stream, job_stream
from fathom.research.gateway import JobGateway
from fathom.rpc.clients import GatewayClient
from fathom.rpc.gen import common_pb2, research_pb2
from fathom.rpc.server import build_server, serve
from fathom.rpc.servicers.research import SERVICE_NAME, ResearchServicer, register
from fathom.rpc.status import error_from_rpc
from fathom.store import Database, JobStore
from pydantic import SecretStr

TOKEN = "tok-research-1"


@dataclass
class Plane:
    settings: Settings  # the client's
    store: JobStore
    bus: EventBus
    servicer: ResearchServicer
    address: str

    def client(self) -> GatewayClient:
        return GatewayClient(self.settings, self.address)

    def rows(self) -> int:
        return sum(self.store.job_counts().values())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = (f"sqlite:///{tmp_path / 'fathom.db'}" if request.param == "sqlite"
           else request.getfixturevalue("make_postgres_db")())
    db = Database(url)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
async def plane(database: Database, redis_url: str, tmp_path: Path) -> AsyncIterator[Plane]:
    import redis
    from fathom.queue.app import make_celery
    from fathom.queue.names import LANES, QUEUES, queue_name
    from fathom.queue.runner import CeleryEnqueuer

    plane = {"broker_url": redis_url, "redis_url": redis_url, "max_batch_items": 5,
             "client_running_quota": 3, "max_question_chars": 200,
             "auth_tokens": SecretStr(f"tester:{TOKEN}")}
    server_settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", plane=plane)
    client_settings = server_settings.model_copy(update={"plane": server_settings.plane.model_copy(
        update={"client_token": SecretStr(TOKEN)})})
    store = JobStore(database)
    bus = EventBus(store, redis_url, poll_s=0.2)
    celery = make_celery(server_settings)
    servicer = ResearchServicer(JobGateway(store, bus, CeleryEnqueuer(celery), server_settings))

    def add(server: grpc.aio.Server) -> None:
        register(server, servicer)

    server, _health, port = build_server(server_settings, register=add, service_names=[SERVICE_NAME],
                                         address="127.0.0.1:0")
    await server.start()
    yield Plane(client_settings, store, bus, servicer, f"127.0.0.1:{port}")
    await server.stop(0)
    bus.close()
    celery.close()
    r = redis.Redis.from_url(redis_url)
    ours = [queue_name(q, lane) for q in QUEUES for lane in LANES]
    for pattern in ("fathom:cancel*", "fathom:tool:*", "_kombu.binding.*"):  # never the db's claim key
        ours.extend(r.scan_iter(match=pattern))
    r.delete(*ours)
    r.close()


async def test_submit_get_list_cancel(plane: Plane) -> None:
    async with plane.client() as client:
        job = await client.submit("Who discovered penicillin?", "search", "live", priority=3,
                                  client_request_id="req-1")
        assert job.state == common_pb2.JOB_STATE_QUEUED and job.mode == common_pb2.MODE_SEARCH
        assert job.lane == common_pb2.LANE_LIVE and job.created_at.endswith("Z")
        again = await client.submit("Who discovered penicillin?", "search", "live", client_request_id="req-1")
        assert again.id == job.id  # the idempotency key
        assert plane.store.get_job(job.id).client_id == "tester"  # from the bearer token
        got = await client.get(job.id)
        assert got.id == job.id and got.question == "Who discovered penicillin?"
        listed = await client.list(lane="live")
        assert [j.id for j in listed.jobs] == [job.id]
        cancelled = await client.cancel(job.id)
        assert cancelled.state == common_pb2.JOB_STATE_CANCELLED
        assert (await client.list(state="queued")).jobs == []
        with pytest.raises(NotFound):
            await client.get("00000000-0000-4000-8000-000000000000")


async def test_bad_requests_persist_nothing(plane: Plane) -> None:
    async with plane.client() as client:
        raw = client.stub
        cases: list[tuple[Any, type[Exception], str]] = [
            (research_pb2.SubmitRequest(question=""), InvalidArgument, ""),
            (research_pb2.SubmitRequest(question="   "), InvalidArgument, ""),
            (research_pb2.SubmitRequest(question="x" * 201), InvalidArgument, ""),
            (research_pb2.SubmitRequest(question="ok?", mode=99), InvalidArgument, "UNKNOWN_MODE"),  # type: ignore[arg-type]
            (research_pb2.SubmitRequest(question="ok?", lane=7), InvalidArgument, "UNKNOWN_LANE"),  # type: ignore[arg-type]
            (research_pb2.SubmitRequest(question="ok?", priority=42), InvalidArgument, ""),
        ]
        for request, kind, reason in cases:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw.Submit(request, timeout=10)
            typed = error_from_rpc(err.value)
            assert isinstance(typed, kind), (request, typed)
            assert typed.reason != "INTERNAL" and (not reason or typed.reason == reason)
        with pytest.raises(QuotaExceeded) as too_many:
            await client.submit_batch([{"question": f"q{i}?"} for i in range(6)])
        assert too_many.value.reason == "BATCH_TOO_LARGE"
        with pytest.raises(InvalidArgument) as one_bad:
            await client.submit_batch([{"question": "fine?"}, {"question": ""}])
        assert one_bad.value.metadata.get("index") == "1"
        for bad_id in ("", "not-a-uuid", "../../etc/passwd"):
            with pytest.raises(InvalidArgument):
                await client.get(bad_id)
            with pytest.raises(InvalidArgument):
                await client.get_batch(bad_id)
    assert plane.rows() == 0


async def test_quota_of_running_jobs(plane: Plane) -> None:
    async with plane.client() as client:
        for i in range(3):
            await client.submit(f"question {i}?")
        with pytest.raises(QuotaExceeded) as err:
            await client.submit("one too many?")
    assert err.value.reason == "CLIENT_QUOTA"
    assert plane.rows() == 3


async def test_watch_streams_events_and_resumes(plane: Plane) -> None:
    async with plane.client() as client:
        job = await client.submit("Which river is the largest?", "report")
    stream = job_stream(job.id)
    plane.bus.publish(stream, "job_started", {"job_id": job.id, "elapsed_s": 0.0, "state": "running"})
    step = {"index": 0, "text": "<think>t</think>", "think": "t", "answer": None, "tool_calls": [
        {"index": 0, "name": "search_urls", "arguments": {"query": "river"}, "raw": "{}", "ok": True,
         "result": "1. Amazon", "elapsed_s": 0.1}]}
    plane.bus.publish(stream, "step", {"job_id": job.id, "elapsed_s": 1.5, "state": "running",
                                       "data": {"step": step}})

    async def later() -> None:
        await asyncio.sleep(0.3)
        plane.bus.publish(stream, "job_done", {"job_id": job.id, "elapsed_s": 2.0, "message": "Amazon",
                                               "state": "succeeded"})

    publisher = asyncio.create_task(later())
    async with plane.client() as client:
        seen = [p async for p in client.watch(job.id, timeout=20)]
        await publisher
        assert [p.kind for p in seen] == ["job_started", "step", "job_done"]
        assert [p.event_index for p in seen] == [0, 1, 2]
        assert seen[1].step.tool_calls[0].name == "search_urls"
        assert seen[1].step.tool_calls[0].arguments_json == '{"query": "river"}'
        assert seen[2].state == common_pb2.JOB_STATE_SUCCEEDED and seen[2].message == "Amazon"
        resumed = [p async for p in client.watch(job.id, from_event=2, timeout=20)]
        assert [p.event_index for p in resumed] == [2]
        with pytest.raises(InvalidArgument):
            async for _ in client.watch(job.id, from_event=-1, timeout=5):
                pass


async def test_watch_ends_with_deadline(plane: Plane) -> None:
    async with plane.client() as client:
        job = await client.submit("Nothing will happen to this one?")
        from fathom.core.errors import DeadlineExceeded

        with pytest.raises(DeadlineExceeded):
            async for _ in client.watch(job.id, timeout=0.5):
                pass


async def test_batches(plane: Plane) -> None:
    async with plane.client() as client:
        batch = await client.submit_batch([{"question": "a?", "id": "x1", "gold_answer": "A"},
                                           {"question": "b?", "id": "x2"}], "search", "train", name="nightly")
        assert batch.total == 2 and batch.queued == 2 and batch.name == "nightly" and not batch.done
        assert batch.lane == common_pb2.LANE_TRAIN
        got = await client.get_batch(batch.id)
        assert got.id == batch.id and got.total == 2
        cancelled = await client.cancel_batch(batch.id)
        assert cancelled.cancelled == 2 and cancelled.done
        events = [e async for e in client.watch_batch(batch.id, timeout=20)]
        assert events[-1].batch.done and events[-1].batch.cancelled == 2
        assert plane.bus.store.events_since(batch_stream(batch.id), 0)


async def test_watch_in_flight_ends_cleanly_on_shutdown(database: Database, redis_url: str,
                                                        tmp_path: Path) -> None:
    """SIGTERM's path: health NOT_SERVING, open Watch streams end with UNAVAILABLE (resume from the
    next index elsewhere) well within grace, the server stops, owned resources close."""
    from fathom.queue.app import make_celery
    from fathom.queue.runner import CeleryEnqueuer

    settings = Settings(data_dir=tmp_path / "d", cache_dir=tmp_path / "c",
                        plane={"broker_url": redis_url, "redis_url": redis_url, "grace_s": 30})
    store = JobStore(database)
    bus = EventBus(store, redis_url, poll_s=0.2)
    celery = make_celery(settings)
    servicer = ResearchServicer(JobGateway(store, bus, CeleryEnqueuer(celery), settings))
    server, health, port = build_server(settings, register=lambda s: register(s, servicer),
                                        service_names=[SERVICE_NAME], address="127.0.0.1:0")
    stop = asyncio.Event()
    closed: list[str] = []
    running = asyncio.create_task(serve(server, health, grace_s=30, stop_event=stop, on_drain=servicer.drain,
                                        on_stop=lambda: closed.append("closed")))
    async with GatewayClient(settings, f"127.0.0.1:{port}") as client:
        job = await client.submit("Will this be watched?")
        bus.publish(job_stream(job.id), "job_started", {"job_id": job.id, "state": "running"})
        seen: list[int] = []

        async def watch() -> None:
            async for p in client.watch(job.id, timeout=60):
                seen.append(p.event_index)

        watcher = asyncio.create_task(watch())
        while not seen:
            await asyncio.sleep(0.02)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stop.set()
        with pytest.raises(Unavailable) as err:
            await watcher
        await asyncio.wait_for(running, 30)
        assert loop.time() - started < 10  # ended by the drain, not by the 30 s grace running out
    assert err.value.reason == "SERVER_DRAINING" and seen == [0]
    assert closed == ["closed"]
    bus.close()
    celery.close()
