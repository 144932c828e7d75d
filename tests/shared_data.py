"""Where the project's shared test data lives: ``shared/data`` inside the checkout or beside it."""

from __future__ import annotations

from pathlib import Path

from fathom.corpus.build import build_corpus

_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = next(
    (p for p in (_ROOT / "shared" / "data", _ROOT.parent / "shared" / "data") if p.is_dir()),
    _ROOT.parent / "shared" / "data",
)
CLOSED = SHARED_DATA / "closed"
CORPUS = SHARED_DATA / "corpus"


def build_small_corpus(out: Path) -> Path:
    """HotpotQA + MuSiQue paragraphs (about 2,900 documents): builds in a second or two."""
    build_corpus([CLOSED / "hotpotqa_train_corpus.json", CLOSED / "musique_train_corpus.json"], out)
    return out
