from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from fathom.corpus.pages import is_js_page, paragraphs
from fathom.corpus.store import Corpus
from fathom.corpus.web import LocalWeb
from fathom.tools.fetch.browser import CHROMIUM_ARGS


@pytest.fixture(scope="module")
def web(small_corpus: Corpus) -> Iterator[LocalWeb]:
    with LocalWeb(small_corpus, js_share=0.15) as site:
        yield site


def _static_and_js(web: LocalWeb) -> tuple[str, str]:
    long_docs = [d.id for d in web.corpus if len(d.text) > 400]
    static = next(i for i in long_docs if not web.is_js(i))
    js = next(i for i in long_docs if web.is_js(i))
    return static, js


def test_article_page_has_text_and_boilerplate(web: LocalWeb) -> None:
    static, _ = _static_and_js(web)
    doc = web.corpus.get(static)
    r = httpx.get(web.url_for(static))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert f"<h1>{doc.title}</h1>" in html or "<h1>" in html
    assert "<title>" in html and "</title>" in html
    for para in paragraphs(doc.text):
        assert "<p>" in html and para.split(" ")[0] in html
    assert "<nav" in html and "<footer" in html and "<aside" in html and "Related articles" in html
    assert html.count('href="/wiki/') >= 4  # related links to other documents
    assert "data-fathom-js" not in html


def test_js_page_needs_a_browser(web: LocalWeb) -> None:
    _, js = _static_and_js(web)
    doc = web.corpus.get(js)
    html = httpx.get(web.url_for(js)).text
    assert 'data-fathom-js="1"' in html
    assert "<script>" in html and "createElement" in html
    # None of the article's text is in the raw HTML: only the script can put it there.
    for sentence in paragraphs(doc.text)[0].split(". ")[:3]:
        if len(sentence) > 20:
            assert sentence not in html
    assert "<nav" in html and "<footer" in html


def test_js_share_is_deterministic_and_close_to_target(small_corpus: Corpus) -> None:
    ids = small_corpus.ids()
    share = sum(is_js_page(i, 0.15) for i in ids) / len(ids)
    assert 0.12 < share < 0.18
    assert [is_js_page(i, 0.15) for i in ids[:50]] == [is_js_page(i, 0.15) for i in ids[:50]]
    assert not any(is_js_page(i, 0.0) for i in ids)


def test_index_robots_and_404(web: LocalWeb) -> None:
    with httpx.Client(base_url=web.base_url) as client:
        index = client.get("/")
        assert index.status_code == 200 and "All articles" in index.text
        assert index.text.count('href="/wiki/') >= 200
        assert 'rel="next"' in index.text
        assert client.get("/?page=2").text != index.text
        assert client.get("/?page=notanumber").status_code == 200
        robots = client.get("/robots.txt")
        assert robots.status_code == 200 and "Disallow: /private/" in robots.text
        missing = client.get("/wiki/does-not-exist")
        assert missing.status_code == 404 and "Not found" in missing.text
        assert client.get("/elsewhere").status_code == 404
        assert client.post("/", content=b"x=1").status_code == 405
        head = client.head(web.url_for(web.corpus.ids()[0]))
        assert head.status_code == 200 and int(head.headers["content-length"]) > 500 and head.content == b""


def test_keep_alive_and_pipelining(web: LocalWeb) -> None:
    doc_id = web.corpus.ids()[0]
    request = f"GET /wiki/{doc_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection((web.host, web.port), timeout=5) as sock:
        sock.sendall(request * 3 + b"GET /robots.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 4
    assert data.endswith(b"Allow: /\n")


def test_start_stop_and_ports(small_corpus: Corpus) -> None:
    site = LocalWeb(small_corpus)
    with pytest.raises(RuntimeError):
        _ = site.base_url
    site.start()
    url = site.base_url
    assert httpx.get(url + "/robots.txt").status_code == 200
    site.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/robots.txt")
    # A port already taken is reported by start(), not lost in the thread.
    with LocalWeb(small_corpus) as first, pytest.raises(OSError):
        LocalWeb(small_corpus, port=first.port).start()


@pytest.mark.slow
async def test_browser_renders_js_page(web: LocalWeb) -> None:
    from playwright.async_api import async_playwright

    _, js = _static_and_js(web)
    doc = web.corpus.get(js)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=list(CHROMIUM_ARGS),
        )
        try:
            page = await browser.new_page()
            await page.goto(web.url_for(js))
            await page.wait_for_selector("main[data-rendered='1']", timeout=10_000)
            text = await page.inner_text("main")
        finally:
            await browser.close()
    assert doc.title in text
    assert paragraphs(doc.text)[0][:60] in text


def test_main_text_extractor_strips_the_boilerplate(web: LocalWeb) -> None:
    import trafilatura

    static, _ = _static_and_js(web)
    doc = web.corpus.get(static)
    extracted = trafilatura.extract(httpx.get(web.url_for(static)).text) or ""
    assert doc.text[:60] in extracted
    for boilerplate in ("Related articles", "Privacy policy", "Main page", "Printable version"):
        assert boilerplate not in extracted
