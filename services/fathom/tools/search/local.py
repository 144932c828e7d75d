"""``search_urls`` over the local Tantivy index, with hits pointing at the local web.

The searcher is opened once and kept; queries are built from analysed terms (never parsed as
query syntax), so any user text is safe. BM25 over title and text with the title boosted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import tantivy

from fathom.core.errors import SearchError
from fathom.corpus.analysis import QueryAnalyzer, register_analyzer
from fathom.corpus.build import INDEX_DIR
from fathom.corpus.dense import DenseVectors, reciprocal_rank_fusion
from fathom.corpus.snippets import SnippetMatcher
from fathom.tools.search.base import SearchHit

MAX_TOP_K = 100


@dataclass(frozen=True)
class RankingParams:
    """Weights found by the recall benchmark on the pooled closed corpus (fathom.bench.search)."""

    title_boost: float = 0.75
    text_boost: float = 1.0
    max_terms: int = 32  # very long pasted queries: keep the first terms only
    # Pseudo-relevance feedback (off by default: it doubles the cost of a query). When on, the
    # best terms of the top `feedback_docs` results are added with weight `feedback_weight`;
    # this pulls in the bridge entities of multi-hop questions.
    feedback_docs: int = 0
    feedback_terms: int = 10
    feedback_weight: float = 0.5
    fusion_depth: int = 100  # hybrid only: candidates taken from each ranking before RRF
    rrf_k: int = 60


def resolve_index_dir(path: Path) -> Path:
    """Accept a corpus directory (with index/ inside) or the index directory itself."""
    path = Path(path)
    if (path / INDEX_DIR / "meta.json").is_file():
        return path / INDEX_DIR
    if (path / "meta.json").is_file():
        return path
    raise SearchError(f"no search index at {path} (build one with `fathom corpus build`)")


class LocalSearchBackend:
    name = "local"

    def __init__(
        self,
        index_dir: Path | str,
        base_url: str | None = None,
        snippet_chars: int = 240,
        ranking: RankingParams | None = None,
        dense: DenseVectors | None = None,
    ) -> None:
        self.index_dir = resolve_index_dir(Path(index_dir))
        self.base_url = base_url.rstrip("/") if base_url else None
        self.snippet_chars = snippet_chars
        self.ranking = ranking or RankingParams()
        try:
            self._index = tantivy.Index.open(str(self.index_dir))
        except ValueError as exc:
            raise SearchError(f"cannot open search index at {self.index_dir}: {exc}") from exc
        register_analyzer(self._index)
        self._schema = self._index.schema
        self._searcher = self._index.searcher()
        self._analyzer = QueryAnalyzer()
        # Optional hybrid: BM25 and MiniLM rankings fused by reciprocal rank (slower: encodes the query).
        self.dense = dense
        if dense is not None:
            self.name = "local-hybrid"

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    def url_for(self, doc_id: str, fallback: str | None = None) -> str:
        if self.base_url:
            return f"{self.base_url}/wiki/{doc_id}"
        return fallback or f"/wiki/{doc_id}"

    def build_query(self, terms: list[str]) -> tantivy.Query:
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = []
        r = self.ranking
        for term in terms[: r.max_terms]:
            for field, boost in (("title", r.title_boost), ("text", r.text_boost)):
                q = tantivy.Query.term_query(self._schema, field, term, index_option="freq")
                if boost != 1.0:
                    q = tantivy.Query.boost_query(q, boost)
                clauses.append((tantivy.Occur.Should, q))
        return tantivy.Query.boolean_query(clauses)

    def _feedback_query(
        self, terms: list[str], first: list[tuple[float, tantivy.DocAddress]]
    ) -> tantivy.Query:
        """The query extended with the most telling terms of the first results (RM3-like)."""
        r = self.ranking
        weights: dict[str, float] = {}
        skip = set(terms)
        for score, addr in first[: r.feedback_docs]:
            doc = self._searcher.doc(addr)
            tokens = self._analyzer.content_tokens(f"{doc.get_first('title')} {doc.get_first('text')}")
            if not tokens:
                continue
            for tok, tf in Counter(t for t in tokens if t not in skip and not t.isdigit()).items():
                weights[tok] = weights.get(tok, 0.0) + score * tf / len(tokens)
        n = self._searcher.num_docs
        scored = sorted(
            ((w * math.log(1 + n / (1 + self._searcher.doc_freq("text", t))), t) for t, w in weights.items()),
            reverse=True,
        )
        clauses: list[tuple[tantivy.Occur, tantivy.Query]] = [(tantivy.Occur.Should, self.build_query(terms))]
        for _, term in scored[: r.feedback_terms]:
            for field, boost in (("title", r.title_boost), ("text", r.text_boost)):
                q = tantivy.Query.term_query(self._schema, field, term, index_option="freq")
                clauses.append(
                    (tantivy.Occur.Should, tantivy.Query.boost_query(q, boost * r.feedback_weight))
                )
        return tantivy.Query.boolean_query(clauses)

    def _scored(self, terms: list[str], top_k: int) -> list[tuple[float, tantivy.DocAddress]]:
        query = self.build_query(terms)
        limit = max(top_k, self.ranking.feedback_docs)
        hits = [(float(s), a) for s, a in self._searcher.search(query, limit=limit, count=False).hits]
        if self.ranking.feedback_docs > 0 and hits:
            query = self._feedback_query(terms, hits)
            hits = [(float(s), a) for s, a in self._searcher.search(query, limit=top_k, count=False).hits]
        return hits[:top_k]

    def ranked(self, query: str, top_k: int) -> list[tuple[float, tantivy.DocAddress]]:
        """(score, address) of the best documents: the retrieval step alone, for benchmarks."""
        terms = self._analyzer.terms(query)
        if not terms:
            return []
        return self._scored(terms, top_k)

    def ranked_ids(self, query: str, top_k: int) -> list[str]:
        """Document ids, best first: BM25, or BM25 fused with dense vectors when configured."""
        return [doc_id for doc_id, _ in self._ranked(query, top_k)]

    def _ranked(self, query: str, top_k: int) -> list[tuple[str, tuple[float, tantivy.DocAddress | None]]]:
        depth = max(top_k, self.ranking.fusion_depth) if self.dense is not None else top_k
        bm25: list[tuple[str, tuple[float, tantivy.DocAddress | None]]] = [
            (str(self._searcher.doc(a).get_first("id")), (s, a)) for s, a in self.ranked(query, depth)
        ]
        if self.dense is None:
            return bm25
        by_id: dict[str, tuple[float, tantivy.DocAddress | None]] = dict(bm25)
        dense_ids = [i for i, _ in self.dense.top(self.dense.encode_queries([query])[0], depth)]
        fused = reciprocal_rank_fusion([[i for i, _ in bm25], dense_ids], k=self.ranking.rrf_k)
        return [(i, (by_id.get(i, (0.0, None))[0], by_id.get(i, (0.0, None))[1])) for i in fused[:top_k]]

    def _address_of(self, doc_id: str) -> tantivy.DocAddress | None:
        q = tantivy.Query.term_query(self._schema, "id", doc_id)
        found = self._searcher.search(q, limit=1, count=False).hits
        return found[0][1] if found else None

    def search_sync(self, query: str, top_k: int = 10) -> list[SearchHit]:
        if not isinstance(query, str):
            raise SearchError("query must be a string")
        top_k = max(1, min(int(top_k), MAX_TOP_K))
        terms = self._analyzer.terms(query)
        if not terms:
            return []
        if self.dense is None:
            scored = self._scored(terms, top_k)
        else:
            scored = []
            for doc_id, (s, a) in self._ranked(query, top_k):
                addr = a if a is not None else self._address_of(doc_id)
                if addr is not None:
                    scored.append((s, addr))
        matcher = SnippetMatcher(terms)
        hits: list[SearchHit] = []
        for score, addr in scored:
            doc = self._searcher.doc(addr)
            doc_id = str(doc.get_first("id"))
            text = doc.get_first("text") or ""
            hits.append(
                SearchHit(
                    title=doc.get_first("title") or doc_id,
                    url=self.url_for(doc_id, doc.get_first("url") or None),
                    snippet=matcher.snippet(text, self.snippet_chars),
                    score=float(score),
                    doc_id=doc_id,
                )
            )
        return hits

    async def search(self, query: str, top_k: int = 10) -> list[SearchHit]:
        # Sub-millisecond and CPU-bound: running it inline is cheaper than a thread hop.
        return self.search_sync(query, top_k)

    async def aclose(self) -> None:
        return None
