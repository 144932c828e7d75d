from __future__ import annotations

from pathlib import Path

import pytest
from fathom.core.errors import SearchError
from fathom.corpus.store import Corpus
from fathom.tools.search.base import SearchBackend, format_results
from fathom.tools.search.local import LocalSearchBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def backend(small_corpus_dir: Path) -> LocalSearchBackend:
    return LocalSearchBackend(small_corpus_dir, BASE, snippet_chars=240)


async def test_hits_have_local_urls_titles_and_snippets(
    backend: LocalSearchBackend, small_corpus: Corpus
) -> None:
    assert isinstance(backend, SearchBackend)
    hits = await backend.search("Lilu Akkadian demon spirit", top_k=5)
    assert 1 <= len(hits) <= 5
    assert hits[0].title == "Lilu (mythology)"
    for h in hits:
        assert h.doc_id is not None and h.url == f"{BASE}/wiki/{h.doc_id}"
        assert small_corpus.get(h.doc_id).title == h.title
        assert h.snippet and len(h.snippet) <= 240 + 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    text = format_results("Lilu", hits)
    assert "1. [Lilu (mythology)]" in text and BASE in text


def _late_words(text: str) -> list[str]:
    """Long words of the last sentence that do not occur in the lead of the text."""
    lead = text[:300].lower()
    last = text.rstrip().rsplit(". ", 1)[-1]
    words = [w.strip(".,;:()\"'") for w in last.split()]
    return [w for w in words if len(w) > 6 and w.isalpha() and w.lower() not in lead][:3]


def test_snippet_is_the_window_around_the_query_terms(
    backend: LocalSearchBackend, small_corpus: Corpus
) -> None:
    # A long document, queried with its title and words that only occur near its end.
    doc = next(d for d in small_corpus if len(d.text) > 900 and len(_late_words(d.text)) == 3)
    words = _late_words(doc.text)
    hits = backend.search_sync(f"{doc.title} " + " ".join(words), top_k=10)
    hit = next(h for h in hits if h.doc_id == doc.id)
    assert hit.snippet.startswith("…")  # not the lead of the document
    assert not doc.text.startswith(hit.snippet[2:40])
    assert sum(w.lower() in hit.snippet.lower() for w in words) >= 2


def test_short_documents_are_shown_whole(backend: LocalSearchBackend, small_corpus: Corpus) -> None:
    doc = next(d for d in small_corpus if 60 < len(d.text) < 200)
    hits = backend.search_sync(doc.title + " " + doc.text[:80], top_k=10)
    hit = next(h for h in hits if h.doc_id == doc.id)
    assert hit.snippet == doc.text


def test_top_k_bounds_and_empty_queries(backend: LocalSearchBackend) -> None:
    assert len(backend.search_sync("journal", top_k=3)) == 3
    assert len(backend.search_sync("journal", top_k=0)) == 1
    assert len(backend.search_sync("journal", top_k=10_000)) <= 100
    assert backend.search_sync("", 5) == []
    assert backend.search_sync("   \t\n ", 5) == []
    assert backend.search_sync("?!.,", 5) == []
    assert backend.search_sync("the of and", 5)  # only stopwords: still searched
    with pytest.raises(SearchError):
        backend.search_sync(None, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "query",
    [
        'title:"Lilu',
        "text:(demon AND",
        "AND OR NOT",
        "demon^2 lilu~1",
        "[1 TO 5]",
        "*",
        "\\",
        "a:b:c",
        "'; DROP TABLE docs; --",
        "demon)" * 50,
        "ÉÀ Zürich 北京 ☃",
    ],
)
def test_query_syntax_is_never_interpreted(backend: LocalSearchBackend, query: str) -> None:
    hits = backend.search_sync(query, 5)
    assert isinstance(hits, list)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_hostile_text_never_raises(backend: LocalSearchBackend, query: str) -> None:
    for hit in backend.search_sync(query, 5):
        assert hit.url.startswith(BASE)


def test_missing_index_is_a_search_error(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="no search index"):
        LocalSearchBackend(tmp_path, BASE)


def test_without_base_url_hits_link_to_original(small_corpus_dir: Path) -> None:
    hits = LocalSearchBackend(small_corpus_dir, None).search_sync("Lilu mythology", 1)
    assert hits[0].url.startswith("https://en.wikipedia.org/wiki/Lilu")


def test_feedback_ranking_is_safe_and_finds_more(small_corpus_dir: Path) -> None:
    from fathom.tools.search.local import RankingParams

    feedback = LocalSearchBackend(small_corpus_dir, BASE, ranking=RankingParams(feedback_docs=1))
    hits = feedback.search_sync(
        "Who was the first president of the publisher of Journal of Psychotherapy Integration?", 10
    )
    assert len(hits) == 10
    assert hits[0].title == "Journal of Psychotherapy Integration"
    for query in ('"', "AND (", "the of", ""):
        assert isinstance(feedback.search_sync(query, 5), list)
