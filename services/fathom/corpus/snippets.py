"""Query-biased snippets: the window of sentences that best covers the query, not the lead.

Matching works on surface words against query stems (a word matches when it starts with a stem
and is at most a few letters longer), which is close to what the stemmed index matched and costs
one compiled regular expression per query instead of analysing every document again.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_MAX_SUFFIX = 4


def sentence_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def split_sentences(text: str) -> list[str]:
    return [text[a:b].strip() for a, b in sentence_spans(text) if text[a:b].strip()]


class SnippetMatcher:
    """Compiled once per query, applied to each hit."""

    def __init__(self, stems: Sequence[str]) -> None:
        stems = [s for s in stems if s]
        self._pattern: re.Pattern[str] | None = None
        if stems:
            alternatives = "|".join(sorted((re.escape(s) for s in set(stems)), key=len, reverse=True))
            self._pattern = re.compile(rf"(?<!\w)({alternatives})\w{{0,{_MAX_SUFFIX}}}(?!\w)", re.IGNORECASE)

    def snippet(self, text: str, max_chars: int) -> str:
        if len(text) <= max_chars:
            return text
        spans = sentence_spans(text)
        if not spans:
            return _clip(text, 0, max_chars)
        best = self._best_window(text, spans, max_chars) if self._pattern else 0
        start = spans[best][0]
        end = start
        for a, b in spans[best:]:
            if b - start > max_chars and end > start:
                break
            end = b
        return _clip(text, start, min(end, start + max_chars), leading=start > 0)

    def _best_window(self, text: str, spans: list[tuple[int, int]], max_chars: int) -> int:
        assert self._pattern is not None
        starts = [a for a, _ in spans]
        # Per sentence: the distinct stems it mentions and how often.
        hits: list[dict[str, int]] = [{} for _ in spans]
        for m in self._pattern.finditer(text):
            i = bisect_right(starts, m.start()) - 1
            key = m.group(1).lower()
            hits[i][key] = hits[i].get(key, 0) + 1
        if not any(hits):
            return 0
        best_i, best_score = 0, -1.0
        for i in range(len(spans)):
            covered: dict[str, int] = {}
            for j in range(i, len(spans)):
                if j > i and spans[j][1] - spans[i][0] > max_chars:
                    break
                for k, v in hits[j].items():
                    covered[k] = covered.get(k, 0) + v
            # Distinct stems dominate; repetitions break ties; earlier windows win a draw.
            score = len(covered) + 0.1 * min(sum(covered.values()), 10) - 0.001 * i
            if score > best_score:
                best_i, best_score = i, score
        return best_i


def _clip(text: str, start: int, end: int, leading: bool = False) -> str:
    piece = text[start:end].strip()
    trailing = end < len(text)
    if trailing and end - start >= 1 and not piece.endswith((".", "!", "?")):
        cut = piece.rfind(" ")
        if cut > len(piece) // 2:
            piece = piece[:cut]
        piece = piece.rstrip(",;:") + " …"
    return ("… " if leading else "") + piece
