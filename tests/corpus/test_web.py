from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fathom.core.config import Settings, WebSettings
from fathom.core.errors import ConfigError
from fathom.corpus.pages import is_js_page, paragraphs
from fathom.corpus.store import Corpus
from fathom.corpus.web import HEALTH_PATH, LocalWeb, corpus_id, ensure_local_web
from fathom.tools.fetch.browser import CHROMIUM_ARGS

from tests.conftest import free_port


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


# -- the stable origin: health, reuse, refusal, its own process -----------------------------------


def _settings(port: int) -> Settings:
    return Settings(web=WebSettings(host="127.0.0.1", port=port))


def test_health_names_the_service_and_the_corpus(web: LocalWeb, small_corpus_dir: Path) -> None:
    r = httpx.get(web.base_url + HEALTH_PATH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    health = r.json()
    assert health["service"] == "fathom-local-web"
    assert health["corpus"] == corpus_id(small_corpus_dir) == web.site.corpus_id
    assert health["corpus"].startswith(f"{small_corpus_dir.name}:{len(web.corpus)}:")
    assert health["standalone"] is False  # in process: it stops with whoever started it


def test_port_zero_starts_a_private_web_on_a_free_port(small_corpus_dir: Path) -> None:
    origin, stop = ensure_local_web(_settings(0), small_corpus_dir)
    assert stop is not None
    try:
        port = int(origin.rsplit(":", 1)[1])
        assert port != 0 and httpx.get(origin + HEALTH_PATH).json()["service"] == "fathom-local-web"
    finally:
        stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(origin + HEALTH_PATH)


def test_a_free_configured_port_is_started_then_reused(small_corpus_dir: Path) -> None:
    settings = _settings(free_port())
    origin, stop = ensure_local_web(settings, small_corpus_dir)
    assert origin == settings.web.origin and stop is not None
    try:
        again, stop_again = ensure_local_web(settings, small_corpus_dir)
        assert again == origin and stop_again is None  # the first one keeps serving; nothing to stop
        assert httpx.get(origin + "/robots.txt").status_code == 200
    finally:
        stop()


def test_a_web_for_another_corpus_on_the_port_is_refused(small_corpus_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-corpus"
    shutil.copytree(small_corpus_dir, other)
    settings = _settings(free_port())
    _origin, stop = ensure_local_web(settings, small_corpus_dir)
    assert stop is not None
    try:
        with pytest.raises(ConfigError) as err:
            ensure_local_web(settings, other)
        message = str(err.value)
        assert str(settings.web.port) in message and "FATHOM_WEB__PORT" in message
        assert "another corpus" in message
    finally:
        stop()


class _NotFathom(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"service": "something-else"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def test_a_port_held_by_another_program_is_refused(small_corpus_dir: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotFathom)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        with pytest.raises(ConfigError) as err:
            ensure_local_web(_settings(port), small_corpus_dir)
        assert f"127.0.0.1:{port}" in str(err.value) and "FATHOM_WEB__PORT" in str(err.value)
        assert "not a Fathom local web" in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_held_by_a_non_http_listener_is_refused(small_corpus_dir: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def close_each() -> None:
            conn, _ = listener.accept()
            conn.close()

        thread = threading.Thread(target=close_each, daemon=True)
        thread.start()
        with pytest.raises(ConfigError) as err:
            ensure_local_web(_settings(port), small_corpus_dir)
        thread.join(timeout=5)
    assert str(port) in str(err.value) and "FATHOM_WEB__PORT" in str(err.value)


def test_serve_web_is_its_own_process_and_sigterm_stops_it(small_corpus_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "FATHOM_WEB__PORT": str(port),
        "FATHOM_SEARCH__INDEX_DIR": str(small_corpus_dir),
        "FATHOM_DATA_DIR": str(tmp_path / "data"),
        "FATHOM_LOG_JSON": "true",
    }
    proc = subprocess.Popen([sys.executable, "-m", "fathom.serve.web"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        health = None
        while health is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=2).json()
            except httpx.TransportError:
                time.sleep(0.1)
        assert health is not None, proc.stderr.read().decode() if proc.stderr else ""
        assert health["corpus"] == corpus_id(small_corpus_dir) and health["standalone"] is True
        # A runtime in another process reuses it instead of starting its own.
        origin, stop = ensure_local_web(_settings(port), small_corpus_dir)
        assert origin == f"http://127.0.0.1:{port}" and stop is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any(r.get("event") == "local_web_stopped" and r.get("process") == "web" for r in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}{HEALTH_PATH}")
