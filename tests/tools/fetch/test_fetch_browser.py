"""Real headless Chromium: script-built pages, the SSRF route guard, deadlines, recycling, the chain."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, SSRFError
from fathom.tools.fetch.browser import BrowserPool
from fathom.tools.fetch.chain import FetchChain, build_fetch_chain
from fathom.tools.fetch.ssrf import SSRFGuard
from fetch_site import ARTICLE_SENTENCE, JS_SENTENCE, SECRET, XHR_SENTENCE, Site

pytestmark = pytest.mark.slow


@pytest.fixture
async def pool(site: Site) -> AsyncIterator[BrowserPool]:
    p = BrowserPool(FetchSettings(browser_contexts=2, browser_recycle_after=3), SSRFGuard([site.base]))
    yield p
    await p.aclose()


async def test_js_page_rendered_and_pool_recycles(pool: BrowserPool, site: Site) -> None:
    assert not pool.started  # lazy: nothing launched before the first fetch
    first_pid = None
    for _ in range(4):  # recycle_after=3: the fourth fetch runs on a relaunched browser
        page = await pool.fetch(site.url("/js"), deadline_s=20)
        first_pid = first_pid or pool.browser_pid()
        html = page.body.decode()
        assert page.fetcher == "browser" and page.content_type == "text/html"
        assert JS_SENTENCE in html
        assert XHR_SENTENCE in html  # the settle wait let the script's fetch finish
    assert pool.started
    assert pool.browser_pid() != first_pid


async def test_browser_refuses_private_redirect_from_script(site: Site, secret_site: Site) -> None:
    guarded = BrowserPool(FetchSettings(browser_contexts=1), SSRFGuard([site.base]))
    try:
        html = (await guarded.fetch(site.url("/js-exfil"), deadline_s=20)).body.decode()
    finally:
        await guarded.aclose()
    assert SECRET not in html
    assert "BLOCKED" in html
    # Control: when the internal origin is allowlisted the same script does get the secret.
    open_pool = BrowserPool(FetchSettings(browser_contexts=1), SSRFGuard([site.base, secret_site.base]))
    try:
        html = (await open_pool.fetch(site.url("/js-exfil"), deadline_s=20)).body.decode()
    finally:
        await open_pool.aclose()
    assert "GOT " + SECRET in html


async def test_browser_refuses_forbidden_navigation(pool: BrowserPool, secret_site: Site) -> None:
    with pytest.raises(SSRFError):
        await pool.fetch(secret_site.url("/secret"), deadline_s=10)
    with pytest.raises(SSRFError):
        await pool.fetch("http://169.254.169.254/latest/meta-data/", deadline_s=10)


async def test_browser_deadline_closes_page_and_pool_recovers(pool: BrowserPool, site: Site) -> None:
    await pool.fetch(site.url("/article"), deadline_s=20)  # warm: launch is not part of the timing
    started = time.monotonic()
    with pytest.raises(FetchError, match="deadline"):
        await pool.fetch(site.url("/slow?s=10"), deadline_s=1.0)
    assert time.monotonic() - started < 6.0
    page = await pool.fetch(site.url("/article"), deadline_s=20)
    assert ARTICLE_SENTENCE in page.body.decode()


async def test_browser_error_status(pool: BrowserPool, site: Site) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        await pool.fetch(site.url("/missing"), deadline_s=20)


async def test_browser_relaunches_after_crash(pool: BrowserPool, site: Site) -> None:
    await pool.fetch(site.url("/article"), deadline_s=20)
    pid = pool.browser_pid()
    assert pid is not None
    import os
    import signal

    os.kill(pid, signal.SIGKILL)  # no waiting for the disconnect event: the next fetch must cope
    page = await pool.fetch(site.url("/js"), deadline_s=20)
    assert JS_SENTENCE in page.body.decode()
    assert pool.browser_pid() != pid


async def test_chain_auto_renders_script_built_page(site: Site) -> None:
    chain = build_fetch_chain(FetchSettings(browser_contexts=1), [site.base], extract_workers=0)
    try:
        js = await chain.read(site.url("/js"))
        plain = await chain.read(site.url("/article"))
        forced = await chain.read(site.url("/article"), render=True)
    finally:
        await chain.aclose()
    assert js.page.fetcher == "browser"
    assert JS_SENTENCE in js.text.text and XHR_SENTENCE in js.text.text
    assert plain.page.fetcher == "httpx"
    assert forced.page.fetcher == "browser" and ARTICLE_SENTENCE in forced.text.text


async def test_chain_never_mode_does_not_render(site: Site) -> None:
    chain: FetchChain = build_fetch_chain(FetchSettings(browser="never"), [site.base], extract_workers=0)
    try:
        result = await chain.read(site.url("/js"))
        with pytest.raises(FetchError, match="browser is disabled"):
            await chain.read(site.url("/js"), render=True)
    finally:
        await chain.aclose()
    assert result.page.fetcher == "httpx"
    assert JS_SENTENCE not in result.text.text


async def test_browser_checks_every_navigation_redirect_hop(
    pool: BrowserPool, site: Site, secret_site: Site
) -> None:
    page = await pool.fetch(site.url("/chain?n=2"), deadline_s=20)
    assert page.final_url == site.url("/chain?n=0")
    assert ARTICLE_SENTENCE in page.body.decode()
    with pytest.raises(SSRFError, match="loopback"):
        await pool.fetch(site.url(f"/redirect?to={secret_site.url('/secret')}"), deadline_s=20)
    with pytest.raises(FetchError, match="redirect loop"):
        await pool.fetch(site.url("/loop-a"), deadline_s=20)
