"""``search_urls`` through a SearXNG instance (GET /search?format=json), a thin httpx adapter.

The instance must have the JSON output format enabled (``search.formats: [html, json]`` in its
settings.yml); otherwise it answers 403, which we report as such.
"""

from __future__ import annotations

from typing import Any

import httpx

from fathom.core.errors import SearchError
from fathom.tools.search.base import SearchHit


class SearxngBackend:
    name = "searxng"

    def __init__(
        self,
        base_url: str,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise SearchError("SearXNG needs a base URL (FATHOM_SEARCH__SEARXNG_URL)")
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            timeout=timeout, headers={"Accept": "application/json"}, transport=transport
        )

    async def search(self, query: str, top_k: int = 10) -> list[SearchHit]:
        query = query.strip()
        if not query:
            return []
        top_k = max(1, int(top_k))
        url = f"{self.base_url}/search"
        try:
            response = await self._client.get(url, params={"q": query, "format": "json"})
        except httpx.TimeoutException as exc:
            raise SearchError(f"SearXNG did not answer in time ({exc.__class__.__name__})") from exc
        except httpx.HTTPError as exc:
            raise SearchError(f"cannot reach SearXNG at {self.base_url}: {exc}") from exc
        if response.status_code == 403:
            raise SearchError(
                "SearXNG refused the JSON format (HTTP 403); enable `json` in search.formats of its settings"
            )
        if response.status_code == 429:
            raise SearchError("SearXNG is rate limiting this client (HTTP 429)")
        if response.status_code >= 400:
            raise SearchError(f"SearXNG failed (HTTP {response.status_code}: {response.text[:200].strip()})")
        try:
            data = response.json()
        except ValueError as exc:
            raise SearchError("SearXNG answered with something that is not JSON") from exc
        if not isinstance(data, dict):
            raise SearchError("SearXNG answered with unexpected JSON (not an object)")
        return parse_searxng(data)[:top_k]

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_searxng(data: dict[str, Any]) -> list[SearchHit]:
    hits: list[SearchHit] = []
    seen: set[str] = set()
    for item in data.get("results") or []:
        if not isinstance(item, dict) or not item.get("url"):
            continue
        url = str(item["url"])
        if url in seen:
            continue
        seen.add(url)
        score = item.get("score")
        hits.append(
            SearchHit(
                title=str(item.get("title") or url),
                url=url,
                snippet=str(item.get("content") or ""),
                score=float(score) if isinstance(score, int | float) else 0.0,
            )
        )
    return hits
