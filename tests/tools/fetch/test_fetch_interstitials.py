"""Bot checks and consent walls served by a real local server come back as tool errors, not text.

The pages are those of ``pages/`` (written like real sites), served over HTTP on 127.0.0.1 and read
through the real fetch chain and ``read_for_tool``, the function behind ``query_url``. One test
renders a script-built article with a consent dialog in headless Chromium.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fathom.core.config import FetchSettings
from fathom.tools.base import ToolResult
from fathom.tools.fetch.chain import FetchChain, ReadResult
from fathom.tools.fetch.snapshots import SnapshotStore
from fathom.tools.fetch.ssrf import SSRFGuard
from fathom.tools.toolbox import read_for_tool
from fetch_site import Site, _serve

PAGES = Path(__file__).parent / "pages"
HTML = {"Content-Type": "text/html; charset=utf-8"}

# A script-built article: the server sends a shell, the script writes the article in <div>s and
# then a consent platform's dialog, with more text than the article, over it.
CONSENT_APP = """<!doctype html><html><head><title>Ferry timetable changes</title></head><body>
<div id="root"></div>
<script>
  const root = document.getElementById('root');
  root.innerHTML = '<main><h1>Ferry timetable changes from Monday</h1>'
    + '<div class="block">The 07:15 sailing from Oban to Craignure moves to 07:30 from Monday 4 March.</div>'
    + '<div class="block">The last evening return leaves Craignure at 20:05 instead of 19:40.</div>'
    + '<div class="block">Bookings made for the old times will be moved by the operator.</div></main>';
  const cmp = document.createElement('div');
  cmp.id = 'sp_message_container_1022';
  cmp.innerHTML = '<div role="dialog" aria-modal="true"><h2>We care about your privacy</h2>'
    + '<p>' + 'We and our 612 partners use cookies and other technologies to store and access personal '
    + 'data on your device, such as browsing data or unique identifiers, for personalised ads and '
    + 'content, ad and content measurement, audience research and services development. '.repeat(3)
    + '</p><button>Accept all</button><button>Reject all</button><button>Manage options</button></div>';
  document.body.appendChild(cmp);
  root.setAttribute('aria-hidden', 'true');
</script></body></html>"""


def _file(name: str) -> bytes:
    return (PAGES / name).read_bytes()


@pytest.fixture(scope="module")
def pages_site() -> Iterator[Site]:
    routes = {
        "/news": lambda q: (200, HTML, _file("news_article_cookie_banner.html")),
        "/hikes": lambda q: (200, HTML, _file("listicle_40_hikes.html")),
        "/cookies": lambda q: (200, HTML, _file("cookie_recipe.html")),
        # Challenge pages answered with 200, as several vendors do (a 403 is already an HTTP error).
        "/challenge": lambda q: (200, HTML, _file("cloudflare_challenge.html")),
        "/captcha": lambda q: (200, HTML, _file("captcha_robot_check.html")),
        "/consent": lambda q: (200, HTML, _file("consent_wall.html")),
        "/ferry": lambda q: (200, HTML, CONSENT_APP.encode()),
        "/robots.txt": lambda q: (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n"),
    }
    server, site = _serve("127.0.0.1", lambda port: routes)
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture
async def chain(pages_site: Site, tmp_path: Path) -> AsyncIterator[FetchChain]:
    settings = FetchSettings(browser="auto", deadline_s=10, browser_deadline_s=30)
    c = FetchChain(settings, SSRFGuard([pages_site.base]), SnapshotStore(tmp_path / "snapshots"))
    yield c
    await c.aclose()


async def _read(chain: FetchChain, url: str, render: bool | None = None) -> ReadResult | ToolResult:
    return await read_for_tool(chain, url, render=render, limit_s=60)


@pytest.mark.parametrize(
    ("path", "name", "kind"),
    [
        ("/challenge", "cloudflare_challenge.html", "a bot check"),
        ("/captcha", "captcha_robot_check.html", "a bot check"),
        ("/consent", "consent_wall.html", "a cookie-consent wall"),
    ],
)
async def test_blocked_page_is_a_tool_error_and_its_body_is_kept(
    chain: FetchChain, pages_site: Site, path: str, name: str, kind: str
) -> None:
    url = pages_site.url(path)
    result = await _read(chain, url)
    assert isinstance(result, ToolResult)
    assert not result.ok
    assert result.meta["error"] == "PageBlockedError"
    assert result.text.startswith(f"Error (query_url): the site answered with {kind} instead of the page")
    assert url in result.text
    # Nothing is lost: the body was snapshotted before it was read, and can be examined.
    assert chain.snapshots is not None
    stored = chain.snapshots.latest(url)
    assert stored is not None and stored[1] == _file(name)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/news", "Insurers paid out an estimated £6.1 million."),
        ("/hikes", "Hike number 40, "),
        ("/cookies", "225 g unsalted butter"),
    ],
)
async def test_real_pages_read_through_the_chain(
    chain: FetchChain, pages_site: Site, path: str, needle: str
) -> None:
    result = await _read(chain, pages_site.url(path))
    assert isinstance(result, ReadResult), result
    assert result.page.fetcher == "httpx"
    assert needle in result.text.text
    assert "partners" not in result.text.text


@pytest.mark.slow
async def test_rendered_consent_dialog_is_removed_from_a_script_built_article(
    chain: FetchChain, pages_site: Site
) -> None:
    result = await _read(chain, pages_site.url("/ferry"), render=True)
    assert isinstance(result, ReadResult), result
    assert result.page.fetcher == "browser"
    html = result.page.body.decode()
    assert "612 partners" in html  # the dialog really was in the rendered page
    text = result.text.text
    assert "The 07:15 sailing from Oban to Craignure moves to 07:30 from Monday 4 March." in text
    assert "The last evening return leaves Craignure at 20:05 instead of 19:40." in text
    assert "partners" not in text and "Accept all" not in text
