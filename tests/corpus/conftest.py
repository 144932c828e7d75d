"""Fixtures of the corpus tests: real dataset files and a small real corpus built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fathom.corpus.build import build_corpus
from fathom.corpus.store import Corpus

_ROOT = Path(__file__).resolve().parents[2]
# The checkout may hold shared/ itself or sit beside it.
SHARED_DATA = next(
    (p for p in (_ROOT / "shared" / "data", _ROOT.parent / "shared" / "data") if p.is_dir()),
    _ROOT.parent / "shared" / "data",
)
CLOSED = SHARED_DATA / "closed"
CORPUS = SHARED_DATA / "corpus"


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HotpotQA + MuSiQue paragraphs (about 2,900 documents): builds in a second or two."""
    out = tmp_path_factory.mktemp("corpus") / "small"
    build_corpus([CLOSED / "hotpotqa_train_corpus.json", CLOSED / "musique_train_corpus.json"], out)
    return out


@pytest.fixture(scope="session")
def small_corpus(small_corpus_dir: Path) -> Corpus:
    return Corpus.open(small_corpus_dir)
