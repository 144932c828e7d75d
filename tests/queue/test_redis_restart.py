"""The result waiter and the cancel listener survive a Redis restart (a server of the test's own)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable

import redis
from fathom.queue.cancel import CancelBus
from fathom.queue.results import ResultWaiter, ToolResultStore

from tests.conftest import ThrowawayServer


def restart(server: ThrowawayServer) -> None:
    """Stop the server (its data goes: no persistence) and start it again on the same port."""
    assert server.process is not None
    server.process.terminate()
    server.process.wait(timeout=10)
    port = server.url.rsplit(":", 1)[1]
    log = (server.directory / "server.log").open("ab")
    server.process = subprocess.Popen(
        ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(server.directory)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis did not come back")


async def test_waiter_receives_a_result_written_after_a_restart(
    spawn_redis: Callable[[], ThrowawayServer],
) -> None:
    server = spawn_redis()
    url = f"{server.url}/0"
    waiter = ResultWaiter(url)
    call_id = f"restart-{uuid.uuid4().hex}"
    try:
        waiting = asyncio.create_task(waiter.wait(call_id, 30))
        await asyncio.wait_for(waiter._subscribed.wait(), 10)
        await asyncio.to_thread(restart, server)
        store = ToolResultStore(url)
        assert store.put(call_id, {"ok": True, "text": "after the restart", "meta": {}})
        store.close()
        record = await asyncio.wait_for(waiting, 30)
        assert waiter.pending() == 0
    finally:
        await waiter.aclose()
    assert record is not None and record["text"] == "after the restart" and record["call_id"] == call_id


async def test_cancel_listener_reconnects(spawn_redis: Callable[[], ThrowawayServer]) -> None:
    server = spawn_redis()
    url = f"{server.url}/0"
    bus = CancelBus(url)
    job_id = f"job-{uuid.uuid4().hex}"
    fired: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        handle = bus.watch(job_id, lambda j: fired.done() or fired.set_result(j))
        await asyncio.sleep(0)  # let the listener subscribe
        await asyncio.to_thread(restart, server)
        other = CancelBus(url)
        # Published until heard: the listener may still be reconnecting when the first goes out.
        for _ in range(100):
            other.request(job_id)
            try:
                assert await asyncio.wait_for(asyncio.shield(fired), 0.2) == job_id
                break
            except TimeoutError:
                continue
        other.close()
        handle.close()
    finally:
        await bus.aclose()
    assert fired.done() and fired.result() == job_id
