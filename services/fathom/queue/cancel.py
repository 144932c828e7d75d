"""Job cancellation across processes: a key (so late starters see it) and a channel (so running
tasks hear it at once).

``CancelBus.request`` sets ``fathom:cancel:{job_id}`` (TTL 1 day) and then publishes the job id on
``fathom:cancel``. A worker registers callbacks with ``watch(job_id, callback)``; one subscription per
process serves every watch and re-subscribes after a Redis restart, re-checking the keys of every
watched job then (a publish sent while it was away is caught that way).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from fathom.core.logging import get_logger
from fathom.queue.keys import CANCEL_CHANNEL, CANCEL_TTL_S, cancel_key, listen_forever, stop_listener
from fathom.queue.results import REDIS_DOWN

log = get_logger(__name__)

CancelCallback = Callable[[str], None]


@dataclass
class WatchHandle:
    """Returned by ``CancelBus.watch``; ``close()`` unregisters the callback."""

    bus: CancelBus
    job_id: str
    token: int

    def close(self) -> None:
        self.bus._unwatch(self.job_id, self.token)


class CancelBus:
    def __init__(self, redis_url: str, *, max_backoff_s: float = 2.0) -> None:
        self.redis_url = redis_url
        self.max_backoff_s = max_backoff_s
        self._sync = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self._async: aioredis.Redis | None = None
        self._watches: dict[str, dict[int, CancelCallback]] = {}
        self._tokens = itertools.count()
        self._listener: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- sync side (gateway, CLI, tests) ----------------------------------------------------------

    def request(self, job_id: str) -> None:
        """Cancel ``job_id`` everywhere: key first, then the wake-up."""
        self._sync.set(cancel_key(job_id), "1", ex=CANCEL_TTL_S)
        self._sync.publish(CANCEL_CHANNEL, job_id)

    def is_cancelled(self, job_id: str) -> bool:
        return bool(self._sync.exists(cancel_key(job_id)))

    # -- async side (workers) ---------------------------------------------------------------------

    def watch(self, job_id: str, callback: CancelCallback) -> WatchHandle:
        """Call ``callback(job_id)`` (on the running loop) once when ``job_id`` is cancelled.

        A job cancelled before the watch began is found by a key check made right after
        registering."""
        token = next(self._tokens)
        self._watches.setdefault(job_id, {})[token] = callback
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done():
            self._listener = loop.create_task(self._listen(), name="fathom-cancel-listener")
        check = loop.create_task(self._check(job_id))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)
        return WatchHandle(self, job_id, token)

    async def is_cancelled_async(self, job_id: str) -> bool:
        try:
            return bool(await self._client().exists(cancel_key(job_id)))
        except REDIS_DOWN:
            return False

    def watching(self) -> int:
        return sum(len(v) for v in self._watches.values())

    async def aclose(self) -> None:
        self._closed = True
        await stop_listener(self._listener)
        self._listener = None
        if self._async is not None:
            await self._async.aclose()
            self._async = None
        self._sync.close()

    def close(self) -> None:
        """Sync close for processes that never started the async side."""
        self._sync.close()

    # -- internals --------------------------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        if self._async is None:
            self._async = aioredis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        return self._async

    def _unwatch(self, job_id: str, token: int) -> None:
        callbacks = self._watches.get(job_id)
        if callbacks is not None:
            callbacks.pop(token, None)
            if not callbacks:
                del self._watches[job_id]

    def _fire(self, job_id: str) -> None:
        callbacks = self._watches.pop(job_id, {})
        for callback in callbacks.values():
            try:
                callback(job_id)
            except Exception:  # one bad callback must not stop the others
                log.exception("cancel.callback_failed", job_id=job_id)

    async def _check(self, job_id: str) -> None:
        if job_id in self._watches and await self.is_cancelled_async(job_id):
            self._fire(job_id)

    async def _check_all(self) -> None:
        for job_id in list(self._watches):
            await self._check(job_id)

    async def _listen(self) -> None:
        async def subscribed(reconnected: bool) -> None:
            if reconnected:
                log.info("cancel_bus.watching", watching=self.watching())
            await self._check_all()  # a cancel published while Redis was away: read the keys

        await listen_forever(self.redis_url, CANCEL_CHANNEL, self._fire, on_subscribed=subscribed,
                             closed=lambda: self._closed, max_backoff_s=self.max_backoff_s,
                             name="cancel_bus")
