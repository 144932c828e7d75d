"""``search_urls`` through Serper (Google results as JSON), a thin adapter over httpx.

Request: POST {url} with JSON ``{"q": ..., "num": k}`` and header ``X-API-KEY``. Response: the
``organic`` list (title, link, snippet, position); an ``answerBox`` with a link is put first, as
the engine itself ranks it above the organic results.
"""

from __future__ import annotations

from typing import Any

import httpx

from fathom.core.errors import SearchError
from fathom.tools.search.base import SearchHit

DEFAULT_URL = "https://google.serper.dev/search"
_MAX_NUM = 100


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data)[:200]
    return str(data)[:200]


class SerperBackend:
    name = "serper"

    def __init__(
        self,
        api_key: str,
        url: str = DEFAULT_URL,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key:
            raise SearchError("Serper needs an API key (FATHOM_SERPER_API_KEY or SERPER_API_KEY)")
        self.url = url
        self._client = httpx.AsyncClient(
            timeout=timeout,
            headers={"X-API-KEY": api_key, "Content-Type": "application/json"},
            transport=transport,
        )

    async def search(self, query: str, top_k: int = 10) -> list[SearchHit]:
        query = query.strip()
        if not query:
            return []
        num = max(1, min(int(top_k), _MAX_NUM))
        try:
            response = await self._client.post(self.url, json={"q": query, "num": num})
        except httpx.TimeoutException as exc:
            raise SearchError(f"Serper did not answer in time ({exc.__class__.__name__})") from exc
        except httpx.HTTPError as exc:
            raise SearchError(f"cannot reach Serper at {self.url}: {exc}") from exc
        if response.status_code in (401, 403):
            raise SearchError(
                f"Serper refused the API key (HTTP {response.status_code}: {_error_text(response)})"
            )
        if response.status_code == 429:
            raise SearchError(f"Serper rate limit reached (HTTP 429: {_error_text(response)})")
        if response.status_code >= 400:
            raise SearchError(f"Serper failed (HTTP {response.status_code}: {_error_text(response)})")
        try:
            data = response.json()
        except ValueError as exc:
            raise SearchError("Serper answered with something that is not JSON") from exc
        if not isinstance(data, dict):
            raise SearchError("Serper answered with unexpected JSON (not an object)")
        return parse_serper(data)[:num]

    async def aclose(self) -> None:
        await self._client.aclose()


def parse_serper(data: dict[str, Any]) -> list[SearchHit]:
    hits: list[SearchHit] = []
    seen: set[str] = set()
    box = data.get("answerBox")
    if isinstance(box, dict) and box.get("link"):
        snippet = str(box.get("answer") or box.get("snippet") or "")
        if snippet:
            hits.append(
                SearchHit(title=str(box.get("title") or box["link"]), url=str(box["link"]), snippet=snippet)
            )
            seen.add(str(box["link"]))
    for i, item in enumerate(data.get("organic") or []):
        if not isinstance(item, dict) or not item.get("link"):
            continue
        link = str(item["link"])
        if link in seen:
            continue
        seen.add(link)
        position = item.get("position", i + 1)
        hits.append(
            SearchHit(
                title=str(item.get("title") or link),
                url=link,
                snippet=str(item.get("snippet") or ""),
                score=1.0 / float(position) if isinstance(position, int | float) and position > 0 else 0.0,
            )
        )
    return hits
