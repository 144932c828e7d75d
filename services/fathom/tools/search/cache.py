"""An in-process cache in front of any search backend.

Key: backend name, top_k and the query normalised for case and whitespace (as the original did).
Entries expire after ``ttl_s`` (None: never) and the least recently used go first when full.
Concurrent identical queries share one backend call.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from fathom.tools.search.base import SearchBackend, SearchHit


def normalise_query(query: str) -> str:
    return " ".join(query.split()).casefold()


class CachedSearch:
    def __init__(
        self,
        backend: SearchBackend,
        ttl_s: float | None = None,
        max_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.name = backend.name
        self.ttl_s = ttl_s
        self.max_size = max(1, max_size)
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str, int], tuple[float, list[SearchHit]]] = OrderedDict()
        self._inflight: dict[tuple[str, str, int], asyncio.Future[list[SearchHit]]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, query: str, top_k: int) -> tuple[str, str, int]:
        return (self.backend.name, normalise_query(query), int(top_k))

    def _lookup(self, key: tuple[str, str, int]) -> list[SearchHit] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored_at, hits = entry
        if self.ttl_s is not None and self._clock() - stored_at > self.ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return hits

    async def search(self, query: str, top_k: int = 10) -> list[SearchHit]:
        key = self._key(query, top_k)
        cached = self._lookup(key)
        if cached is not None:
            self.hits += 1
            return list(cached)
        pending = self._inflight.get(key)
        if pending is not None:
            self.hits += 1
            return list(await asyncio.shield(pending))
        self.misses += 1
        future: asyncio.Future[list[SearchHit]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            hits = await self.backend.search(query, top_k)
        except BaseException as exc:
            # Errors are not cached: the next call tries again.
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved so asyncio does not warn when no one waits
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(hits)
        self._entries[key] = (self._clock(), list(hits))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
        return list(hits)

    def clear(self) -> None:
        self._entries.clear()

    async def aclose(self) -> None:
        await self.backend.aclose()
