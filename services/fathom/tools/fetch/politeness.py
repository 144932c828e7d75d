"""Being a good guest on other people's servers: per-domain concurrency, request rate, robots.txt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.robotparser import RobotFileParser

from fathom.core.logging import get_logger

log = get_logger(__name__)

ROBOTS_TTL_S = 24 * 3600.0


class TokenBucket:
    """``rate`` tokens per second, bursts up to ``burst``; ``take`` waits for a token."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        if self._rate <= 0:
            return
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = time.monotonic()
                self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)


class DomainThrottle:
    """A semaphore and a token bucket per host."""

    def __init__(self, concurrency: int, rps: float) -> None:
        self._concurrency = max(1, concurrency)
        self._rps = rps
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._buckets: dict[str, TokenBucket] = {}

    @asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        sem = self._sems.get(host)
        if sem is None:
            sem = self._sems[host] = asyncio.Semaphore(self._concurrency)
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = TokenBucket(self._rps, burst=self._rps)
        async with sem:
            await bucket.take()
            yield


class RobotRules(RobotFileParser):
    # Set by the stdlib parser at run time; declared here for the type checker.
    allow_all: bool
    disallow_all: bool


RobotsLoader = Callable[[str], Awaitable[tuple[int, str]]]


class RobotsCache:
    """robots.txt per origin, fetched once per TTL, concurrent askers share one fetch.

    RFC 9309: 4xx means no rules (allow all); 5xx or unreachable means disallow all for now.
    """

    def __init__(self, loader: RobotsLoader, user_agent: str, ttl_s: float = ROBOTS_TTL_S) -> None:
        self._loader = loader
        self._agent = user_agent.split("/", 1)[0]
        self._ttl = ttl_s
        self._cache: dict[str, tuple[RobotRules, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def allowed(self, origin: str, url: str) -> bool:
        parser = await self._parser(origin)
        return parser.can_fetch(self._agent, url)

    async def _parser(self, origin: str) -> RobotRules:
        hit = self._cache.get(origin)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        # One fetch per origin; a lock (not a shared future) so a cancelled fetcher just lets
        # the next waiter try again.
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            hit = self._cache.get(origin)
            if hit is not None and hit[1] > time.monotonic():
                return hit[0]
            parser = await self._load(origin)
            # A "disallow all" from a failing server is retried sooner than real rules.
            ttl = min(self._ttl, 600.0) if parser.disallow_all else self._ttl
            self._cache[origin] = (parser, time.monotonic() + ttl)
            return parser

    async def _load(self, origin: str) -> RobotRules:
        parser = RobotRules(origin + "/robots.txt")
        try:
            status, text = await self._loader(origin + "/robots.txt")
        except Exception as exc:  # network trouble: RFC 9309 says assume disallowed
            log.info("robots.unreachable", origin=origin, error=str(exc))
            parser.disallow_all = True
            return parser
        if 400 <= status < 500:
            parser.allow_all = True
        elif status >= 500:
            parser.disallow_all = True
        else:
            parser.parse(text.splitlines())
        return parser
