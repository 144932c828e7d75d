from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fathom.core.errors import SearchError
from fathom.tools.search.base import SearchHit
from fathom.tools.search.cache import CachedSearch, normalise_query
from fathom.tools.search.local import LocalSearchBackend
from fathom.tools.search.searxng import SearxngBackend

if TYPE_CHECKING:  # the fixture's class, for annotations only
    from tests.shared_data import ProviderServer


class Clock:
    """Time we move by hand, so TTL expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLocal(LocalSearchBackend):
    """The real local backend, counting how often it is actually asked."""

    calls = 0

    async def search(self, query: str, top_k: int = 10) -> list[SearchHit]:
        self.calls += 1
        await asyncio.sleep(0.01)  # let concurrent callers overlap
        return await super().search(query, top_k)


@pytest.fixture
def local(small_corpus_dir: Path) -> CountingLocal:
    return CountingLocal(small_corpus_dir, "http://127.0.0.1:1")


def test_normalise_query() -> None:
    assert normalise_query("  Who   WROTE\tHamlet \n") == "who wrote hamlet"


async def test_key_is_normalised_query_and_top_k(local: CountingLocal) -> None:
    cache = CachedSearch(local)
    first = await cache.search("Lilu demon", 5)
    again = await cache.search("  lilu   DEMON ", 5)
    assert first == again and local.calls == 1
    await cache.search("Lilu demon", 3)
    assert local.calls == 2
    assert cache.hits == 1 and cache.misses == 2 and len(cache) == 2
    assert cache.name == "local"


async def test_ttl_expiry(local: CountingLocal) -> None:
    clock = Clock()
    cache = CachedSearch(local, ttl_s=60, clock=clock)
    await cache.search("journal", 5)
    clock.now += 59
    await cache.search("journal", 5)
    assert local.calls == 1
    clock.now += 2
    await cache.search("journal", 5)
    assert local.calls == 2


async def test_lru_eviction(local: CountingLocal) -> None:
    cache = CachedSearch(local, max_size=2)
    await cache.search("alpha", 3)
    await cache.search("beta", 3)
    await cache.search("alpha", 3)  # alpha is now most recent
    await cache.search("gamma", 3)  # evicts beta
    assert local.calls == 3
    await cache.search("alpha", 3)
    assert local.calls == 3
    await cache.search("beta", 3)
    assert local.calls == 4


async def test_concurrent_identical_queries_share_one_call(local: CountingLocal) -> None:
    cache = CachedSearch(local)
    results = await asyncio.gather(*(cache.search("Journal of Mathematical Physics", 5) for _ in range(8)))
    assert local.calls == 1
    assert all(r == results[0] for r in results)


async def test_errors_are_not_cached(provider: ProviderServer) -> None:
    cache = CachedSearch(SearxngBackend(provider.url, timeout=5))
    provider.set_raw(b"down", status=503)
    with pytest.raises(SearchError):
        await cache.search("penicillin")
    provider.set_json({"results": [{"url": "https://a.example/", "title": "A", "content": "x"}]})
    hits = await cache.search("penicillin")
    assert [h.url for h in hits] == ["https://a.example/"]
    assert len(provider.requests) == 2
    await cache.aclose()
