from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fathom.core.errors import SearchError
from fathom.tools.search.serper import SerperBackend

if TYPE_CHECKING:  # the fixture's class, for annotations only
    from tests.shared_data import ProviderServer

SAMPLE: dict[str, Any] = json.loads((Path(__file__).parent / "serper_sample.json").read_text())


async def test_parses_real_response_and_sends_key(provider: ProviderServer) -> None:
    provider.set_json(SAMPLE)
    backend = SerperBackend("secret-key", url=provider.url + "/search", timeout=5)
    try:
        hits = await backend.search("  who discovered penicillin ", top_k=10)
    finally:
        await backend.aclose()
    request = provider.requests[-1]
    assert request["method"] == "POST" and request["path"] == "/search"
    headers = {k.lower(): v for k, v in request["headers"].items()}  # type: ignore[attr-defined]
    assert headers["x-api-key"] == "secret-key"
    assert json.loads(request["body"]) == {"q": "who discovered penicillin", "num": 10}  # type: ignore[arg-type]
    # answerBox first, then organic results without the duplicate link or the entry with no link.
    assert [h.url for h in hits] == [
        "https://en.wikipedia.org/wiki/Alexander_Fleming",
        "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC4520913/",
        "https://www.acs.org/education/whatischemistry/landmarks/flemingpenicillin.html",
    ]
    assert hits[0].snippet == "Alexander Fleming"
    assert hits[1].title.startswith("The discovery of penicillin")
    assert "1928" in hits[2].snippet


async def test_top_k_caps_hits(provider: ProviderServer) -> None:
    provider.set_json(SAMPLE)
    backend = SerperBackend("k", url=provider.url, timeout=5)
    try:
        assert len(await backend.search("penicillin", top_k=2)) == 2
        assert json.loads(provider.requests[-1]["body"])["num"] == 2  # type: ignore[arg-type]
        assert await backend.search("   ", top_k=2) == []
        assert len(provider.requests) == 1  # blank queries never reach the provider
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (403, {"message": "Unauthorized.", "statusCode": 403}, "refused the API key"),
        (401, {"message": "Invalid API key"}, "refused the API key"),
        (400, {"message": "Not enough credits", "statusCode": 400}, "Not enough credits"),
        (429, {"message": "Too many requests"}, "rate limit"),
        (500, {"message": "Internal error"}, "HTTP 500"),
    ],
)
async def test_error_statuses(
    provider: ProviderServer, status: int, body: dict[str, Any], message: str
) -> None:
    provider.set_json(body, status=status)
    backend = SerperBackend("k", url=provider.url, timeout=5)
    try:
        with pytest.raises(SearchError, match=message) as info:
            await backend.search("penicillin")
    finally:
        await backend.aclose()
    assert info.value.tool == "search_urls"


async def test_non_json_and_unreachable(provider: ProviderServer) -> None:
    provider.set_raw(b"<html>gateway</html>", status=200)
    backend = SerperBackend("k", url=provider.url, timeout=5)
    try:
        with pytest.raises(SearchError, match="not JSON"):
            await backend.search("penicillin")
    finally:
        await backend.aclose()
    dead = SerperBackend("k", url="http://127.0.0.1:9/search", timeout=2)
    try:
        with pytest.raises(SearchError, match="cannot reach Serper"):
            await dead.search("penicillin")
    finally:
        await dead.aclose()


async def test_timeout(provider: ProviderServer) -> None:
    provider.set_json(SAMPLE, delay=1.5)
    backend = SerperBackend("k", url=provider.url, timeout=0.3)
    try:
        with pytest.raises(SearchError, match="in time"):
            await backend.search("penicillin")
    finally:
        await backend.aclose()


def test_key_required() -> None:
    with pytest.raises(SearchError, match="API key"):
        SerperBackend("")
