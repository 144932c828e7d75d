"""Ground the extractor in the page: keep only quotes that really occur in it, and, when the model
gave none that do, pick the page's own sentences that share the most words with the goal.

Matching is done on a lightly normalised copy of both texts (case, whitespace runs, curly quotes,
dashes, soft hyphens); what is kept is the page's own span, so every kept quote is verbatim.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

_CHAR_MAP = {
    **dict.fromkeys("“”„‟″«»", '"'),
    **dict.fromkeys("‘’‚‛′`", "'"),
    **dict.fromkeys("‐‑‒–—―−", "-"),
}
_DROP_CHARS = {"\u00ad", "\u200b", "\u200c", "\u200d", "\ufeff"}
_ELLIPSIS = re.compile(r"\s*(?:\.\.\.+|…)\s*")
_TRAILING_PUNCT = ".,;:!?\"' "
MIN_QUOTE_CHARS = 4
MAX_QUOTES = 20


def _normalise_with_map(text: str) -> tuple[str, list[int]]:
    """The normalised text and, for each of its characters, the index it came from in ``text``."""
    out: list[str] = []
    index: list[int] = []
    pending_space = False
    for i, ch in enumerate(text):
        if ch in _DROP_CHARS:
            continue
        if ch.isspace():
            pending_space = bool(out)
            continue
        if pending_space:
            out.append(" ")
            index.append(i - 1)
            pending_space = False
        out.append(_CHAR_MAP.get(ch, ch).lower())
        index.append(i)
    return "".join(out), index


def normalise(text: str) -> str:
    return _normalise_with_map(text)[0]


@dataclass(frozen=True)
class QuoteCheck:
    kept: list[str]  # verbatim page spans, in the model's order, deduplicated
    dropped: list[str]  # the model's quotes that are not in the page (or too short to mean anything)


class PageMatcher:
    """Finds quotes in one page. Build once per page, query many times."""

    def __init__(self, page_text: str) -> None:
        self.page = page_text
        self.norm, self.index = _normalise_with_map(page_text)

    def _span(self, start: int, end: int) -> str:
        return self.page[self.index[start] : self.index[end - 1] + 1]

    def _find(self, fragment: str, start: int = 0) -> tuple[int, int] | None:
        for cand in (fragment, fragment.rstrip(_TRAILING_PUNCT), fragment.strip(_TRAILING_PUNCT)):
            if len(cand) < MIN_QUOTE_CHARS or not any(c.isalnum() for c in cand):
                continue
            pos = self.norm.find(cand, start)
            if pos >= 0:
                return pos, pos + len(cand)
        return None

    def locate(self, quote: str) -> str | None:
        """The page's own text for ``quote``, or None if it is not there.

        A quote with ellipses ("A ... B") is accepted when every piece occurs, in order; the pieces
        are joined with " … " so the reader can see that text was left out.
        """
        pieces = [normalise(p) for p in _ELLIPSIS.split(quote)]
        pieces = [p for p in pieces if p.strip(_TRAILING_PUNCT)]
        if not pieces:
            return None
        found: list[str] = []
        cursor = 0
        for piece in pieces:
            hit = self._find(piece, cursor)
            if hit is None:
                return None
            found.append(self._span(*hit))
            cursor = hit[1]
        return " … ".join(found)


def check_quotes(quotes: list[str], page_text: str, matcher: PageMatcher | None = None) -> QuoteCheck:
    m = matcher or PageMatcher(page_text)
    kept: list[str] = []
    dropped: list[str] = []
    for q in quotes:
        span = m.locate(q)
        if span is None:
            dropped.append(q)
        elif span not in kept and len(kept) < MAX_QUOTES:
            kept.append(span)
    return QuoteCheck(kept=kept, dropped=dropped)


_STOPWORD_TEXT = """
    a an the and or but if of to in on at by for with from as is are was were be been being this that
    these those it its into about over under than then there their they them he she his her we you your
    our what which who whom whose when where why how do does did done not no yes can could would should
    will shall may might must have has had i me my find look page information any all some more most
    also such other tell give list show whether"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"“(\[]?[A-Z0-9])")
MAX_SENTENCE_CHARS = 500
MIN_SENTENCE_WORDS = 4


def _stem(word: str) -> str:
    # Plurals only: "hops" must meet "hop", "countries" "country"; anything bolder merges words.
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return [_stem(w) for w in words if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


def _goal_terms(goal: str) -> set[str]:
    """The goal's terms, and each pair of neighbouring words written as one ("gall bladder" also
    finds "gallbladder")."""
    words = [w for w in _WORD.findall(goal.lower()) if w not in _STOPWORDS]
    joined = {_stem(a + b) for a, b in itertools.pairwise(words) if a.isalpha() and b.isalpha()}
    return set(_terms(goal)) | joined


def _sentence_like(sentence: str) -> bool:
    """Not a heading, caption or menu item: some words, and a sentence's end or a sentence's length."""
    words = len(sentence.split())
    ends = sentence.rstrip("\"')»”]").endswith((".", "!", "?", ":"))
    return words >= MIN_SENTENCE_WORDS and (ends or words >= 8)


def page_sentences(page_text: str) -> list[str]:
    sentences: list[str] = []
    for line in page_text.splitlines():
        line = line.strip()
        if line:
            sentences.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return sentences


def ranked_sentences(page_text: str, goal: str, k: int) -> list[str]:
    """Up to ``k`` page sentences sharing the most (idf-weighted) words with the goal, best first.

    Every returned string is a contiguous span of ``page_text``: overlong sentences are cut at a
    word boundary, which keeps them contiguous.
    """
    goal_terms = _goal_terms(goal)
    sentences = page_sentences(page_text)
    if not goal_terms or not sentences or k < 1:
        return []
    term_sets = [set(_terms(s)) for s in sentences]
    n = len(sentences)
    df = {t: sum(1 for ts in term_sets if t in ts) for t in goal_terms}
    scored: list[tuple[float, int]] = []
    for i, ts in enumerate(term_sets):
        score = sum(math.log(1.0 + n / df[t]) for t in goal_terms & ts)
        if score > 0:
            scored.append((score, i))
    # Fragments (headings, captions, menu items) only when no whole sentence shares a goal word.
    whole = [x for x in scored if _sentence_like(sentences[x[1]])]
    scored = sorted(whole or scored, key=lambda x: (-x[0], x[1]))
    out: list[str] = []
    for _, i in scored[:k]:
        s = sentences[i]
        if len(s) > MAX_SENTENCE_CHARS:
            cut = s.rfind(" ", 0, MAX_SENTENCE_CHARS)
            s = s[: cut if cut > 0 else MAX_SENTENCE_CHARS]
        out.append(s)
    return out


def relevant_sentences(page_text: str, goal: str, k: int = 3) -> list[str]:
    """The ``k`` best of ``ranked_sentences``, in page order."""
    best = ranked_sentences(page_text, goal, k)
    return sorted(best, key=page_text.find)


def goal_terms_in(text: str, goal: str) -> list[str]:
    """The goal's content words (as the goal writes them) that ``text`` contains, in order."""
    present = set(_terms(text))
    words = [w for w in _WORD.findall(goal) if w.lower() not in _STOPWORDS]
    return [w for w in dict.fromkeys(words) if _stem(w.lower()) in present]
