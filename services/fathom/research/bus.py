"""``EventBus``: progress events of jobs and batches, readable by any process.

The store row (``job_events``) is the event; Redis only carries a wake-up (``fathom:events:{stream}``
with the new index), so a watcher that missed a publish, or runs with no Redis at all, still sees
every event by reading the store from its last index. A Redis failure never fails a publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

from fathom.core.logging import get_logger
from fathom.queue.keys import events_channel

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    from fathom.store.records import EventInfo
    from fathom.store.repository import JobStore

log = get_logger(__name__)

JOB_TERMINAL_KINDS: frozenset[str] = frozenset({"job_done", "job_failed", "job_cancelled"})
# A batch's "batch_done" may be published by two jobs ending at once, before a sibling's "job_ended":
# it does not end a watch; the batch's state in the store does (JobGateway.watch_batch).
BATCH_TERMINAL_KINDS: frozenset[str] = frozenset()
POLL_S = 1.0
PAGE = 500

DoneCheck = Callable[[], Awaitable[bool]]


def job_stream(job_id: str) -> str:
    return f"job:{job_id}"


def batch_stream(batch_id: str) -> str:
    return f"batch:{batch_id}"


class EventBus:
    """Publish to and watch event streams. ``redis_url=None``: local mode, watchers poll the store."""

    def __init__(self, store: JobStore, redis_url: str | None, *, poll_s: float = POLL_S) -> None:
        self.store = store
        self.redis_url = redis_url
        self.poll_s = poll_s
        self._client: redis.Redis | None = None
        self._lock = threading.Lock()

    # -- publishing -------------------------------------------------------------------------

    def publish(self, stream: str, kind: str, payload: dict[str, Any]) -> int:
        """Store the event (the truth), then wake watchers. Returns the event's index."""
        index = self.store.append_event(stream, kind, payload)
        self._wake(stream, index)
        return index

    async def apublish(self, stream: str, kind: str, payload: dict[str, Any]) -> int:
        return await asyncio.to_thread(self.publish, stream, kind, payload)

    def _wake(self, stream: str, index: int) -> None:
        if self.redis_url is None:
            return
        import redis

        try:
            self._redis().publish(events_channel(stream), str(index))
        except (redis.RedisError, OSError) as exc:
            # Watchers fall back to polling the store within a second: nothing is lost.
            log.warning("event_wakeup_failed", stream=stream, index=index, error=str(exc))

    def _redis(self) -> redis.Redis:
        import redis

        with self._lock:
            if self._client is None:
                assert self.redis_url is not None
                self._client = redis.Redis.from_url(
                    self.redis_url, socket_timeout=2, socket_connect_timeout=2
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- watching ---------------------------------------------------------------------------

    async def watch(
        self,
        stream: str,
        from_index: int = 0,
        *,
        terminal_kinds: Collection[str] = JOB_TERMINAL_KINDS,
        is_done: DoneCheck | None = None,
    ) -> AsyncIterator[EventInfo]:
        """Every event of ``stream`` from ``from_index`` on, in order, until a terminal kind.

        ``is_done`` (optional) is asked when a wait brings no new event: True ends the watch (a
        stream whose end was never published, e.g. jobs cancelled in bulk)."""
        next_index = max(0, int(from_index))
        # Subscribe before the first read: a publish between read and wait still wakes us.
        wakeups = await _Wakeups.open(self.redis_url, events_channel(stream))
        try:
            while True:
                rows = await asyncio.to_thread(self.store.events_since, stream, next_index, PAGE)
                for row in rows:
                    next_index = row.index + 1
                    yield row
                    if row.kind in terminal_kinds:
                        return
                if len(rows) >= PAGE:
                    continue
                woke = await wakeups.wait(self.poll_s)
                if not woke and is_done is not None and await is_done():
                    # One last read: the final events may have landed since.
                    rows = await asyncio.to_thread(self.store.events_since, stream, next_index, PAGE)
                    for row in rows:
                        yield row
                        if row.kind in terminal_kinds:
                            return
                    if not rows:
                        return
                    next_index = rows[-1].index + 1
        finally:
            await wakeups.close()


class _Wakeups:
    """A Redis subscription used only as a doorbell; degrades to plain timeouts without Redis."""

    def __init__(self, client: redis.asyncio.Redis | None, pubsub: Any) -> None:
        self._client = client
        self._pubsub = pubsub

    @classmethod
    async def open(cls, redis_url: str | None, channel: str) -> _Wakeups:
        if redis_url is None:
            return cls(None, None)
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2)
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(channel)
            return cls(client, pubsub)
        except (RedisError, OSError) as exc:
            log.warning("event_subscribe_failed", channel=channel, error=str(exc))
            await client.aclose()
            return cls(None, None)

    async def wait(self, timeout_s: float) -> bool:
        """True when a wake-up arrived within ``timeout_s``; False on timeout (poll the store)."""
        if self._pubsub is None:
            await asyncio.sleep(timeout_s)
            return False
        from redis.exceptions import RedisError

        try:
            message = await self._pubsub.get_message(timeout=timeout_s)
        except (RedisError, OSError) as exc:
            log.warning("event_wakeups_lost", error=str(exc))
            await self.close()
            return False
        if message is None:
            return False
        # Drain a burst of wake-ups: one store read covers them all.
        with contextlib.suppress(RedisError, OSError):
            while await self._pubsub.get_message(timeout=0) is not None:
                pass
        return True

    async def close(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()
