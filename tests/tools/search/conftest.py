"""Fixtures of the search tests: real dataset files and a small real corpus built from them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fathom.corpus.build import build_corpus
from fathom.corpus.store import Corpus

_ROOT = Path(__file__).resolve().parents[3]
# The checkout may hold shared/ itself or sit beside it.
SHARED_DATA = next(
    (p for p in (_ROOT / "shared" / "data", _ROOT.parent / "shared" / "data") if p.is_dir()),
    _ROOT.parent / "shared" / "data",
)
CLOSED = SHARED_DATA / "closed"
CORPUS = SHARED_DATA / "corpus"


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HotpotQA + MuSiQue paragraphs (about 2,900 documents): builds in a second or two."""
    out = tmp_path_factory.mktemp("corpus") / "small"
    build_corpus([CLOSED / "hotpotqa_train_corpus.json", CLOSED / "musique_train_corpus.json"], out)
    return out


@pytest.fixture(scope="session")
def small_corpus(small_corpus_dir: Path) -> Corpus:
    return Corpus.open(small_corpus_dir)


class ProviderServer:
    """A real HTTP server on 127.0.0.1 that answers like a search provider and records requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []
        # (status, body bytes, content type, delay seconds) for the next requests
        self.reply: tuple[int, bytes, str, float] = (200, b"{}", "application/json", 0.0)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, payload, ctype, delay = outer.reply
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def set_json(self, data: object, status: int = 200, delay: float = 0.0) -> None:
        self.reply = (status, json.dumps(data).encode(), "application/json", delay)

    def set_raw(self, body: bytes, status: int = 200, ctype: str = "text/html", delay: float = 0.0) -> None:
        self.reply = (status, body, ctype, delay)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    server = ProviderServer()
    yield server
    server.close()
