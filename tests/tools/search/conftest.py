"""Fixtures of the search tests: a local server that answers like a search provider."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


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
