"""Answer matching without a model: SQuAD-style normalisation, exact match and token F1.

These are the standard open-domain QA metrics (the SQuAD v1.1 evaluation script), so numbers
compare with published ones. One addition: Unicode punctuation (curly quotes, dashes, the
ideographic full stop) is stripped as well as ASCII punctuation, because answers come from web
pages, where ``“Lacedelli”`` and ``"Lacedelli"`` must match.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _is_punctuation(ch: str) -> bool:
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles (a, an, the) removed, whitespace collapsed.

    The order is SQuAD's: punctuation goes before articles are matched, so ``"the-end"`` becomes
    ``"theend"`` rather than ``"end"``.
    """
    lowered = text.lower()
    no_punct = "".join(ch for ch in lowered if not _is_punctuation(ch))
    no_articles = _ARTICLES.sub(" ", no_punct)
    return " ".join(no_articles.split())


def exact_match(pred: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0 (no golds: 0.0)."""
    norm = normalize_answer(pred)
    return float(any(norm == normalize_answer(gold) for gold in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # SQuAD v2's rule: two empty answers agree, one empty answer matches nothing.
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(pred: str, golds: Sequence[str]) -> float:
    """Bag-of-tokens F1 of the normalised prediction, best over the gold answers (no golds: 0.0)."""
    pred_tokens = normalize_answer(pred).split()
    return max((_f1(pred_tokens, normalize_answer(gold).split()) for gold in golds), default=0.0)
