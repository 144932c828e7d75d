"""Query-biased snippets: the window of sentences that best covers the query, not the lead.

Matching works on surface words against query stems (a word matches when it starts with a stem
and is at most a few letters longer), which is close to what the stemmed index matched and costs
one compiled regular expression per query instead of analysing every document again.
"""

from __future__ import annotations

import re
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
        stems = sorted({s.lower() for s in stems if s}, key=len, reverse=True)
        self._pattern: re.Pattern[str] | None = None
        self._fallback: re.Pattern[str] | None = None
        if stems:
            alternatives = "|".join(re.escape(s) for s in stems)
            initials = "".join(sorted({re.escape(s[0]) for s in stems}))
            # The look-ahead on first letters lets the engine skip most positions at once: ten
            # times faster than the bare alternation on lowercased text.
            self._pattern = re.compile(rf"\b(?=[{initials}])({alternatives})\w{{0,{_MAX_SUFFIX}}}\b")
            self._fallback = re.compile(rf"\b({alternatives})\w{{0,{_MAX_SUFFIX}}}\b", re.IGNORECASE)

    def _matches(self, text: str) -> list[tuple[int, int, str]]:
        if self._pattern is None or self._fallback is None:
            return []
        lowered = text.lower()
        if len(lowered) == len(text):
            return [(m.start(), m.end(), m.group(1)) for m in self._pattern.finditer(lowered)]
        # Lowercasing changed offsets (rare letters such as 'İ'): match on the original text.
        return [(m.start(), m.end(), m.group(1).lower()) for m in self._fallback.finditer(text)]

    def snippet(self, text: str, max_chars: int) -> str:
        if len(text) <= max_chars:
            return text
        matches = self._matches(text)
        if not matches:
            return _clip(text, 0, _sentence_end_before(text, 0, max_chars))
        first, last = _best_cluster(matches, max_chars)
        cluster_start, cluster_end = matches[first][0], matches[last][1]
        # Start at the beginning of the sentence holding the first match when the window allows it.
        slack = max_chars - (cluster_end - cluster_start)
        start = _sentence_start(text, cluster_start, max(0, cluster_start - max(slack, 0)))
        end = _sentence_end_before(text, max(cluster_end, start), start + max_chars)
        return _clip(text, start, end, leading=start > 0)


def _best_cluster(matches: list[tuple[int, int, str]], max_chars: int) -> tuple[int, int]:
    """Indices of the first and last match of the window with the most distinct query stems.

    Two pointers over the matches: O(number of matches). Repetitions break ties, then position.
    """
    best = (0, 0)
    best_score = -1.0
    counts: dict[str, int] = {}
    lo = 0
    for hi, (_, end, stem) in enumerate(matches):
        counts[stem] = counts.get(stem, 0) + 1
        while end - matches[lo][0] > max_chars:
            old = matches[lo][2]
            counts[old] -= 1
            if not counts[old]:
                del counts[old]
            lo += 1
        score = len(counts) + 0.1 * min(hi - lo + 1, 10)
        if score > best_score:
            best, best_score = (lo, hi), score
    return best


def _sentence_start(text: str, pos: int, floor: int) -> int:
    """Start of the sentence containing pos if it begins at or after floor, else a word boundary."""
    start = -1
    for m in _SENTENCE_END.finditer(text, floor, pos + 1):
        if m.end() <= pos:
            start = m.end()
    if start >= 0:
        return start
    if floor == 0:
        return 0
    space = text.find(" ", floor, pos)
    return space + 1 if space >= 0 else pos


def _sentence_end_before(text: str, at_least: int, limit: int) -> int:
    """End of the last sentence finishing in [at_least, limit], else limit itself."""
    limit = min(limit, len(text))
    if limit >= len(text):
        return len(text)
    best = -1
    for m in _SENTENCE_END.finditer(text, at_least, limit + 1):
        if m.start() <= limit:
            best = m.start()
    return best if best > at_least else limit


def _clip(text: str, start: int, end: int, leading: bool = False) -> str:
    piece = text[start:end].strip()
    if end < len(text) and not piece.endswith((".", "!", "?", '."', ".)")):
        cut = piece.rfind(" ")
        if cut > len(piece) // 2:
            piece = piece[:cut]
        piece = piece.rstrip(",;:") + " …"
    return ("… " if leading else "") + piece
