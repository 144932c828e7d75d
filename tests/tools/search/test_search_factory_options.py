"""``search.feedback_docs`` and ``search.dense`` reach the local backend built from settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fathom.core.config import SearchSettings, Settings
from fathom.core.errors import ConfigError
from fathom.corpus.dense import DenseVectors
from fathom.corpus.store import Corpus
from fathom.tools.search.factory import build_search_backend
from fathom.tools.search.local import LocalSearchBackend


def _local(tmp_path: Path, index_dir: Path, feedback_docs: int = 0, dense: bool = False) -> Settings:
    search = SearchSettings(backend="local", index_dir=index_dir, feedback_docs=feedback_docs, dense=dense)
    return Settings(cache_dir=tmp_path, search=search)


def test_defaults_are_plain_bm25(small_corpus_dir: Path, tmp_path: Path) -> None:
    backend = build_search_backend(_local(tmp_path, small_corpus_dir), None, cached=False)
    assert isinstance(backend, LocalSearchBackend)
    assert backend.ranking.feedback_docs == 0 and backend.dense is None


def test_feedback_docs_reaches_the_ranking(small_corpus_dir: Path, tmp_path: Path) -> None:
    settings = _local(tmp_path, small_corpus_dir, feedback_docs=2)
    backend = build_search_backend(settings, None, cached=False)
    assert isinstance(backend, LocalSearchBackend)
    assert backend.ranking.feedback_docs == 2
    assert backend.search_sync("Lilu mythology", 3)  # the feedback query runs on the real index


def test_negative_feedback_docs_is_a_config_error(small_corpus_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="feedback_docs"):
        build_search_backend(_local(tmp_path, small_corpus_dir, feedback_docs=-1), None)


def test_dense_without_cached_vectors_is_a_clear_error(small_corpus_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dense vectors are cached"):
        build_search_backend(_local(tmp_path, small_corpus_dir, dense=True), None)


@pytest.mark.slow
def test_dense_uses_vectors_cached_beside_the_index(
    small_corpus_dir: Path, small_corpus: Corpus, tmp_path: Path
) -> None:
    corpus_dir = tmp_path / "corpus"
    shutil.copytree(small_corpus_dir, corpus_dir)  # the shared fixture stays without vectors
    docs = list(small_corpus)[:40]
    DenseVectors.encode_corpus(docs, corpus_dir, batch_size=16)
    # Either the corpus directory or its index directory may be configured.
    for index_dir in (corpus_dir, corpus_dir / "index"):
        backend = build_search_backend(_local(tmp_path, index_dir, dense=True), None, cached=False)
        assert isinstance(backend, LocalSearchBackend)
        assert backend.name == "local-hybrid" and backend.dense is not None
        assert len(backend.dense.ids) == 40
        target = docs[5]
        hits = backend.search_sync(target.title + " " + target.text[:120], 5)
        assert target.id in [h.doc_id for h in hits]
