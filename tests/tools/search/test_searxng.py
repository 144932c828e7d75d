from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fathom.core.errors import SearchError
from fathom.tools.search.searxng import SearxngBackend

if TYPE_CHECKING:  # the fixture's class, for annotations only
    from tests.shared_data import ProviderServer

SAMPLE: dict[str, Any] = json.loads((Path(__file__).parent / "searxng_sample.json").read_text())


async def test_parses_real_response(provider: ProviderServer) -> None:
    provider.set_json(SAMPLE)
    backend = SearxngBackend(provider.url + "/", timeout=5)
    try:
        hits = await backend.search("who discovered penicillin?", top_k=10)
    finally:
        await backend.aclose()
    request = provider.requests[-1]
    parts = urlsplit(str(request["path"]))
    assert request["method"] == "GET" and parts.path == "/search"
    assert parse_qs(parts.query) == {"q": ["who discovered penicillin?"], "format": ["json"]}
    assert [h.url for h in hits] == [
        "https://en.wikipedia.org/wiki/Alexander_Fleming",
        "https://www.britannica.com/biography/Alexander-Fleming",
        "https://www.acs.org/education/whatischemistry/landmarks/flemingpenicillin.html",
    ]
    assert hits[0].score == 7.5 and "penicillin" in hits[0].snippet
    assert hits[2].snippet == ""


async def test_top_k(provider: ProviderServer) -> None:
    provider.set_json(SAMPLE)
    backend = SearxngBackend(provider.url, timeout=5)
    try:
        assert len(await backend.search("penicillin", top_k=1)) == 1
        provider.set_json({"query": "nothing", "results": [], "answers": []})
        assert await backend.search("nothing at all") == []
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (403, b"<html>403 Forbidden</html>", "enable `json`"),
        (429, b"Too Many Requests", "rate limiting"),
        (502, b"Bad Gateway", "HTTP 502"),
        (200, b"<html>not json</html>", "not JSON"),
    ],
)
async def test_errors(provider: ProviderServer, status: int, body: bytes, message: str) -> None:
    provider.set_raw(body, status=status)
    backend = SearxngBackend(provider.url, timeout=5)
    try:
        with pytest.raises(SearchError, match=message):
            await backend.search("penicillin")
    finally:
        await backend.aclose()


async def test_unreachable_and_timeout(provider: ProviderServer) -> None:
    dead = SearxngBackend("http://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(SearchError, match="cannot reach SearXNG"):
            await dead.search("x")
    finally:
        await dead.aclose()
    provider.set_json(SAMPLE, delay=1.5)
    slow = SearxngBackend(provider.url, timeout=0.3)
    try:
        with pytest.raises(SearchError, match="in time"):
            await slow.search("x")
    finally:
        await slow.aclose()
