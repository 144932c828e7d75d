"""Hostile pages against the browser path (real Chromium, real local servers).

Every page here is served by the allowlisted test origin; what it attacks is another local
address the guard refuses. The servers below record what actually reached them: requests, and
bare TCP connections (Chromium pre-connects without sending a byte).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest
from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, SSRFError
from fathom.tools.fetch.browser import BrowserPool
from fathom.tools.fetch.ssrf import SSRFGuard
from fetch_site import (
    ARTICLE_SENTENCE,
    BAIT_KINDS,
    DOM_BOMB_CHARS,
    JS_SENTENCE,
    SECRET,
    STREAMS,
    Site,
    _serve,
    article_html,
)

pytestmark = pytest.mark.slow


class CountingServer:
    """An HTTP server on a refused address that counts connections and requests of any method."""

    def __init__(self, host: str = "127.0.0.2") -> None:
        self.connections = 0
        self.requests: list[str] = []
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return None

            def _count(self) -> None:
                counter.requests.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = do_HEAD = do_OPTIONS = _count

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[Any, Any]:
                pair = super().get_request()
                counter.connections += 1
                return pair

        self._server = Server((host, 0), Handler)
        self.base = f"http://{host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class AcceptCounter:
    """A bare listening TCP socket that records every accepted connection and closes it, and a UDP
    socket on the same port that records every datagram (WebRTC's STUN)."""

    def __init__(self, host: str = "127.0.0.3") -> None:
        self.accepted: list[tuple[str, int]] = []
        self.datagrams: list[tuple[str, int]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        port = self._sock.getsockname()[1]
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((host, port))
        self.base = f"http://{host}:{port}"
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, addr = self._sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(addr)
            conn.close()

    def _receive(self) -> None:
        while True:
            try:
                _, addr = self._udp.recvfrom(4096)
            except OSError:  # closed
                return
            self.datagrams.append(addr)

    def close(self) -> None:
        self._sock.close()
        self._udp.close()


@pytest.fixture
def counter() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


@pytest.fixture
async def pool(site: Site) -> AsyncIterator[BrowserPool]:
    p = BrowserPool(FetchSettings(browser_contexts=1), SSRFGuard([site.base]))
    yield p
    await p.aclose()


def _with_target(site: Site, path: str, target: str) -> str:
    sep = "&" if "?" in path else "?"
    return site.url(f"{path}{sep}to={quote(target, safe='')}")


# --- item 1: the whole context is guarded, popups closed, nothing left running -----------------


async def test_popups_and_timers_never_reach_a_refused_address(
    pool: BrowserPool, site: Site, counter: CountingServer
) -> None:
    page = await pool.fetch(_with_target(site, "/popups", counter.base), deadline_s=20)
    assert ARTICLE_SENTENCE in page.body.decode()
    await asyncio.sleep(2.0)  # popups' and the page's timers would fire many times in this while
    assert counter.requests == []
    assert counter.connections == 0


async def test_nothing_keeps_running_after_a_fetch_returns(pool: BrowserPool, site: Site) -> None:
    site.hits["/tick"] = 0
    page = await pool.fetch(site.url("/ticker"), deadline_s=20)
    assert ARTICLE_SENTENCE in page.body.decode()
    # The page's timer logs and asks the (allowed) server every 20 ms while it runs. Its console
    # is watched on the pool's context: a refused request alone would not show the timer stopped.
    ticks: list[str] = []
    context = pool._context
    assert context is not None
    context.on("console", lambda message: ticks.append(message.text) if message.text == "tick" else None)
    at_return = site.hits.get("/tick", 0)
    await asyncio.sleep(2.0)
    assert ticks == []
    assert site.hits.get("/tick", 0) == at_return
    # The same slot reads the next page normally (its scripts are back on).
    page = await pool.fetch(site.url("/js"), deadline_s=20)
    assert JS_SENTENCE in page.body.decode()


# --- item 2: byte caps on every routed response and on the rendered content --------------------


async def test_fifty_megabyte_page_stops_at_the_cap(pool: BrowserPool, site: Site) -> None:
    with pytest.raises(FetchError, match="byte cap") as info:
        await pool.fetch(site.url("/huge50"), deadline_s=30)
    assert "deadline" not in str(info.value)
    # The server was cut off near the cap (plus socket buffers), not read to the end.
    sent = await asyncio.to_thread(STREAMS.wait, "huge50", 30.0)
    assert sent < 20 * 1024 * 1024


async def test_gzip_bomb_stops_at_the_cap(pool: BrowserPool, site: Site) -> None:
    with pytest.raises(FetchError, match="byte cap") as info:
        await pool.fetch(site.url("/gzip-bomb"), deadline_s=30)
    assert "deadline" not in str(info.value)


async def test_oversized_subresource_is_refused_and_the_page_still_reads(
    pool: BrowserPool, site: Site
) -> None:
    html = (await pool.fetch(site.url("/fetch-huge"), deadline_s=20)).body.decode()
    assert ARTICLE_SENTENCE in html
    assert '<p id="out">REFUSED</p>' in html


async def test_rendered_content_is_cut_at_the_cap(site: Site) -> None:
    settings = FetchSettings(browser_contexts=1)
    p = BrowserPool(settings, SSRFGuard([site.base]))
    try:
        bomb = await p.fetch(site.url("/dom-bomb"), deadline_s=20)
        liar = await p.fetch(site.url("/liar"), deadline_s=20)
    finally:
        await p.aclose()
    assert 4 * settings.max_html_bytes < DOM_BOMB_CHARS
    assert bomb.truncated
    assert len(bomb.body) <= settings.max_html_bytes
    assert ARTICLE_SENTENCE in bomb.body.decode()
    # The liar's DOM is small; its own slice/outerHTML/documentElement would have returned 12 MB.
    assert not liar.truncated
    assert ARTICLE_SENTENCE in liar.body.decode()
    assert "lie lie" not in liar.body.decode() and len(liar.body) < 10_000


# --- item 3: one resolution per name, and connections go to the checked address -----------------


async def test_browser_connects_to_the_checked_address_not_a_rebound_one() -> None:
    good_server, good = _serve(
        "127.0.0.1",
        lambda port: {
            "/": lambda q: (
                200,
                {"Content-Type": "text/html"},
                (
                    article_html("Rebind", "The first answer was the one checked.")
                    + "<script>fetch('/data').then(r => r.text()).then(t => {"
                    " const p = document.createElement('p'); p.textContent = t;"
                    " document.body.appendChild(p); });</script>"
                ).encode(),
            ),
            "/data": lambda q: (200, {"Content-Type": "text/plain"}, b"Script data from the checked server."),
        },
    )
    # The rebound address: same port on another loopback address, serving the secret.
    evil_server, evil = _serve(
        "127.0.0.2",
        lambda port: {
            "/": lambda q: (200, {"Content-Type": "text/html"}, f"<p>{SECRET}</p>".encode()),
            "/data": lambda q: (200, {"Content-Type": "text/plain"}, SECRET.encode()),
        },
        port=good.port,
    )
    lookups: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) == 1 else ["127.0.0.2"]

    origin = f"http://rebind.fathom.test:{good.port}"
    p = BrowserPool(FetchSettings(browser_contexts=1), SSRFGuard([origin], resolver=rebinding))
    try:
        page = await p.fetch(origin + "/", deadline_s=20)
    finally:
        await p.aclose()
        for server in (good_server, evil_server):
            server.shutdown()
            server.server_close()
    html = page.body.decode()
    assert "The first answer was the one checked." in html
    assert "Script data from the checked server." in html
    assert SECRET not in html
    assert evil.hits == {}
    assert lookups == ["rebind.fathom.test"]  # resolved once, by the guard


# --- item 4: no socket to a refused address, whatever the page does ------------------------------


async def test_no_connection_to_a_refused_address_for_any_construct(pool: BrowserPool, site: Site) -> None:
    listener = AcceptCounter()
    outcomes: dict[str, str] = {}
    try:
        for kind in BAIT_KINDS:
            try:
                await pool.fetch(_with_target(site, f"/bait?kind={kind}", listener.base), deadline_s=20)
                outcomes[kind] = "read"
            except FetchError as exc:
                outcomes[kind] = type(exc).__name__
        await asyncio.sleep(1.0)  # late connections (prerender, popups, workers) have time to land
    finally:
        listener.close()
    assert listener.accepted == [], outcomes
    assert listener.datagrams == [], outcomes
    # A page that leaves for the refused address is an error, never a page.
    assert outcomes["location"] == "SSRFError"


# --- item 5: a refused navigation is a tool error, never Chromium's error page -----------------


async def test_page_navigating_to_a_refused_address_is_a_clear_error(
    pool: BrowserPool, site: Site, secret_site: Site
) -> None:
    target = secret_site.url("/secret")
    with pytest.raises(SSRFError) as info:
        await pool.fetch(_with_target(site, "/navigate-away", target), deadline_s=20)
    message = str(info.value)
    assert target in message and "loopback" in message
    assert "chrome-error" not in message and "ERR_BLOCKED_BY_CLIENT" not in message
    # The pool is fine afterwards.
    page = await pool.fetch(site.url("/article"), deadline_s=20)
    assert ARTICLE_SENTENCE in page.body.decode() and page.final_url == site.url("/article")


# --- item 6: the rendered path refuses binary bodies like the httpx path ------------------------


async def test_random_bytes_served_as_html_are_refused(pool: BrowserPool, site: Site) -> None:
    with pytest.raises(FetchError, match="binary"):
        await pool.fetch(site.url("/random-bytes"), deadline_s=20)
