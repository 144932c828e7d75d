"""The local web: every corpus document as an HTML page on a loopback HTTP server.

A small HTTP/1.1 server on asyncio (keep-alive, pipelining, GET/HEAD) running in its own thread,
so tests and local mode can use it from synchronous or asynchronous code alike. Pages are
rendered on first request and cached; one core serves thousands of requests per second.

Its origin is written into search hits, snapshots and reports, so it lives at a stable, configured
address (``settings.web``): ``ensure_local_web`` reuses a local web already serving the same corpus
there (``fathom serve web``, its own process, keeps one up across jobs), starts one in process when
the port is free, and refuses a port held by anything else. ``GET /__fathom/health`` says what a
server at that address is and which corpus it serves.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import http.client
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from fathom.core.errors import ConfigError
from fathom.core.logging import get_logger
from fathom.corpus.build import MANIFEST_FILE
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

if TYPE_CHECKING:
    from fathom.core.config import Settings

log = get_logger(__name__)

SERVICE_NAME = "fathom-local-web"
HEALTH_PATH = "/__fathom/health"
_PROBE_TIMEOUT_S = 2.0

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
        # True in ``fathom serve web``: its URLs outlive any one job. An in-process local web stops
        # with the command that started it (another process that reuses it should know).
        self.standalone = False
        try:
            self.corpus_id = corpus_id(corpus.path)
        except ConfigError:  # a corpus assembled in memory: no manifest to hash
            self.corpus_id = f"{Path(corpus.path).name}:{len(self._ids)}:unbuilt"

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
        if path == HEALTH_PATH:
            health = {"service": SERVICE_NAME, "corpus": self.corpus_id, "documents": len(self._ids),
                      "standalone": self.standalone}
            return _Response(200, json.dumps(health).encode(), "application/json")
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


def corpus_id(corpus_dir: Path | str) -> str:
    """A short id of a built corpus: its folder name, document count and a hash of its manifest.

    Computed from the manifest alone (without loading the documents), so a process can tell whether
    a running local web serves the corpus it wants before it loads anything."""
    path = Path(corpus_dir)
    try:
        manifest = (path / MANIFEST_FILE).read_bytes()
        documents = int(json.loads(manifest).get("documents", 0))
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a corpus directory ({exc})") from exc
    return f"{path.name}:{documents}:{hashlib.sha256(manifest).hexdigest()[:16]}"


def probe_local_web(host: str, port: int, timeout_s: float = _PROBE_TIMEOUT_S) -> dict[str, object] | None:
    """What answers ``GET /__fathom/health`` at host:port.

    None: nothing listens there. A dict: the health JSON of a local web. ``ConfigError``: something
    listens but is not a Fathom local web (another program holds the port)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", HEALTH_PATH, headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read(64 * 1024)
        status = resp.status
    except ConnectionRefusedError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.EADDRNOTAVAIL):
            return None
        raise _port_taken(host, port, f"it does not answer HTTP ({exc})") from exc
    except http.client.HTTPException as exc:
        raise _port_taken(host, port, f"it does not answer HTTP ({type(exc).__name__})") from exc
    finally:
        conn.close()
    try:
        data = json.loads(body) if status == 200 else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("service") != SERVICE_NAME:
        raise _port_taken(host, port, f"it is not a Fathom local web (GET {HEALTH_PATH} gave {status})")
    return data


def _port_taken(host: str, port: int, why: str) -> ConfigError:
    return ConfigError(
        f"the local web port {host}:{port} is taken: {why}. Stop what holds it or choose another port "
        f"with FATHOM_WEB__PORT (and FATHOM_WEB__HOST)"
    )


def ensure_local_web(settings: Settings, index_dir: Path) -> tuple[str, Callable[[], None] | None]:
    """The origin of a local web serving the corpus at ``index_dir``, at ``settings.web``'s address.

    Returns ``(origin, None)`` when a local web for the same corpus already answers there (a
    ``fathom serve web`` process: URLs outlive this process), or ``(origin, stop)`` after starting
    one in this process (the caller calls ``stop`` when done). Port 0 always starts a private one
    on a free port (tests). Raises ``ConfigError`` naming the port and ``FATHOM_WEB__PORT`` when
    the port is held by anything else, including a local web serving another corpus."""
    web = settings.web
    wanted = corpus_id(index_dir)
    if web.port != 0:
        origin = _reuse(web.host, web.port, wanted)
        if origin is not None:
            return origin, None
    server = LocalWeb(index_dir, host=web.host, port=web.port, js_share=web.js_share)
    try:
        server.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise ConfigError(f"cannot start the local web on {web.host}:{web.port}: {exc}") from exc
        # Another process bound it between the probe and now (two jobs starting at once).
        origin = _reuse(web.host, web.port, wanted)
        if origin is None:
            raise _port_taken(web.host, web.port, "it is in use") from exc
        return origin, None
    return server.base_url, server.stop


def _reuse(host: str, port: int, wanted: str) -> str | None:
    health = probe_local_web(host, port)
    if health is None:
        return None
    if health.get("corpus") != wanted:
        raise _port_taken(host, port, f"a local web serving another corpus ({health.get('corpus')}, "
                                      f"not {wanted}) is there")
    origin = f"http://{host}:{port}"
    if health.get("standalone"):
        log.info("local_web_reused", origin=origin, corpus=wanted)
    else:  # it lives only as long as the command that started it: its URLs may die before ours
        log.warning("local_web_reused_in_process", origin=origin, corpus=wanted,
                    hint="run `fathom serve web` to keep one up")
    return origin
