"""The one place that turns settings into a search backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from fathom.core.config import Settings
from fathom.core.errors import ConfigError
from fathom.tools.search.base import SearchBackend
from fathom.tools.search.cache import CachedSearch

if TYPE_CHECKING:
    from fathom.corpus.dense import DenseVectors


def serper_api_key(settings: Settings) -> str | None:
    if settings.serper_api_key is not None and settings.serper_api_key.get_secret_value():
        return settings.serper_api_key.get_secret_value()
    return os.environ.get("SERPER_API_KEY") or None


def _cached_vectors(index_dir: Path) -> DenseVectors:
    """The dense vectors cached beside the index (``<corpus>/dense``); never encoded here."""
    from fathom.corpus.dense import DenseVectors
    from fathom.tools.search.local import resolve_index_dir

    corpus_dir = resolve_index_dir(Path(index_dir)).parent
    if not DenseVectors.exists(corpus_dir):
        raise ConfigError(
            f"search.dense is on but no dense vectors are cached in {corpus_dir}; encode them once "
            "(fathom.corpus.dense.DenseVectors.encode_corpus) or set FATHOM_SEARCH__DENSE=false"
        )
    return DenseVectors.load(corpus_dir)


def build_search_backend(
    settings: Settings, base_url: str | None = None, cached: bool = True
) -> SearchBackend:
    """The configured backend, wrapped in the result cache.

    ``base_url`` is the local web's address: local hits link there. Without it they link to the
    documents' original URLs.
    """
    cfg = settings.search
    backend: SearchBackend
    if cfg.backend == "local":
        from fathom.corpus.sample import ensure_sample_index
        from fathom.tools.search.local import LocalSearchBackend, RankingParams

        if cfg.feedback_docs < 0:
            raise ConfigError(f"search feedback_docs must be 0 (off) or more, got {cfg.feedback_docs}")
        index_dir = cfg.index_dir or ensure_sample_index(settings)
        backend = LocalSearchBackend(
            index_dir,
            base_url,
            snippet_chars=cfg.snippet_chars,
            ranking=RankingParams(feedback_docs=cfg.feedback_docs),
            dense=_cached_vectors(index_dir) if cfg.dense else None,
        )
    elif cfg.backend == "serper":
        from fathom.tools.search.serper import SerperBackend

        key = serper_api_key(settings)
        if not key:
            raise ConfigError(
                "search backend 'serper' needs an API key: set FATHOM_SERPER_API_KEY or SERPER_API_KEY"
            )
        backend = SerperBackend(key, url=cfg.serper_url, timeout=cfg.timeout_s)
    elif cfg.backend == "searxng":
        from fathom.tools.search.searxng import SearxngBackend

        if not cfg.searxng_url:
            raise ConfigError(
                "search backend 'searxng' needs FATHOM_SEARCH__SEARXNG_URL (the instance's base URL)"
            )
        backend = SearxngBackend(cfg.searxng_url, timeout=cfg.timeout_s)
    else:  # pydantic already restricts the value; this guards programmatic construction
        raise ConfigError(f"unknown search backend {cfg.backend!r} (local, serper or searxng)")
    if not cached:
        return backend
    return CachedSearch(backend, ttl_s=cfg.cache_ttl_s, max_size=cfg.cache_size)
