"""Headless Chromium fetcher for pages that build their text with JavaScript.

One browser process per pool, started on first use, with one shared context. ``browser_contexts``
slots, each one reusable page of that context (a context per slot cost ~100 ms more CPU per page:
pages of separate contexts never share a renderer process); the whole browser is relaunched
after ``browser_recycle_after`` pages (to shed leaks) or when it dies.

Chromium never touches the network itself. It is launched with every host name mapped to "not
found" (``--host-resolver-rules``), so no socket can open from it: not for pre-connections, DNS
prefetch, speculative loads, popups or WebRTC (whose UDP is switched off too). Every request a
page makes reaches it through one route handler on the whole context, which:

- refuses requests of pages that are not a slot's page in a fetch under way (popups, which are
  also closed the moment they open; a page whose fetch has returned), sub-frame documents (the
  snapshot is the main frame's DOM, so their text would never be read) and images, media, fonts
  and style sheets (text extraction reads the DOM, not the layout);
- checks the URL with the SSRF guard, once per origin and fetch, and fetches it with our own httpx
  client over the pinned transport, which connects only to the addresses that check returned: no
  name is resolved twice, so a DNS answer that changes after the check (rebinding) moves nothing;
- reads at most ``max_html_bytes`` of each response and ``_PAGE_BYTES_FACTOR`` times that for the
  whole page, stopping the transfer at the cap; compressed bodies are inflated by us, a bounded
  step at a time, so a gzip bomb is inflated only that far;
- follows sub-resource redirects itself, each hop checked (Chromium does not route the hops of a
  redirect it follows); a main-document redirect goes back to ``_render``, which checks the hop
  and navigates there, so the document keeps its real URL.

The main document is refused, as a ``FetchError`` naming the cause, when it is over the cap (a cut
document loses the scripts at its end; in auto mode the chain keeps its httpx read, cut at the
same cap), not HTML, or binary (the same sniffing as the httpx path). A navigation the page starts
itself to a refused address is an ``SSRFError``, never Chromium's error page as content. The
rendered DOM is read with builtins saved before any page script ran (a page cannot hand back a
bigger string through its own ``outerHTML`` or ``slice``) and cut at ``max_html_bytes``, as the
httpx path cuts HTML.

When a fetch returns, its route handlers are cancelled and script execution is switched off on
its page (a page with workers is closed instead), so none of its timers, callbacks or requests
outlive the call. Scripts come back on just before the slot's next navigation, and until that
navigation commits only main-frame navigations are answered: a late request of the old document
is refused. (Leaving for about:blank did the same at ~60 ms of Chromium CPU per page, a third
of the cost of a whole page.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from playwright.async_api import (
    Browser,
    BrowserContext,
    CDPSession,
    Frame,
    Page,
    Playwright,
    Request,
    Route,
    async_playwright,
)
from playwright.async_api import Error as PlaywrightError

from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, SSRFError
from fathom.core.logging import get_logger
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.process_tree import chromium_browser_pids
from fathom.tools.fetch.sniff import looks_binary, parse_content_type, sniff_media_type
from fathom.tools.fetch.ssrf import DEFAULT_PORTS, SSRFGuard, Target, normalise_host, origin_of
from fathom.tools.fetch.transport import PinnedTransport, connect_only_to

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
# Chromium with no network of its own: every name (IP literals included) resolves to nothing, so
# whatever bypasses the route handler (pre-connections, prefetch, prerender, popups opened before
# they are closed, TURN over TCP) cannot open a socket. WebRTC's UDP does not use the resolver
# and is switched off on its own. Kept apart from CHROMIUM_ARGS, which other code launches with
# to render pages it serves straight to Chromium.
NO_NETWORK_ARGS = (
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--dns-prefetch-disable",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HTML = frozenset({"text/html", "application/xhtml+xml"})
# Never needed to read a page's text. Style sheets go too: text extraction reads the DOM, not
# the layout, and they were a fetch, a parse and a style recalculation per page.
_SKIPPED_RESOURCES = frozenset({"image", "media", "font", "manifest", "texttrack", "stylesheet"})
# Headers that describe one hop's transfer, not the content: httpx has already undone the
# encoding and Chromium recomputes the length. Cookies are not kept: reading needs no session,
# and the context is shared by unrelated fetches.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-encoding",
        "content-length",
        "set-cookie",
        "proxy-connection",
        "upgrade",
        "trailer",
        "te",
        "host",
        "accept-encoding",
        "cookie",
    }
)
_PAGE_BYTES_FACTOR = 4  # all responses of one page together: this many times the per-response cap
_QUIET_S = 0.05  # no request in flight for this long after DOMContentLoaded = the page has settled
_SETTLE_MAX_S = 2.0
_CLOSE_TIMEOUT_S = 5.0
# We ask for what we can inflate a bounded step at a time (see ``_Inflater``).
_ACCEPT_ENCODING = "gzip, deflate"
_SNAPSHOT_FN = "__fathomSnapshot"
# Runs in every document before its own scripts: keeps the builtins the snapshot needs, on a
# property the page cannot redefine, so page scripts cannot swap them for ones that return more.
# The answer is one string ("1" when cut, else "0", then the HTML): a primitive, so serialising
# it touches nothing the page could have changed.
_SNAPSHOT_SCRIPT = f"""(() => {{
  const apply = Reflect.apply, describe = Object.getOwnPropertyDescriptor;
  const outer = describe(Element.prototype, 'outerHTML').get;
  const root = describe(Document.prototype, 'documentElement').get;
  const slice = String.prototype.slice;
  const doc = document;
  Object.defineProperty(window, '{_SNAPSHOT_FN}', {{
    value: (cap) => {{
      const el = apply(root, doc, []);
      if (!el) return '0';
      const html = apply(outer, el, []);
      return html.length > cap ? '1' + apply(slice, html, [0, cap]) : '0' + html;
    }},
  }});
}})();"""


class _BrowserDied(FetchError):
    """Chromium went away under a fetch (crash, OOM kill); the pool relaunches it."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(url, f"browser died: {message}")


class _Refused(Exception):
    """A routed request that gets no answer; ``error`` is set when it fails the whole fetch."""

    def __init__(self, reason: str, error: FetchError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


@dataclass
class _Slot:
    generation: int = -1
    page: Page | None = None
    cdp: CDPSession | None = None  # the page's own DevTools session (script switch)
    scripts_off: bool = False
    # Per fetch, reset by ``begin``:
    active: bool = False  # routed requests are answered only while the fetch is under way
    committed: bool = False  # the fetch's document has replaced the slot's previous one
    url: str = ""
    inflight: set[Request] = field(default_factory=set)
    handlers: set[asyncio.Task[Any]] = field(default_factory=set)
    redirect_to: str | None = None  # set by the route handler when the main document redirects
    failure: FetchError | None = None  # why the main document (or a navigation) was refused
    targets: dict[str, Target] = field(default_factory=dict)  # origin key -> checked target
    addresses: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    routed_bytes: int = 0

    def begin(self, url: str, target: Target) -> None:
        self.active, self.committed, self.url = True, False, url
        self.inflight.clear()
        self.handlers.clear()
        self.redirect_to, self.failure = None, None
        self.targets.clear()
        self.addresses.clear()
        self.routed_bytes = 0
        self.remember(url, target)

    def remember(self, url: str, target: Target) -> None:
        key = _origin_key(url)
        if key is not None:
            self.targets[key] = target
            self.addresses[(target.host, target.port)] = target.ips

    def fail(self, error: FetchError) -> None:
        if self.failure is None:  # the first cause is the one to report
            self.failure = error


@dataclass
class _Body:
    status: int
    headers: dict[str, str]
    body: bytes


class BrowserPool:
    name = "browser"

    def __init__(self, settings: FetchSettings, guard: SSRFGuard) -> None:
        self._settings = settings
        self._guard = guard
        self._pw: Playwright | None = None
        self._browser: Browser | None = None
        self._context: BrowserContext | None = None  # shared by the slots; belongs to the browser
        self._context_lock = asyncio.Lock()
        self._page_lock = asyncio.Lock()  # held while a slot's page is made, see ``_on_page``
        self._slot_of: dict[Page, _Slot] = {}
        self._client: httpx.AsyncClient | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        size = max(1, settings.browser_contexts)
        self._size = size
        self._slots: asyncio.Queue[_Slot] = asyncio.Queue()
        for _ in range(size):
            self._slots.put_nowait(_Slot())
        self._served = 0
        self._recycling: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
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
        target = await self._guard.check(url)  # refuse early with the guard's own message
        try:
            return await self._fetch_once(url, target, deadline_s)
        except _BrowserDied:
            log.warning("browser.died", url=url)
            return await self._fetch_once(url, target, deadline_s)  # once more, on a fresh browser

    async def _fetch_once(self, url: str, target: Target, deadline_s: float) -> FetchedPage:
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
                self._report_in_use()
                healthy = False
                try:
                    slot.begin(url, target)
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
        final_url, status, html, cut = result
        return FetchedPage(
            url=url,
            final_url=final_url,
            status=status,
            content_type="text/html",
            body=html,
            fetcher=self.name,
            fetched_at=fetched_at,
            encoding="utf-8",
            elapsed_s=time.monotonic() - started,
            truncated=cut,
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
        for task in list(self._background):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _render(self, slot: _Slot, url: str, deadline: float) -> tuple[str, int, bytes, bool]:
        page = await self._page_for(slot)
        if slot.scripts_off and slot.cdp is not None:
            try:
                await slot.cdp.send("Emulation.setScriptExecutionDisabled", {"value": False})
                slot.scripts_off = False
            except PlaywrightError:  # the page went bad while it waited: use a new one
                self._drop_page(slot)
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
                if slot.failure is not None:
                    raise slot.failure from None
                if slot.redirect_to is None:
                    raise
            if slot.redirect_to is None:
                break
            current = slot.redirect_to
            if current in seen:
                raise FetchError(url, f"redirect loop at {current} (browser)")
            seen.add(current)
            await self._check(slot, current)
        else:
            raise FetchError(url, f"more than {self._settings.max_redirects} redirects (browser)")
        await self._settle(slot, min(deadline, time.monotonic() + _SETTLE_MAX_S))
        if slot.failure is not None:
            raise slot.failure
        final_url = page.url
        if not final_url.startswith(("http://", "https://")):
            # Chromium's own error page (chrome-error://) or a page left blank: never content.
            raise FetchError(url, f"the browser ended on {final_url} instead of the page")
        html, cut = await self._snapshot(page)
        return final_url, response.status if response is not None else 200, html, cut

    async def _snapshot(self, page: Page) -> tuple[bytes, bool]:
        """The main frame's DOM as UTF-8, at most ``max_html_bytes``; True when it was cut."""
        cap = self._settings.max_html_bytes
        snap = await page.evaluate(f"cap => window.{_SNAPSHOT_FN}(cap)", cap)
        if not isinstance(snap, str) or snap[:1] not in ("0", "1"):
            raise FetchError(page.url, "the rendered page could not be read")
        cut = snap[0] == "1"
        body = snap[1 : cap + 1].encode("utf-8", errors="replace")
        if len(body) > cap:
            body = body[:cap].decode("utf-8", errors="ignore").encode("utf-8")
            cut = True
        return body, cut

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
            slot.generation, slot.page, slot.cdp = self._generation, None, None
        if slot.page is not None and not slot.page.is_closed():
            return slot.page
        context = await self._shared_context()
        async with self._page_lock:
            page = await context.new_page()
            self._slot_of[page] = slot
        page.on("framenavigated", lambda frame: _mark_commit(slot, page, frame))
        slot.page, slot.scripts_off = page, False
        slot.cdp = await context.new_cdp_session(page)
        return page

    async def _on_page(self, page: Page) -> None:
        """Close every page the pool did not open itself (popups, ``target=_blank``) at once."""
        async with self._page_lock:  # a page being made for a slot is registered by now
            pass
        if page not in self._slot_of:
            log.info("browser.popup_closed", url=page.url)
            with contextlib.suppress(PlaywrightError):
                await page.close()

    async def _shared_context(self) -> BrowserContext:
        async with self._context_lock:
            if self._context is None:
                assert self._browser is not None
                context = await self._browser.new_context(
                    user_agent=self._settings.user_agent,
                    service_workers="block",  # a service worker's requests would bypass our route
                    accept_downloads=False,
                    java_script_enabled=True,
                )
                # On the context, not the pages: pages the page opens are routed from their first
                # request, before anything could close them.
                context.on("page", self._on_page)
                await context.add_init_script(_SNAPSHOT_SCRIPT)
                await context.route("**/*", self._route)
                await context.route_web_socket("**/*", _refuse_websocket)
                self._context = context
            return self._context

    def _slot_for(self, request: Request) -> _Slot | None:
        """The slot whose fetch under way made ``request``, or None (nobody may be answered)."""
        try:
            frame = request.frame  # raises for requests no page owns (service and shared workers)
            page = frame.page
        except PlaywrightError:
            return None
        slot = self._slot_of.get(page)
        if slot is None or not slot.active or slot.page is not page:
            return None
        navigation = request.is_navigation_request()
        if navigation and frame.parent_frame is not None:
            return None  # a sub-frame's document: not part of the main frame's DOM we read
        if not slot.committed and not navigation:
            return None  # the previous document, still there until the new one commits
        return slot

    async def _route(self, route: Route) -> None:
        request = route.request
        slot = self._slot_for(request)
        if slot is None:
            with contextlib.suppress(PlaywrightError):
                await route.abort("blockedbyclient")
            return
        task = asyncio.current_task()
        if task is not None:
            slot.handlers.add(task)
        slot.inflight.add(request)
        try:
            await self._answer(route, request, slot)
        finally:
            slot.inflight.discard(request)
            if task is not None:
                slot.handlers.discard(task)

    async def _answer(self, route: Route, request: Request, slot: _Slot) -> None:
        main = request.is_navigation_request()  # sub-frame documents never get this far
        try:
            if request.resource_type in _SKIPPED_RESOURCES:
                raise _Refused("not needed to read text")
            answer = await self._follow(request, slot, main)
            if answer is None:  # the main document redirected: ``_render`` takes the next hop
                await route.abort("aborted")
                return
            await route.fulfill(status=answer.status, headers=answer.headers, body=answer.body)
        except _Refused as refused:
            if refused.error is not None and main:
                slot.fail(refused.error)
            log.debug("browser.refused", url=request.url, reason=refused.reason)
            with contextlib.suppress(PlaywrightError):
                await route.abort("blockedbyclient")
        except Exception as exc:
            # The page may be gone already (closed, navigated away), or the fetch failed in a way
            # not foreseen above: either way the request is answered, never left hanging.
            log.debug("browser.route_failed", url=request.url, error=repr(exc)[:200])
            with contextlib.suppress(PlaywrightError):
                await route.abort("failed")

    async def _follow(self, request: Request, slot: _Slot, main: bool) -> _Body | None:
        """Fetch what ``request`` asks for, following sub-resource redirects hop by hop."""
        url, method = request.url, request.method
        content = request.post_data_buffer
        seen = {url}
        for _hop in range(self._settings.max_redirects + 1):
            try:
                await self._check(slot, url)
            except SSRFError as exc:
                if main:  # the fetched URL and redirect hops are checked before navigating
                    exc = SSRFError(slot.url, f"refused: the page navigated to {url}: {exc.message}")
                raise _Refused(exc.message, exc) from None
            answer = await self._download(slot, url, method, request.headers, content, main)
            location = answer.headers.get("location")
            if answer.status not in _REDIRECTS or not location:
                return answer
            nxt = urljoin(url, location)
            if main:
                slot.redirect_to = nxt
                return None
            if nxt in seen:
                raise _Refused(f"redirect loop at {nxt}")
            seen.add(nxt)
            if answer.status in (301, 302, 303) and method != "HEAD":
                method, content = "GET", None
            url = nxt
        raise _Refused(f"more than {self._settings.max_redirects} redirects")

    async def _check(self, slot: _Slot, url: str) -> None:
        """The guard's verdict on ``url``, asked once per origin and fetch (see module doc)."""
        key = _origin_key(url)
        if key is not None and key in slot.targets:
            return
        slot.remember(url, await self._guard.check(url))

    async def _download(
        self, slot: _Slot, url: str, method: str, headers: dict[str, str], content: bytes | None, main: bool
    ) -> _Body:
        cap = self._settings.max_html_bytes
        budget = _PAGE_BYTES_FACTOR * cap
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        sent["accept-encoding"] = _ACCEPT_ENCODING
        client = self._http()
        try:
            with connect_only_to(slot.addresses):
                async with client.stream(method, url, headers=sent, content=content) as resp:
                    kept = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS}
                    declared, _ = parse_content_type(resp.headers.get("content-type"))
                    if resp.status_code in _REDIRECTS:
                        return _Body(resp.status_code, kept, b"")
                    if main and resp.status_code >= 400:
                        raise _Refused("error status", FetchError(url, f"HTTP {resp.status_code} (browser)"))
                    inflater = _Inflater.for_encoding(url, resp.headers.get("content-encoding", ""))
                    length = resp.headers.get("content-length", "")
                    if inflater.identity and length.isdigit() and int(length) > cap:
                        raise self._too_big(url, main, f"{int(length)} bytes declared")
                    chunks: list[bytes] = []
                    size = 0
                    async for raw in resp.aiter_raw():
                        chunk = inflater.feed(raw, cap - size)
                        size += len(chunk)
                        slot.routed_bytes += len(chunk)
                        if size > cap:
                            raise self._too_big(url, main, "more bytes")
                        if slot.routed_bytes > budget:
                            raise _Refused(f"the page's responses passed {budget} bytes together")
                        chunks.append(chunk)
        except (httpx.HTTPError, FetchError) as exc:
            # FetchError: the pinned transport's own check (SSRFError) or an undecodable body.
            error = (
                exc
                if isinstance(exc, FetchError)
                else FetchError(url, f"network error: {type(exc).__name__}: {exc or 'no detail'}")
            )
            raise _Refused(error.message, error) from None
        body = b"".join(chunks)
        if main:
            media = sniff_media_type(declared, body[:1024]) if body else declared or "text/html"
            if media not in _HTML:
                raise _Refused("not HTML", FetchError(url, f"browser path reads HTML only, got {media}"))
            if looks_binary(body[:1024]):
                raise _Refused("binary", FetchError(url, f"unsupported content type {media} (binary body)"))
            if not declared:
                kept["content-type"] = media
        return _Body(resp.status_code, kept, body)

    def _too_big(self, url: str, main: bool, detail: str) -> _Refused:
        cap = self._settings.max_html_bytes
        error = FetchError(url, f"page larger than the {cap} byte cap ({detail}, browser)")
        return _Refused(error.message, error if main else None)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=30.0)
            deadline = self._settings.browser_deadline_s
            self._client = httpx.AsyncClient(
                transport=PinnedTransport(self._guard, limits),
                follow_redirects=False,
                timeout=httpx.Timeout(deadline, connect=min(10.0, deadline)),
                trust_env=False,
            )
        return self._client

    def _report_in_use(self) -> None:
        from fathom.core.metrics import set_browser_in_use

        set_browser_in_use(self._size - self._slots.qsize())

    async def _release(self, slot: _Slot, healthy: bool) -> None:
        slot.active = False  # from here on, everything the page asks for is refused
        for task in list(slot.handlers):
            if task is not asyncio.current_task():
                task.cancel()
        try:
            if slot.page is not None and healthy:
                healthy = await self._quiet(slot)
            if slot.page is not None and not healthy:
                # After a timeout or error the page may still be loading: close it, make a new one later.
                self._drop_page(slot)
        except BaseException:
            self._drop_page(slot)  # cancelled while leaving the page: it may still run; close it
            raise
        finally:
            self._slots.put_nowait(slot)
            self._report_in_use()
            self._served += 1
            if (
                self._served >= self._settings.browser_recycle_after
                and self._recycling is None
                and not self._closed
            ):
                self._recycling = asyncio.create_task(self._recycle())

    async def _quiet(self, slot: _Slot) -> bool:
        """Switch scripts off on the slot's page (timers, callbacks); False if it must be closed."""
        if slot.page is None or slot.cdp is None or slot.page.workers:
            return False  # a worker runs on without the page's scripts
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await slot.cdp.send("Emulation.setScriptExecutionDisabled", {"value": True})
        except (PlaywrightError, TimeoutError):
            return False
        slot.scripts_off = True
        return True

    def _drop_page(self, slot: _Slot) -> None:
        page, slot.page, slot.cdp = slot.page, None, None
        if page is None:
            return
        self._slot_of.pop(page, None)
        self._spawn(_close_page(page))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
                args=[*CHROMIUM_ARGS, *NO_NETWORK_ARGS],
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
                        slot.page, slot.cdp = None, None
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
        self._slot_of.clear()
        if browser is not None:
            with contextlib.suppress(PlaywrightError, TimeoutError):
                async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                    await browser.close()


class _Inflater:
    """Undoes a response's content-encoding at most ``room + 1`` bytes at a time.

    httpx inflates each network read whole (a 64 KiB read of a gzip bomb is ~64 MB); here one read
    yields no more than the cap has room for, plus one byte to tell that it overflowed.
    """

    def __init__(self, url: str, encoding: str) -> None:
        self._url = url
        self._deflate = encoding == "deflate"
        self._z = None if encoding == "identity" else zlib.decompressobj(47)  # zlib or gzip header
        self._out = 0

    @property
    def identity(self) -> bool:
        return self._z is None

    @classmethod
    def for_encoding(cls, url: str, header: str) -> _Inflater:
        encoding = header.strip().lower() or "identity"
        if encoding == "x-gzip":
            encoding = "gzip"
        if encoding not in ("identity", "gzip", "deflate"):
            raise FetchError(url, f"unsupported content-encoding {header!r} (browser)")
        return cls(url, encoding)

    def feed(self, data: bytes, room: int) -> bytes:
        if self._z is None:
            return data
        try:
            out = self._z.decompress(data, max(0, room) + 1)
        except zlib.error:
            if self._deflate and self._out == 0:  # "deflate" sent raw, without zlib framing
                self._deflate, self._z = False, zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data, room)
            raise FetchError(self._url, "undecodable compressed body (browser)") from None
        self._out += len(out)
        return out


def _origin_key(url: str) -> str | None:
    """``scheme://host:port`` as the guard spells origins, or None when the URL needs the full check.

    Two URLs with the same key get the same verdict from the guard, except for what the key leaves
    out (credentials, odd schemes, a port not written as plain digits in range), which always go to
    the guard.
    """
    try:
        u = httpx.URL(url)
        written_port = urlsplit(url).port  # ValueError unless ASCII digits in 0-65535
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    scheme = u.scheme.lower()
    if scheme not in DEFAULT_PORTS or u.userinfo or not u.host or written_port == 0:
        return None
    port = u.port or DEFAULT_PORTS[scheme]  # httpx drops a port that is the scheme's default
    if port != (written_port or DEFAULT_PORTS[scheme]):
        return None
    return origin_of(scheme, normalise_host(u.host), port)


def _mark_commit(slot: _Slot, page: Page, frame: Frame) -> None:
    if slot.active and slot.page is page and frame.parent_frame is None:
        slot.committed = True


async def _close_page(page: Page) -> None:
    with contextlib.suppress(PlaywrightError, TimeoutError):
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await page.close()


async def _refuse_websocket(ws: Any) -> None:
    # Reading a page never needs a live socket, and the route handler cannot check its frames.
    await ws.close()
