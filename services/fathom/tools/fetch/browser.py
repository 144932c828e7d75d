"""Headless Chromium fetcher for pages that build their text with JavaScript.

One browser process per pool, started on first use, with one shared context. ``browser_contexts``
slots, each one reusable page of that context (a context per slot cost ~100 ms more CPU per page:
pages of separate contexts never share a renderer process); the whole browser is relaunched
after ``browser_recycle_after`` pages (to shed leaks) or when it dies.

Every request a page makes (document, scripts, XHR, sub-frames) goes through a route handler:
it runs the SSRF guard on the URL, aborts images/media/fonts, and fetches the rest itself with
``max_redirects=0`` before fulfilling the browser with the answer. Chromium's route interception
only sees the first URL of a redirect chain (a redirect it follows, even one we fulfilled, is not
routed again), so without that a public page could redirect a script or XHR to an internal
address. Instead, sub-resource redirects are followed inside the handler, each hop checked; a
main-document redirect is handed back to ``_render``, which checks the hop and navigates to it.

Known gap (documented, not closed): the browser-side fetch resolves DNS itself, so the address it
connects to is not pinned to the one the guard checked; a DNS-rebinding name with a near-zero TTL
could still swap addresses between check and connect. The httpx path pins and is used for every
plain fetch; the browser path is only for script-built HTML.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from playwright.async_api import Browser, BrowserContext, Page, Playwright, Request, Route, async_playwright
from playwright.async_api import Error as PlaywrightError

from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, SSRFError
from fathom.core.logging import get_logger
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.process_tree import chromium_browser_pids
from fathom.tools.fetch.sniff import parse_content_type
from fathom.tools.fetch.ssrf import SSRFGuard

log = get_logger(__name__)

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    # Cost per page, measured on the 2-core box (fathom bench tools): by default nearly every
    # navigation got a fresh renderer process (the back/forward cache keeps the old page's
    # process alive, site isolation gives each site its own). The browser holds no cookies,
    # logins or user data and its context lives only as long as the browser, so there is nothing cross-site to
    # isolate: renderers are shared (at most two) and reused, the GPU process runs in the
    # browser process, and paint holding is off (nobody looks at the pages).
    "--renderer-process-limit=2",
    "--disable-site-isolation-trials",
    "--disable-features=BackForwardCache,PaintHolding,site-per-process,IsolateOrigins",
    "--in-process-gpu",
    "--disable-renderer-backgrounding",
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Never needed to read a page's text. Style sheets go too: text extraction reads the DOM, not
# the layout, and they were a fetch, a parse and a style recalculation per page.
_SKIPPED_RESOURCES = frozenset({"image", "media", "font", "manifest", "texttrack", "stylesheet"})
_QUIET_S = 0.05  # no request in flight for this long after DOMContentLoaded = the page has settled
_SETTLE_MAX_S = 2.0
_CLOSE_TIMEOUT_S = 5.0


class _BrowserDied(FetchError):
    """Chromium went away under a fetch (crash, OOM kill); the pool relaunches it."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, f"browser died: {message}")


@dataclass
class _Slot:
    generation: int = -1
    page: Page | None = None
    inflight: set[Request] = field(default_factory=set)
    redirect_to: str | None = None  # set by the route handler when the main document redirects


class BrowserPool:
    name = "browser"

    def __init__(self, settings: FetchSettings, guard: SSRFGuard) -> None:
        self._settings = settings
        self._guard = guard
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None  # shared by the slots; belongs to the browser
        self._context_lock = asyncio.Lock()
        self._generation = 0
        self._lock = asyncio.Lock()
        size = max(1, settings.browser_contexts)
        self._size = size
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(_Slot())
        self._served = 0
        self._recycling: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    def browser_pid(self) -> int | None:
        """PID of the running Chromium main process (None before the first fetch)."""
        if not self.started:
            return None
        pids = chromium_browser_pids()
        return pids[-1] if pids else None

    async def fetch(self, url: str, *, deadline_s: float) -> FetchedPage:
        if self._closed:
            raise FetchError(url, "browser pool is closed")
        await self._guard.check(url)  # refuse early with the guard's own message
        try:
            return await self._fetch_once(url, deadline_s)
        except _BrowserDied:
            log.warning("browser.died", url=url)
            return await self._fetch_once(url, deadline_s)  # once more, on a fresh browser

    async def _fetch_once(self, url: str, deadline_s: float) -> FetchedPage:
        started = time.monotonic()
        fetched_at = datetime.now(UTC)
        generation = self._generation
        try:
            async with asyncio.timeout(deadline_s):
                if self._recycling is not None:  # a relaunch is due: wait for it, then use the new one
                    await asyncio.shield(self._recycling)
                await self._ensure_browser()
                generation = self._generation
                slot = await self._slots.get()
                healthy = False
                try:
                    result = await self._render(slot, url, started + deadline_s)
                    healthy = True
                finally:
                    await self._release(slot, healthy)
        except TimeoutError:
            raise FetchError(url, f"browser deadline of {deadline_s:g}s exceeded") from None
        except PlaywrightError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "has been closed" in message or not self.started:
                await self._discard_browser(generation)
                raise _BrowserDied(url, message) from None
            raise FetchError(url, f"browser error: {message}") from None
        final_url, status, html = result
        return FetchedPage(
            url=url,
            final_url=final_url,
            status=status,
            content_type="text/html",
            body=html.encode("utf-8"),
            fetcher=self.name,
            fetched_at=fetched_at,
            encoding="utf-8",
            elapsed_s=time.monotonic() - started,
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._recycling is not None:
            self._recycling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recycling
        async with self._lock:
            await self._close_browser()
            if self._pw is not None:
                await self._pw.stop()
                self._pw = None

    async def _render(self, slot: _Slot, url: str, deadline: float) -> tuple[str, int, str]:
        page = await self._page_for(slot)
        current, seen = url, {url}
        for _hop in range(self._settings.max_redirects + 1):
            slot.inflight.clear()
            slot.redirect_to = None
            timeout_ms = max(1.0, (deadline - time.monotonic()) * 1000)
            try:
                # DOMContentLoaded: parser scripts (inline, deferred) have run; what scripts fetch
                # afterwards is awaited by ``_settle``. "load" would also wait for sub-resources
                # that do not change the text.
                response = await page.goto(current, wait_until="domcontentloaded", timeout=timeout_ms)
            except PlaywrightError:
                if slot.redirect_to is None:
                    raise
            if slot.redirect_to is None:
                break
            current = slot.redirect_to
            if current in seen:
                raise FetchError(url, f"redirect loop at {current} (browser)")
            seen.add(current)
            await self._guard.check(current)
        else:
            raise FetchError(url, f"more than {self._settings.max_redirects} redirects (browser)")
        status = 200
        if response is not None:
            status = response.status
            if status >= 400:
                raise FetchError(url, f"HTTP {status} (browser)")
            # ``headers`` came with the response event; ``header_value`` is one more round trip.
            media, _ = parse_content_type(response.headers.get("content-type"))
            if media and media not in ("text/html", "application/xhtml+xml"):
                raise FetchError(url, f"browser path reads HTML only, got {media}")
        await self._settle(slot, min(deadline, time.monotonic() + _SETTLE_MAX_S))
        return page.url, status, await page.content()

    async def _settle(self, slot: _Slot, until: float) -> None:
        """Wait until no request has been in flight for ``_QUIET_S`` (scripts fetching data)."""
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            if slot.inflight:
                quiet_since = now
            elif now - quiet_since >= _QUIET_S:
                return
            if now >= until:
                return
            await asyncio.sleep(0.02)

    async def _page_for(self, slot: _Slot) -> Page:
        if slot.generation != self._generation:  # the browser was relaunched: old handles are dead
            slot.generation, slot.page = self._generation, None
        if slot.page is not None and not slot.page.is_closed():
            return slot.page
        context = await self._shared_context()
        page = await context.new_page()
        # Routes on the page (not the context) so the handler knows its slot. In-flight requests
        # are counted there too: it sees every request anyway, and listening to request events
        # as well cost three more messages per request.
        await page.route("**/*", lambda route: self._route(route, slot))
        await page.route_web_socket("**/*", _refuse_websocket)
        slot.page = page
        return page

    async def _shared_context(self) -> BrowserContext:
        async with self._context_lock:
            if self._context is None:
                assert self._browser is not None
                self._context = await self._browser.new_context(
                    user_agent=self._settings.user_agent,
                    service_workers="block",  # a service worker's requests would bypass our route
                    accept_downloads=False,
                    java_script_enabled=True,
                )
            return self._context

    async def _route(self, route: Route, slot: _Slot) -> None:
        request = route.request
        slot.inflight.add(request)
        try:
            await self._answer(route, request, slot)
        finally:
            slot.inflight.discard(request)

    async def _answer(self, route: Route, request: Request, slot: _Slot) -> None:
        try:
            if request.resource_type in _SKIPPED_RESOURCES:
                await route.abort("blockedbyclient")
                return
            url = request.url
            try:
                await self._guard.check(url)
            except SSRFError as exc:
                log.info("browser.refused", url=url, reason=exc.message)
                await route.abort("blockedbyclient")
                return
            main_frame = request.is_navigation_request() and request.frame.parent_frame is None
            seen = {url}
            for _hop in range(self._settings.max_redirects + 1):
                response = await route.fetch(url=url, max_redirects=0)
                location = response.headers.get("location")
                if response.status not in _REDIRECTS or not location:
                    await route.fulfill(response=response)
                    return
                nxt = urljoin(url, location)
                if main_frame:
                    # Hand the hop to ``_render``, which checks it and navigates there itself, so
                    # the document ends up with its real URL.
                    slot.redirect_to = nxt
                    await route.abort("aborted")
                    return
                # Chromium does not route the hops of a redirect it follows, so sub-resources
                # are followed here, each hop through the guard (same scheme only: route.fetch
                # cannot switch protocol).
                if nxt in seen or urlsplit(nxt).scheme != urlsplit(url).scheme:
                    break
                await self._guard.check(nxt)
                seen.add(nxt)
                url = nxt
            await route.abort("blockedbyclient")
        except SSRFError as exc:
            log.info("browser.refused_redirect", url=request.url, reason=exc.message)
            with contextlib.suppress(PlaywrightError):
                await route.abort("blockedbyclient")
        except PlaywrightError as exc:
            # The page may be gone already (closed, navigated away); nothing left to answer.
            log.debug("browser.route_failed", url=request.url, error=str(exc).splitlines()[0:1])
            with contextlib.suppress(PlaywrightError):
                await route.abort("failed")

    async def _release(self, slot: _Slot, healthy: bool) -> None:
        if not healthy and slot.page is not None:
            # After a timeout or error the page may still be loading: close it, make a new one later.
            with contextlib.suppress(PlaywrightError, TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await slot.page.close()
            slot.page = None
        self._slots.put_nowait(slot)
        self._served += 1
        if (
            self._served >= self._settings.browser_recycle_after
            and self._recycling is None
            and not self._closed
        ):
            self._recycling = asyncio.create_task(self._recycle())

    async def _ensure_browser(self) -> None:
        if self.started:
            return
        async with self._lock:
            if self.started:
                return
            await self._close_browser()
            if self._pw is None:
                self._pw = await async_playwright().start()
            self._browser = await self._pw.chromium.launch(
                executable_path=self._settings.browser_executable,
                args=list(CHROMIUM_ARGS),
                headless=True,
            )
            self._generation += 1
            self._served = 0
            log.info("browser.launched", generation=self._generation, version=self._browser.version)

    async def _recycle(self) -> None:
        """Relaunch the browser once every slot is back (in-flight pages finish first)."""
        try:
            async with self._lock:
                held = [await self._slots.get() for _ in range(self._size)]
                try:
                    log.info("browser.recycle", served=self._served)
                    await self._close_browser()
                finally:
                    for slot in held:
                        slot.page = None
                        self._slots.put_nowait(slot)
        finally:
            self._recycling = None

    async def _discard_browser(self, generation: int) -> None:
        async with self._lock:
            if generation == self._generation:  # a newer browser may already be running
                await self._close_browser()

    async def _close_browser(self) -> None:
        browser, self._browser = self._browser, None
        self._context = None  # closes with its browser
        if browser is not None:
            with contextlib.suppress(PlaywrightError, TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await browser.close()


async def _refuse_websocket(ws: Any) -> None:
    # Reading a page never needs a live socket, and the route handler cannot check its frames.
    await ws.close()
