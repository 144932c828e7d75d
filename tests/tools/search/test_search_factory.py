from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fathom.core.config import SearchSettings, Settings
from fathom.core.errors import ConfigError
from fathom.tools.search.cache import CachedSearch
from fathom.tools.search.factory import build_search_backend
from fathom.tools.search.local import LocalSearchBackend
from fathom.tools.search.searxng import SearxngBackend
from fathom.tools.search.serper import SerperBackend

if TYPE_CHECKING:  # the fixture's class, for annotations only
    from tests.shared_data import ProviderServer


async def test_local_backend_from_settings(small_corpus_dir: Path, tmp_path: Path) -> None:
    settings = Settings(
        cache_dir=tmp_path, search=SearchSettings(backend="local", index_dir=small_corpus_dir)
    )
    backend = build_search_backend(settings, "http://127.0.0.1:9999")
    assert isinstance(backend, CachedSearch) and isinstance(backend.backend, LocalSearchBackend)
    hits = await backend.search("Lilu mythology", 2)
    assert hits[0].url.startswith("http://127.0.0.1:9999/wiki/")
    assert isinstance(build_search_backend(settings, None, cached=False), LocalSearchBackend)


def test_serper_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    monkeypatch.delenv("FATHOM_SERPER_API_KEY", raising=False)
    settings = Settings(search=SearchSettings(backend="serper"))
    with pytest.raises(ConfigError, match="SERPER_API_KEY"):
        build_search_backend(settings)


async def test_serper_key_from_env(monkeypatch: pytest.MonkeyPatch, provider: ProviderServer) -> None:
    monkeypatch.setenv("SERPER_API_KEY", "env-key")
    provider.set_json(
        {"organic": [{"title": "T", "link": "https://t.example/", "snippet": "s", "position": 1}]}
    )
    settings = Settings(search=SearchSettings(backend="serper", serper_url=provider.url, cache_ttl_s=30))
    backend = build_search_backend(settings)
    assert isinstance(backend, CachedSearch) and isinstance(backend.backend, SerperBackend)
    assert backend.ttl_s == 30
    hits = await backend.search("t")
    await backend.aclose()
    assert hits[0].url == "https://t.example/"
    headers = {k.lower(): v for k, v in provider.requests[-1]["headers"].items()}  # type: ignore[attr-defined]
    assert headers["x-api-key"] == "env-key"


def test_settings_key_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERPER_API_KEY", "env-key")
    monkeypatch.setenv("FATHOM_SERPER_API_KEY", "fathom-key")
    settings = Settings(search=SearchSettings(backend="serper"))
    from fathom.tools.search.factory import serper_api_key

    assert serper_api_key(settings) == "fathom-key"


def test_searxng_needs_url() -> None:
    with pytest.raises(ConfigError, match="SEARXNG_URL"):
        build_search_backend(Settings(search=SearchSettings(backend="searxng")))
    backend = build_search_backend(
        Settings(search=SearchSettings(backend="searxng", searxng_url="http://127.0.0.1:1")), cached=False
    )
    assert isinstance(backend, SearxngBackend)
