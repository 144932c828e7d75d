"""Plain HTTP fetcher: one shared httpx client, SSRF-checked hops, capped streaming, real deadlines.

Decisions:
- Redirects are followed by hand, one hop at a time, each hop through the SSRF guard (and robots);
  a URL seen twice is a loop; more than ``max_redirects`` hops is an error.
- The body is streamed and reading stops at the cap. HTML/text past ``max_html_bytes`` is cut there
  and the page is marked ``truncated`` (the beginning of a page is what the extractor reads
  anyway); a PDF past ``max_pdf_bytes`` is refused, since half a PDF cannot be parsed.
- The whole fetch (DNS, robots, queueing, every hop, the body) runs inside ``asyncio.timeout``:
  when the deadline passes the request task is cancelled and its connection dropped.
- Origins on the allowlist are our own (the local web); robots and per-domain politeness do not
  apply to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError
from fathom.core.logging import get_logger
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.canonical import canonical_url
from fathom.tools.fetch.politeness import DomainThrottle, RobotsCache
from fathom.tools.fetch.sniff import declared_charset, guess_charset, parse_content_type, sniff_media_type
from fathom.tools.fetch.ssrf import SSRFGuard, Target
from fathom.tools.fetch.transport import PinnedTransport

log = get_logger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ROBOTS_MAX_BYTES = 512 * 1024
_KEPT_HEADERS = ("content-type", "content-length", "content-language", "last-modified", "etag")
_TEXTUAL = ("text/", "application/json", "application/xml", "application/xhtml+xml")


@dataclass
class _Response:
    status: int
    final_url: str
    media_type: str
    encoding: str | None
    body: bytes
    truncated: bool
    headers: dict[str, str]


class HttpxFetcher:
    name = "httpx"

    def __init__(self, settings: FetchSettings, guard: SSRFGuard) -> None:
        self._settings = settings
        self._guard = guard
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30.0)
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(guard, limits),
            follow_redirects=False,
            timeout=httpx.Timeout(settings.deadline_s, connect=min(10.0, settings.deadline_s)),
            headers={
                "User-Agent": settings.user_agent,
                "Accept": "text/html,application/xhtml+xml,application/pdf;q=0.9,text/plain;q=0.8,*/*;q=0.5",
            },
            trust_env=False,
        )
        self._throttle = DomainThrottle(settings.per_domain_concurrency, settings.per_domain_rps)
        # Our own origins skip politeness but still get a concurrency cap: httpcore's pool scans
        # every connection and every queued request each time it places one, so letting dozens
        # of requests into it at once costs more interpreter time than it gains in overlap.
        self._own_slots: dict[str, asyncio.Semaphore] = {}
        self._robots = RobotsCache(self._load_robots, settings.user_agent)

    async def fetch(self, url: str, *, deadline_s: float) -> FetchedPage:
        started = time.monotonic()
        fetched_at = datetime.now(UTC)
        try:
            async with asyncio.timeout(deadline_s):
                resp = await self._follow(url, cap=None, polite=True, raise_status=True)
        except TimeoutError:
            raise FetchError(url, f"deadline of {deadline_s:g}s exceeded") from None
        except httpx.HTTPError as exc:
            raise FetchError(url, f"network error: {type(exc).__name__}: {exc or 'no detail'}") from None
        return FetchedPage(
            url=url,
            final_url=resp.final_url,
            status=resp.status,
            content_type=resp.media_type,
            body=resp.body,
            fetcher=self.name,
            fetched_at=fetched_at,
            encoding=resp.encoding,
            elapsed_s=time.monotonic() - started,
            headers=resp.headers,
            truncated=resp.truncated,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _follow(self, url: str, *, cap: int | None, polite: bool, raise_status: bool) -> _Response:
        current = url
        seen = {canonical_url(url)}
        for _hop in range(self._settings.max_redirects + 1):
            target = await self._guard.check(current)
            robots = polite and not target.allowlisted and self._settings.respect_robots
            if robots and not await self._robots.allowed(target.origin, current):
                raise FetchError(url, f"disallowed by robots.txt of {target.origin}")
            async with self._slot(target, polite), self._client.stream("GET", current) as resp:
                if resp.status_code in _REDIRECTS:
                    location = resp.headers.get("location")
                    if not location:
                        raise FetchError(url, f"HTTP {resp.status_code} redirect without Location")
                    nxt = str(resp.url.join(location).copy_with(fragment=None))
                    key = canonical_url(nxt)
                    if key in seen:
                        raise FetchError(url, f"redirect loop at {nxt}")
                    seen.add(key)
                    current = nxt
                    continue
                if raise_status and resp.status_code >= 300:
                    raise FetchError(url, f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip())
                return await self._read(url, resp, cap)
        raise FetchError(url, f"more than {self._settings.max_redirects} redirects")

    @contextlib.asynccontextmanager
    async def _slot(self, target: Target, polite: bool) -> AsyncIterator[None]:
        if polite and not target.allowlisted:
            async with self._throttle.slot(target.host):
                yield
        elif target.allowlisted:
            sem = self._own_slots.get(target.origin)
            if sem is None:
                sem = self._own_slots[target.origin] = asyncio.Semaphore(
                    max(1, self._settings.own_origin_concurrency)
                )
            async with sem:
                yield
        else:
            yield

    async def _read(self, url: str, resp: httpx.Response, cap: int | None) -> _Response:
        declared, header_charset = parse_content_type(resp.headers.get("content-type"))
        length = resp.headers.get("content-length", "")
        if declared == "application/pdf" and length.isdigit() and int(length) > self._settings.max_pdf_bytes:
            raise FetchError(
                url, f"PDF of {int(length)} bytes is over the {self._settings.max_pdf_bytes} cap"
            )
        chunks: list[bytes] = []
        size = 0
        media = declared
        limit = cap
        truncated = False
        async for chunk in resp.aiter_bytes():
            if limit is None:  # decide from the first bytes: PDFs get the PDF cap
                media = sniff_media_type(declared, chunk[:1024])
                pdf = media == "application/pdf"
                limit = self._settings.max_pdf_bytes if pdf else self._settings.max_html_bytes
            if size + len(chunk) > limit:
                if media == "application/pdf":
                    raise FetchError(url, f"PDF larger than the {limit} byte cap")
                chunks.append(chunk[: limit - size])
                size = limit
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        if limit is None:  # empty body
            media = declared or "text/plain"
        encoding = declared_charset(media, header_charset, body[:8192])
        if encoding is None and media.startswith(_TEXTUAL):
            encoding = guess_charset(body, str(resp.url))
        headers = {k: resp.headers[k] for k in _KEPT_HEADERS if k in resp.headers}
        return _Response(resp.status_code, str(resp.url), media, encoding, body, truncated, headers)

    async def _load_robots(self, robots_url: str) -> tuple[int, str]:
        async with asyncio.timeout(min(10.0, self._settings.deadline_s)):
            resp = await self._follow(robots_url, cap=_ROBOTS_MAX_BYTES, polite=False, raise_status=False)
        return resp.status, resp.body.decode(resp.encoding or "utf-8", errors="replace")
