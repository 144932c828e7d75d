"""Tool results through Redis: a worker writes ``fathom:tool:{call_id}`` once and publishes the call id
on ``fathom:tool:done``; the caller awaits it without blocking its event loop.

One pub/sub subscription per process serves every waiting call (a future per call id), so a policy
process can keep thousands of tool calls in flight. A publish can be lost (Redis restarted, the
subscription was reconnecting): every waiter re-reads its key right after registering, after each
reconnect and once a second, so a result that is stored is always found.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis

from fathom.core.logging import get_logger
from fathom.queue.keys import REDIS_DOWN, TOOL_DONE_CHANNEL, listen_forever, stop_listener, tool_key

log = get_logger(__name__)

# What a lost or restarting Redis raises: the callers retry, never fail the call for it.


def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


class ToolResultStore:
    """Sync side (Celery task bodies): write a result once, read it back."""

    def __init__(self, redis_url: str, *, ttl_s: float = 86_400.0) -> None:
        self.redis_url = redis_url
        self.ttl_s = ttl_s
        self._client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5,
                                            health_check_interval=30)

    def put(self, call_id: str, result: dict[str, Any]) -> bool:
        """Store the result unless one is stored already (SET NX), then wake the waiters.

        Returns False when a result was already there: the first one wins, so a redelivered task
        can never replace what a caller may have read."""
        payload = json.dumps({**result, "call_id": call_id})
        written = bool(self._client.set(tool_key(call_id), payload, nx=True, px=int(self.ttl_s * 1000)))
        self.notify(call_id)
        return written

    def get(self, call_id: str) -> dict[str, Any] | None:
        return _decode(self._client.get(tool_key(call_id)))

    def notify(self, call_id: str) -> None:
        """Publish the call id; also used when a redelivered task finds the result already stored
        (the first writer may have died between the write and its publish)."""
        self._client.publish(TOOL_DONE_CHANNEL, call_id)

    def close(self) -> None:
        self._client.close()


class ResultWaiter:
    """Async side: ``await waiter.wait(call_id, timeout)`` on one shared subscription."""

    def __init__(self, redis_url: str, *, poll_s: float = 1.0, max_backoff_s: float = 2.0) -> None:
        self.redis_url = redis_url
        self.poll_s = poll_s
        self.max_backoff_s = max_backoff_s
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None
        self._subscribed = asyncio.Event()
        self._closed = False

    # -- public ---------------------------------------------------------------------------------

    async def wait(self, call_id: str, timeout: float) -> dict[str, Any] | None:
        """The stored result of ``call_id``, or None when none came within ``timeout`` seconds."""
        if self._closed:
            raise RuntimeError("ResultWaiter is closed")
        self._ensure_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(call_id, set()).add(future)
            try:
                # Registered first, then read: a publish between the two cannot be missed.
                found = await self._read(call_id)
                if found is not None:
                    return found
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                await asyncio.wait({future}, timeout=min(self.poll_s, remaining))
            finally:
                self._forget(call_id, future)
            if loop.time() >= deadline:
                return await self._read(call_id)

    def pending(self) -> int:
        """Calls being waited on (for metrics and tests)."""
        return len(self._waiting)

    async def aclose(self) -> None:
        self._closed = True
        await stop_listener(self._listener)
        self._listener = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- internals ------------------------------------------------------------------------------

    def _forget(self, call_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(call_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[call_id]

    def _wake(self, call_id: str) -> None:
        for future in self._waiting.get(call_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for call_id in list(self._waiting):
            self._wake(call_id)

    async def _read(self, call_id: str) -> dict[str, Any] | None:
        if self._client is None:
            self._client = aioredis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        try:
            return _decode(await self._client.get(tool_key(call_id)))
        except REDIS_DOWN:
            return None  # Redis is away: the next poll tries again

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            loop = asyncio.get_running_loop()
            self._listener = loop.create_task(self._listen(), name="fathom-result-waiter")

    async def _listen(self) -> None:
        def subscribed(_reconnected: bool) -> None:
            self._subscribed.set()
            self._wake_all()  # whatever was published while we were away: re-read now

        await listen_forever(self.redis_url, TOOL_DONE_CHANNEL, self._wake, on_subscribed=subscribed,
                             on_down=self._subscribed.clear, closed=lambda: self._closed,
                             max_backoff_s=self.max_backoff_s, name="result_waiter")


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ResultWaiter]] = (
    weakref.WeakKeyDictionary()
)


def shared_waiter(redis_url: str) -> ResultWaiter:
    """The process's waiter for this Redis on the running loop (one subscription per loop)."""
    loop = asyncio.get_running_loop()
    by_url = _SHARED.setdefault(loop, {})
    waiter = by_url.get(redis_url)
    if waiter is None or waiter._closed:
        waiter = by_url[redis_url] = ResultWaiter(redis_url)
    return waiter
