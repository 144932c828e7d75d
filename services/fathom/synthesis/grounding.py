"""What a guided report may say about a page, and the one check that decides it. Pure: no I/O.

A body sentence of a guided report is one of two kinds, and always carries the citation of the
page it is checked against:

- *verbatim*: the page's own words. They come from the extractor's Evidence quotes, which are
  spans of the page text, and are checked against the page text again where it is at hand;
- *supported*: a sentence the model wrote, kept only if most of its content words occur in the
  cited page's own words. A small model's fluent inventions (names, dates, places) fail this
  test; paraphrases pass.

The extractor's Rationale and Summary are model output that nothing checked: they are neither
report text nor the ground a generated sentence is checked against. Placeholders that tools and
models write when they have nothing ("None found on the page.", "(none given)") are never
report text. The end-to-end test checks finished reports with these same functions against the
stored page snapshots.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Literal

# Share of a generated sentence's content words that must occur in the cited page's words.
SUPPORT_THRESHOLD = 0.6

Grounding = Literal["verbatim", "supported"]

_WORDS_RE = re.compile(r"[^\W_]+", re.UNICODE)
_SPACE_BEFORE_PUNCT_RE = re.compile(r"\s+(?=[.,;:!?](?:\s|$))")
# A sentence ends at . ! ? (closing quotes and brackets stay with it) before a space and a capital,
# a digit or an opening quote; "1.5", "J0723.3" and "e.g. the" are not ends.
_SENTENCE_END_RE = re.compile(r"[.!?。！？][\"”’')\]]*(?=\s+[\"“(]?[A-Z0-9])|[。！？](?=\S)")
_ENDS_SENTENCE_RE = re.compile(r"[.!?。！？][\"”’')]*$")
_STARTS_SENTENCE_RE = re.compile(r"^[\"“(]?[A-Z0-9\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff\u3040-\u9fff]")
# Text the report's markdown or its citation check would change or read as structure: links,
# brackets, URLs, table pipes, HTML, code, and list or heading marks at the start.
_UNPRINTABLE_RE = re.compile(r"[\[\]<>|`\x00]|https?://|www\.", re.I)
_STRUCTURE_START_RE = re.compile(r"^(?:[-*+#>]|\d+[.)])\s")
# The extractor joins quote pieces that are not adjacent on the page with an ellipsis.
_ELLIPSIS_RE = re.compile(r"\s*(?:\.\.\.+|…)\s*")
MAX_SENTENCE_CHARS = 400

_PLACEHOLDER_RE = re.compile(
    r"none found|\(none given\)|\bnone given\b|no relevant (?:information|evidence|content|quotes?)"
    r"|nothing relevant|no (?:evidence|quotes?) (?:was |were )?(?:found|given)|not found on the page"
    r"|has no readable text|is among the sources found|read the cited sources in full"
    r"|^\W*(?:none|n/?a|nothing|not found|no evidence)\W*$",
    re.I,
)


def page_form(text: str) -> str:
    """``text`` as compared with a page: whitespace runs made one space, none before punctuation
    (the citation check tidies a report the same way)."""
    return _SPACE_BEFORE_PUNCT_RE.sub("", " ".join(text.split()))


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORDS_RE.findall(text) if len(w) > 3}


def support(sentence: str, page_text: str) -> float:
    """Share of the sentence's content words (longer than three letters) found in ``page_text``."""
    words = content_words(sentence)
    if not words:
        return 0.0
    return len(words & content_words(page_text)) / len(words)


def supported(sentence: str, page_text: str, threshold: float = SUPPORT_THRESHOLD) -> bool:
    return support(sentence, page_text) >= threshold


@lru_cache(maxsize=32)
def _page(page_text: str) -> tuple[str, str, tuple[int, ...]]:
    """The page in page form; its lines in page form joined by single spaces, and where each line
    starts in that (one page is checked against many sentences)."""
    lines = [form for line in page_text.splitlines() if (form := page_form(line))]
    starts: list[int] = []
    pos = 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    return page_form(page_text), " ".join(lines), tuple(starts)


def is_verbatim(sentence: str, page_text: str) -> bool:
    s = page_form(sentence)
    whole, joined, _ = _page(page_text)
    return bool(s) and (s in whole or s in joined)


def split_at_page_lines(sentence: str, page_text: str) -> list[str]:
    """``sentence`` cut where the page starts a new line inside it. Once whitespace is made single,
    a heading runs into the paragraph under it ("Eiffel Tower The Eiffel Tower is ..."); the page's
    own line breaks say where one ends. [] when the sentence is not on the page."""
    s = page_form(sentence)
    _, joined, starts = _page(page_text)
    at = joined.find(s) if s else -1
    if at < 0:
        return [s] if is_verbatim(s, page_text) else []
    cuts = [b - at for b in starts if at < b < at + len(s)]
    pieces = [s[i:j].strip() for i, j in zip([0, *cuts], [*cuts, len(s)], strict=True)]
    return [p for p in pieces if p]


def grounding(sentence: str, page_text: str) -> Grounding | None:
    """How ``sentence`` is grounded in ``page_text``: its words, supported by them, or not at all."""
    if is_placeholder(sentence):
        return None
    if is_verbatim(sentence, page_text):
        return "verbatim"
    return "supported" if supported(sentence, page_text) else None


def is_placeholder(text: str) -> bool:
    """Words a tool or model writes for "nothing here", and canned stand-ins for findings."""
    return bool(_PLACEHOLDER_RE.search(text.strip()))


def quote_sentences(quote: str) -> list[str]:
    """The complete sentences inside one verbatim quote, each a contiguous span of it (whitespace
    made single), that a report can print unchanged. Fragments, placeholders and text that
    markdown or the citation check would alter are left out rather than edited."""
    out: list[str] = []
    for piece in _ELLIPSIS_RE.split(quote):
        text = page_form(piece)
        start = 0
        cuts = [m.end() for m in _SENTENCE_END_RE.finditer(text)] + [len(text)]
        for end in cuts:
            sentence = text[start:end].strip()
            start = end
            if printable_sentence(sentence) and sentence not in out:
                out.append(sentence)
    return out


def printable_sentence(s: str) -> bool:
    """A complete sentence that a report can print as it is."""
    return (
        len(_WORDS_RE.findall(s)) >= 4
        and len(s) <= MAX_SENTENCE_CHARS
        and bool(_STARTS_SENTENCE_RE.match(s))
        and bool(_ENDS_SENTENCE_RE.search(s))
        and not _UNPRINTABLE_RE.search(s)
        and not _STRUCTURE_START_RE.match(s)
        and not is_placeholder(s)
    )
