"""The local web: every corpus document as an HTML page on a loopback HTTP server.

A small HTTP/1.1 server on asyncio (keep-alive, pipelining, GET/HEAD) running in its own thread,
so tests and local mode can use it from synchronous or asynchronous code alike. Pages are
rendered on first request and cached; one core serves thousands of requests per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

from fathom.core.logging import get_logger
from fathom.corpus.documents import Document
from fathom.corpus.pages import (
    ROBOTS_TXT,
    is_js_page,
    render_article,
    render_index,
    render_not_found,
    render_private,
)
from fathom.corpus.store import Corpus

log = get_logger(__name__)

INDEX_PAGE_SIZE = 200
_MAX_HEADER_BYTES = 64 * 1024
_RELATED = 6
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


class _Response:
    __slots__ = ("body", "content_type", "status")

    def __init__(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type


class LocalSite:
    """Routing and rendering, independent of the transport (easy to test on its own)."""

    def __init__(self, corpus: Corpus, js_share: float = 0.15, cache_pages: int = 4096) -> None:
        self.corpus = corpus
        self.js_share = js_share
        self._ids = corpus.ids()
        self._position = {doc_id: i for i, doc_id in enumerate(self._ids)}
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_pages = cache_pages
        self._lock = threading.Lock()

    def is_js(self, doc_id: str) -> bool:
        return is_js_page(doc_id, self.js_share)

    def related(self, doc_id: str) -> list[Document]:
        """Neighbours in build order (often the same source and topic) plus a few hashed picks."""
        n = len(self._ids)
        pos = self._position[doc_id]
        picks: list[int] = [(pos + d) % n for d in (1, 2, 3, -1)]
        seed = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big")
        while len(picks) < _RELATED and n > 1:
            picks.append(seed % n)
            seed //= n if n > 1 else 1
            seed = seed or 7919 * (len(picks) + 1)
        seen: dict[str, None] = {}
        for i in picks:
            if self._ids[i] != doc_id:
                seen.setdefault(self._ids[i], None)
        return [self.corpus.get(i) for i in seen]

    def article(self, doc_id: str) -> bytes | None:
        with self._lock:
            cached = self._cache.get(doc_id)
            if cached is not None:
                self._cache.move_to_end(doc_id)
                return cached
        if doc_id not in self.corpus:
            return None
        page = render_article(self.corpus.get(doc_id), self.related(doc_id), self.is_js(doc_id))
        with self._lock:
            self._cache[doc_id] = page
            if len(self._cache) > self._cache_pages:
                self._cache.popitem(last=False)
        return page

    def index_page(self, page: int) -> bytes:
        pages = max(1, -(-len(self._ids) // INDEX_PAGE_SIZE))
        page = min(max(page, 1), pages)
        chunk = self._ids[(page - 1) * INDEX_PAGE_SIZE : page * INDEX_PAGE_SIZE]
        entries = [(i, self.corpus.get(i).title) for i in chunk]
        return render_index(entries, page, pages, len(self._ids))

    def respond(self, method: str, target: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response(405, b"method not allowed\n", "text/plain; charset=utf-8")
        parts = urlsplit(target)
        path = unquote(parts.path)
        if path == "/":
            try:
                page = int(parse_qs(parts.query).get("page", ["1"])[0])
            except ValueError:
                page = 1
            return _Response(200, self.index_page(page))
        if path == "/robots.txt":
            return _Response(200, ROBOTS_TXT, "text/plain; charset=utf-8")
        if path.startswith("/wiki/"):
            body = self.article(path[len("/wiki/") :])
            if body is not None:
                return _Response(200, body)
        if path.startswith("/private/"):
            return _Response(200, render_private(path))
        return _Response(404, render_not_found(path))


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, site: LocalSite) -> None:
        self._site = site
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while self._transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEADER_BYTES:
                    self._send(_Response(431, b"headers too large\n", "text/plain"), False, False)
                return
            head = self._buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            request = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body_len = (
                int(headers.get("content-length", "0") or 0)
                if headers.get("content-length", "0").isdigit()
                else -1
            )
            if body_len < 0 or len(request) != 3:
                self._send(_Response(400, b"bad request\n", "text/plain"), False, False)
                return
            if len(self._buf) < end + 4 + body_len:
                return  # wait for the (ignored) request body
            self._buf = self._buf[end + 4 + body_len :]
            method, target, version = request
            conn = headers.get("connection", "").lower()
            keep = (version == "HTTP/1.1" and conn != "close") or (
                version == "HTTP/1.0" and conn == "keep-alive"
            )
            try:
                response = self._site.respond(method, target)
            except Exception:  # a rendering bug must not kill the server thread
                log.exception("local web request failed", target=target)
                response = _Response(500, b"internal error\n", "text/plain")
            self._send(response, keep, method == "HEAD")
            if not keep:
                return

    def _send(self, r: _Response, keep: bool, head_only: bool) -> None:
        assert self._transport is not None
        header = (
            f"HTTP/1.1 {r.status} {_REASONS.get(r.status, 'Error')}\r\n"
            f"Content-Type: {r.content_type}\r\nContent-Length: {len(r.body)}\r\n"
            f"Server: fathom-localweb\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode("latin-1")
        self._transport.write(header if head_only else header + r.body)
        if not keep:
            self._transport.close()
            self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


class LocalWeb:
    """Serves a corpus as a small web site in a background thread."""

    def __init__(
        self,
        corpus: Corpus | Path | str,
        host: str = "127.0.0.1",
        port: int = 0,
        js_share: float = 0.15,
    ) -> None:
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(Path(corpus))
        self.site = LocalSite(self.corpus, js_share=js_share)
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def js_share(self) -> float:
        return self.site.js_share

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalWeb is not started")
        return f"http://{self.host}:{self.port}"

    def url_for(self, doc_id: str) -> str:
        return f"{self.base_url}/wiki/{doc_id}"

    def is_js(self, doc_id: str) -> bool:
        return self.site.is_js(doc_id)

    def start(self) -> LocalWeb:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="fathom-localweb", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            self._thread = None
            raise self._error
        log.info("local web started", base_url=self.base_url, documents=len(self.corpus))
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                loop.create_server(lambda: _HttpProtocol(self.site), self.host, self.port, backlog=1024)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:  # report bind errors to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._server = None

    def serve_forever(self) -> None:
        """Block the calling thread until interrupted (for the CLI)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> LocalWeb:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
