"""Fixtures of the queue tests: a real corpus on a real local web, settings pointing at the session's
Redis, and real Celery workers (in a thread with ``start_worker``, or ``fathom worker`` processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fathom.core.config import Settings
from fathom.corpus.build import build_corpus_from_documents
from fathom.corpus.documents import make_document
from fathom.corpus.web import LocalWeb
from fathom.queue.app import make_celery
from fathom.queue.names import LANES, QUEUES, queue_name
from fathom.queue.worker_runtime import close_runtimes

from tests.shared_data import CORPUS

TITLES = ["Marie Curie", "Albert Einstein", "Eiffel Tower", "Mount Everest", "Amazon River", "Isaac Newton"]


@pytest.fixture(scope="module")
def local_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWeb]:
    data = json.loads((CORPUS / "wikipedia_vital_summaries.json").read_text(encoding="utf-8"))
    docs = [make_document(t, data[t]["extract"], "wikipedia_vital") for t in TITLES if t in data]
    corpus_dir = tmp_path_factory.mktemp("queue") / "corpus"
    build_corpus_from_documents(docs, corpus_dir)
    with LocalWeb(corpus_dir, js_share=0.0) as web:
        yield web


def settings_for(redis_url: str, web: LocalWeb, tmp: Path, **plane: Any) -> Settings:
    return Settings(
        # The shared cache holds the prepared bundled extractor model (preparing it costs ~20 s).
        cache_dir=Settings().cache_dir, data_dir=tmp / "data", extract={"cache": False},
        search={"backend": "local", "index_dir": web.corpus.path, "timeout_s": 10},
        fetch={"browser": "never", "deadline_s": 10, "respect_robots": False},
        web={"host": web.host, "port": web.port},
        plane={"broker_url": redis_url, **plane},
    )


@pytest.fixture
def settings(redis_url: str, local_web: LocalWeb, tmp_path: Path) -> Settings:
    return settings_for(redis_url, local_web, tmp_path)


def purge(app: Celery, redis_url: str) -> None:
    """Drop what an earlier test left in the plane's queues (only the claimed logical db)."""
    client = redis.Redis.from_url(redis_url)
    try:
        names = [queue_name(q, lane) for q in QUEUES for lane in LANES]
        client.delete(*names, "unacked", "unacked_index")
    finally:
        client.close()


@pytest.fixture
def celery_app(settings: Settings, redis_url: str) -> Iterator[Celery]:
    app = make_celery(settings)
    purge(app, redis_url)
    yield app
    close_runtimes()
    purge(app, redis_url)


WorkerFactory = Callable[..., AbstractContextManager[Any]]


@pytest.fixture
def thread_worker(celery_app: Celery) -> WorkerFactory:
    """``with thread_worker(queues=[...], concurrency=n):`` a real Celery worker in this process."""

    @contextmanager
    def run(queues: list[str], concurrency: int = 4) -> Iterator[Any]:
        with start_worker(celery_app, pool="threads", concurrency=concurrency, queues=queues,
                          perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20) as worker:
            yield worker

    return run


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "FATHOM_PLANE__BROKER_URL": settings.plane.broker_url,
        "FATHOM_CACHE_DIR": str(settings.cache_dir), "FATHOM_DATA_DIR": str(settings.data_dir),
        "FATHOM_SEARCH__BACKEND": "local", "FATHOM_SEARCH__INDEX_DIR": str(settings.search.index_dir),
        "FATHOM_FETCH__BROWSER": "never", "FATHOM_EXTRACT__CACHE": "false",
        "FATHOM_FETCH__RESPECT_ROBOTS": "false",
        "FATHOM_FETCH__DEADLINE_S": str(settings.fetch.deadline_s),
        "FATHOM_WEB__HOST": settings.web.host, "FATHOM_WEB__PORT": str(settings.web.port),
        "FATHOM_PLANE__VISIBILITY_TIMEOUT_S": str(settings.plane.visibility_timeout_s),
        **extra,
    })
    return env


def spawn_worker(settings: Settings, *args: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``fathom worker ...`` as its own OS process."""
    out = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "fathom.cli.main", "worker", *args],
                            env=worker_env(settings, **env), stdout=out, stderr=subprocess.STDOUT)


# -- a small origin of our own: counts requests, and has a page whose body never ends -------------


class Origin:
    """A real HTTP server on loopback. ``/page/<name>`` answers a short article and counts the hit;
    ``/slow-script`` is a page that loads ``/slow`` as a script (a browser render that never ends);
    ``/slow`` sends headers and a first chunk, then trickles a byte every 50 ms for ever, recording
    when the client went away (``closed_at``)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        origin = self
        self.hits: dict[str, int] = {}
        self.slow_started = threading.Event()
        self.closed_at: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/robots.txt":
                    self.send_error(404)
                elif self.path.startswith("/page/"):
                    with origin._lock:
                        origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
                    body = (f"<html><head><title>{self.path}</title></head><body><article><p>"
                            + "The quick brown fox jumps over the lazy dog. " * 20
                            + "</p></article></body></html>").encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/slow-script":
                    # A page whose rendering waits on a script that never finishes loading.
                    body = (b"<html><head><title>slow script</title><script src=\"/slow\"></script></head>"
                            b"<body><p>Waiting for a script.</p></body></html>")
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/slow":
                    with origin._lock:
                        origin.hits[self.path] = origin.hits.get(self.path, 0) + 1
                    self._slow()
                else:
                    self.send_error(404)

            def _slow(self) -> None:
                import time

                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(10_000_000))
                self.end_headers()
                self.wfile.write(b"<html><body><p>" + b"a" * 1000)
                self.wfile.flush()
                origin.slow_started.set()
                try:
                    while not origin._stop.is_set():
                        time.sleep(0.05)
                        self.wfile.write(b"a")
                        self.wfile.flush()
                except OSError:
                    origin.closed_at = time.monotonic()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def origin_settings(settings: Settings, origin: Origin) -> Settings:
    """The settings with our origin allowlisted for fetching (a loopback address)."""
    fetch = settings.fetch.model_copy(update={"allow_origins": [origin.base_url]})
    return settings.model_copy(update={"fetch": fetch})
