from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fathom.corpus.dense import DenseVectors, reciprocal_rank_fusion
from fathom.corpus.store import Corpus
from fathom.tools.search.local import LocalSearchBackend


def test_reciprocal_rank_fusion() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert fused[0] == "a" and set(fused) == {"a", "b", "c", "d"}
    assert fused.index("c") < fused.index("b")


@pytest.mark.slow
def test_dense_vectors_and_hybrid_search(
    small_corpus: Corpus, small_corpus_dir: Path, tmp_path: Path
) -> None:
    docs = list(small_corpus)[:40]
    vectors = DenseVectors.encode_corpus(docs, tmp_path, batch_size=16)
    assert vectors.matrix.shape == (40, 384)
    assert np.allclose(np.linalg.norm(vectors.matrix, axis=1), 1.0, atol=1e-2)
    loaded = DenseVectors.load(tmp_path)
    assert loaded.ids == [d.id for d in docs]
    target = docs[7]
    query_vec = loaded.encode_queries([target.text[:200]])[0]
    assert loaded.top(query_vec, 3)[0][0] == target.id
    hybrid = LocalSearchBackend(small_corpus_dir, "http://127.0.0.1:1", dense=loaded)
    assert hybrid.name == "local-hybrid"
    hits = hybrid.search_sync(target.title + " " + target.text[:120], 5)
    assert target.id in [h.doc_id for h in hits]
    assert all(h.url.startswith("http://127.0.0.1:1/wiki/") for h in hits)
