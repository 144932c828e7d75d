"""HttpxFetcher against a real local server: caps, deadlines, redirects, statuses, types, charsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, SSRFError
from fathom.tools.fetch.content import read_page
from fathom.tools.fetch.httpx_fetcher import HttpxFetcher
from fathom.tools.fetch.politeness import DomainThrottle, RobotsCache
from fathom.tools.fetch.ssrf import SSRFGuard
from fetch_site import ARTICLE_SENTENCE, SECRET, Site, _serve


def make_settings(**overrides: object) -> FetchSettings:
    return FetchSettings(**{"deadline_s": 5.0, "max_redirects": 5, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def fetcher(site: Site) -> AsyncIterator[HttpxFetcher]:
    f = HttpxFetcher(make_settings(), SSRFGuard([site.base]))
    yield f
    await f.aclose()


async def test_plain_article(fetcher: HttpxFetcher, site: Site) -> None:
    page = await fetcher.fetch(site.url("/article"), deadline_s=5)
    assert page.status == 200
    assert page.content_type == "text/html"
    assert page.encoding == "utf-8"
    assert page.fetcher == "httpx"
    assert ARTICLE_SENTENCE.encode() in page.body
    assert not page.truncated


async def test_huge_page_is_cut_at_the_cap(site: Site) -> None:
    f = HttpxFetcher(make_settings(max_html_bytes=300_000), SSRFGuard([site.base]))
    try:
        page = await f.fetch(site.url("/huge"), deadline_s=10)
    finally:
        await f.aclose()
    assert page.truncated
    assert len(page.body) == 300_000
    text = read_page(page, make_settings())
    assert text.truncated and "huge page filler" in text.text


async def test_slow_page_hits_the_deadline_quickly(fetcher: HttpxFetcher, site: Site) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"deadline of 0\.5s exceeded"):
        await fetcher.fetch(site.url("/slow?s=10"), deadline_s=0.5)
    assert time.monotonic() - started < 3.0  # the request was cancelled, not awaited to the end


async def test_dripping_body_hits_the_deadline(fetcher: HttpxFetcher, site: Site) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="deadline"):
        await fetcher.fetch(site.url("/slow-body"), deadline_s=0.7)
    assert time.monotonic() - started < 3.0


async def test_redirect_loop_detected(fetcher: HttpxFetcher, site: Site) -> None:
    with pytest.raises(FetchError, match="redirect loop"):
        await fetcher.fetch(site.url("/loop-a"), deadline_s=5)


async def test_redirect_chain_within_and_over_the_limit(fetcher: HttpxFetcher, site: Site) -> None:
    page = await fetcher.fetch(site.url("/chain?n=5"), deadline_s=5)
    assert page.final_url == site.url("/chain?n=0")
    assert page.url == site.url("/chain?n=5")
    with pytest.raises(FetchError, match="more than 5 redirects"):
        await fetcher.fetch(site.url("/chain?n=6"), deadline_s=5)


async def test_redirect_to_private_address_refused(site: Site, secret_site: Site) -> None:
    target = secret_site.url("/secret")
    f = HttpxFetcher(make_settings(), SSRFGuard([site.base]))
    try:
        with pytest.raises(SSRFError, match=r"127\.0\.0\.2 is loopback"):
            await f.fetch(site.url(f"/redirect?to={target}"), deadline_s=5)
        for to in (
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/",
            "http://2130706433/",
            "file:///etc/passwd",
        ):
            with pytest.raises(SSRFError):
                await f.fetch(site.url(f"/redirect?to={to}"), deadline_s=5)
    finally:
        await f.aclose()
    # Control: the secret is really there, so the refusal above is what kept it out.
    both = HttpxFetcher(make_settings(), SSRFGuard([site.base, secret_site.base]))
    try:
        page = await both.fetch(site.url(f"/redirect?to={target}"), deadline_s=5)
    finally:
        await both.aclose()
    assert page.body.decode() == SECRET


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/broken", 500), ("/nowhere", 404)])
async def test_error_status_is_a_fetch_error(
    fetcher: HttpxFetcher, site: Site, path: str, status: int
) -> None:
    with pytest.raises(FetchError, match=f"HTTP {status}"):
        await fetcher.fetch(site.url(path), deadline_s=5)


@pytest.mark.parametrize(
    ("path", "encoding", "needle"),
    [
        ("/latin1", "cp1252", "Crème brûlée à la française"),
        ("/cp1252-meta", "cp1252", "Le café coûte 3 € — naïve façade"),
        ("/sjis", "cp932", "東京の天気"),
        ("/sjis-undeclared", None, "今日は晴れです"),
    ],
)
async def test_non_utf8_pages_decode_right(
    fetcher: HttpxFetcher, site: Site, path: str, encoding: str | None, needle: str
) -> None:
    page = await fetcher.fetch(site.url(path), deadline_s=5)
    if encoding is not None:
        assert page.encoding == encoding
    text = read_page(page, make_settings())
    assert needle in text.text
    assert "\ufffd" not in text.text


# Pages that declare no charset anywhere (no header parameter, no meta, no BOM), in the code page
# a legacy site of that language would use. Each sentence is what must come back, letter for letter.
UNDECLARED = {
    "/fr": ("latin-1", "La crème brûlée coûte 7 euros à la brasserie du théâtre, où l'on sert un café."),
    "/fr-long": (
        "cp1252",
        "Déjà connue au XVIIe siècle, la crème brûlée est un entremets composé d'une crème "
        "à base de jaunes d'œufs, de sucre et de lait, parfumée à la vanille — « un classique ».",
    ),
    "/de": ("latin-1", "Die Straße führt über die Brücke nach München; Größe und Schönheit überraschen."),
    "/es": ("latin-1", "¿Dónde está la estación? El niño comió jamón en la montaña, ¡qué día!"),
    "/pt": ("latin-1", "A ação do coração não é só emoção; São Paulo é a maior cidade do Brasil."),
    "/is": ("latin-1", "Þjóðhátíðardagur Íslendinga er haldinn hátíðlegur 17. júní ár hvert."),
    "/pl": ("cp1250", "Zażółć gęślą jaźń. Wrocław jest jednym z największych miast w Polsce."),
    "/ru": ("cp1251", "Москва - столица России, крупнейший по численности населения город страны."),
    "/el": ("cp1253", "Η Αθήνα είναι η πρωτεύουσα και η μεγαλύτερη πόλη της Ελλάδας."),
    "/utf8": ("utf-8", "La crème brûlée coûte 7 € — Straße, niño, Москва."),
}
# Czech without "ť" decodes in windows-1252 too ("Èeská"): a .cz host says which code page it is.
CZECH = "Česká republika je stát ve střední Evropě. Hlavní město je Praha, které leží na řece Vltavě."


def _undeclared_html(sentence: str) -> str:
    return f"<html><head><title>Page</title></head><body><h1>Page</h1><p>{sentence}</p></body></html>"


@pytest.fixture(scope="module")
def undeclared_site() -> Iterator[Site]:
    plain = {"Content-Type": "text/html"}  # no charset parameter
    routes = {
        path: (lambda body: lambda q: (200, plain, body))(_undeclared_html(text).encode(codec))
        for path, (codec, text) in UNDECLARED.items()
    }
    routes["/cz"] = lambda q: (200, plain, _undeclared_html(CZECH).encode("cp1250"))
    server, site = _serve("127.0.0.1", lambda port: routes)
    yield site
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", sorted(UNDECLARED))
async def test_undeclared_charset_decodes_right(undeclared_site: Site, path: str) -> None:
    codec, sentence = UNDECLARED[path]
    f = HttpxFetcher(make_settings(), SSRFGuard([undeclared_site.base]))
    try:
        page = await f.fetch(undeclared_site.url(path), deadline_s=5)
    finally:
        await f.aclose()
    assert page.body == _undeclared_html(sentence).encode(codec)  # real legacy bytes on the wire
    text = read_page(page, make_settings()).text
    assert sentence in text, f"decoded with {page.encoding}: {text!r}"


async def test_undeclared_charset_follows_the_hosts_country(undeclared_site: Site) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    origin = f"http://zpravy.example.cz:{undeclared_site.port}"
    f = HttpxFetcher(make_settings(), SSRFGuard([origin], resolver=resolver))
    try:
        page = await f.fetch(origin + "/cz", deadline_s=5)
    finally:
        await f.aclose()
    assert page.encoding == "cp1250"
    assert CZECH in read_page(page, make_settings()).text


@pytest.mark.parametrize(
    ("path", "media"),
    [
        ("/image.png", "image/png"),
        ("/archive.zip", "application/zip"),
        ("/unlabelled-binary", "application/zip"),
        ("/report.pdf", "application/pdf"),
        ("/mislabelled-pdf", "application/pdf"),  # served as text/html, sniffed as PDF
        ("/data.json", "application/json"),
        ("/notes.txt", "text/plain"),
        ("/feed.xml", "application/rss+xml"),
    ],
)
async def test_content_type_detection(fetcher: HttpxFetcher, site: Site, path: str, media: str) -> None:
    page = await fetcher.fetch(site.url(path), deadline_s=5)
    assert page.content_type == media


async def test_oversized_pdf_is_refused(site: Site) -> None:
    f = HttpxFetcher(make_settings(max_pdf_bytes=5_000), SSRFGuard([site.base]))
    try:
        with pytest.raises(FetchError, match=r"over the 5000 cap|larger than the 5000"):
            await f.fetch(site.url("/long.pdf"), deadline_s=5)
    finally:
        await f.aclose()


async def test_non_allowlisted_local_server_is_refused(site: Site) -> None:
    f = HttpxFetcher(make_settings(), SSRFGuard([]))
    try:
        with pytest.raises(SSRFError, match="loopback"):
            await f.fetch(site.url("/article"), deadline_s=5)
    finally:
        await f.aclose()


async def test_connection_goes_to_the_pinned_address(site: Site) -> None:
    # "pinned.fathom-test" exists only in this resolver, so the system resolver cannot be the one
    # that found the server: the transport connected to the IP the guard handed it.
    async def resolver(host: str, port: int) -> list[str]:
        assert host == "pinned.fathom-test"
        return ["127.0.0.1"]

    origin = f"http://pinned.fathom-test:{site.port}"
    f = HttpxFetcher(make_settings(), SSRFGuard([origin], resolver=resolver))
    try:
        page = await f.fetch(origin + "/article", deadline_s=5)
    finally:
        await f.aclose()
    assert ARTICLE_SENTENCE.encode() in page.body


async def test_keep_alive_reuses_connections(fetcher: HttpxFetcher, site: Site) -> None:
    pages = await asyncio.gather(*(fetcher.fetch(site.url("/article"), deadline_s=5) for _ in range(20)))
    assert all(p.status == 200 for p in pages)


async def test_robots_rules_from_a_real_server(site: Site) -> None:
    async with httpx.AsyncClient() as client:

        async def load(url: str) -> tuple[int, str]:
            r = await client.get(url)
            return r.status_code, r.text

        robots = RobotsCache(load, "FathomBot/0.1")
        assert await robots.allowed(site.base, site.url("/article"))
        assert not await robots.allowed(site.base, site.url("/private/page"))

        async def missing(url: str) -> tuple[int, str]:
            r = await client.get(site.url("/missing"))
            return r.status_code, r.text

        assert await RobotsCache(missing, "FathomBot").allowed("http://x", "http://x/private/a")

        async def broken(url: str) -> tuple[int, str]:
            r = await client.get(site.url("/broken"))
            return r.status_code, r.text

        assert not await RobotsCache(broken, "FathomBot").allowed("http://x", "http://x/a")


async def test_domain_throttle_caps_concurrency() -> None:
    throttle = DomainThrottle(concurrency=2, rps=1000)
    active = peak = 0

    async def job(host: str) -> None:
        nonlocal active, peak
        async with throttle.slot(host):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.01)
            active -= 1

    await asyncio.gather(*(job("a.example") for _ in range(10)))
    assert peak == 2
