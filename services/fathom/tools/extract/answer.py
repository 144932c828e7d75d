"""Read the extractor's answer into its three parts. Tolerant of markdown variants; never raises.

Accepted section headers (case-insensitive, at the start of a line): ``Rationale:``,
``**Evidence**:``, ``**Evidence:**``, ``## Summary``, ``1. Evidence:``, ``- Summary -`` ... A line
that merely begins with the word (``Evidence shows that ...``) is not a header: a header needs a
colon, a markdown heading mark or bold, or nothing else on its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SECTION_WORDS = {
    "rationale": "rationale",
    "reasoning": "rationale",
    "relevance": "rationale",
    "evidence": "evidence",
    "quotes": "evidence",
    "quote": "evidence",
    "summary": "summary",
}

_HEADER = re.compile(
    r"""^[ \t]*
    (?P<hash>\#{1,6}[ \t]*)?
    (?:[-*•][ \t]+|\d+[.)][ \t]*)?
    (?P<open>[*_]{1,3})?[ \t]*
    (?P<word>rationale|reasoning|relevance|evidence|quotes?|summary)\b
    [ \t]*(?:\([^)\n]{0,40}\))?[ \t]*
    (?P<close1>[*_]{1,3})?[ \t]*
    (?P<colon>[:：])?[ \t]*
    (?P<close2>[*_]{1,3})?[ \t]*
    (?:[-–—][ \t]*)?
    (?P<rest>.*)$""",
    re.IGNORECASE | re.VERBOSE,
)

# Last resort for answers squeezed onto one line: "Rationale: ... Evidence: ... Summary: ...".
_INLINE = re.compile(
    r"(?:(?<=\s)|^)[*_#]*\s*(rationale|evidence|summary)\s*[*_]*\s*:\s*[*_]*", re.IGNORECASE
)

_BULLET = re.compile(r"^(?:[-*•>]+|\d+[.)])\s+")
_WRAPPING_QUOTES = "\"'“”‘’„«»`"
_QUOTED_SEGMENT = re.compile(r"[\"“]([^\"“”]{3,})[\"”]")
_EMPTY_MARKERS = (
    "none",
    "n/a",
    "na",
    "no evidence",
    "no relevant",
    "nothing relevant",
    "not found",
    "no quotes",
    "-",
)


@dataclass(frozen=True)
class ParsedAnswer:
    rationale: str | None = None
    evidence: list[str] = field(default_factory=list)
    summary: str | None = None
    has_evidence_section: bool = False

    @property
    def complete(self) -> bool:
        """The one hard requirement: a non-empty summary (the original retried on anything less)."""
        return bool(self.summary)


def parse_answer(text: str) -> ParsedAnswer:
    """Split ``text`` into rationale / evidence quotes / summary. Missing parts come back empty."""
    if not isinstance(text, str) or not text.strip():
        return ParsedAnswer()
    sections = _split_by_line_headers(text)
    if not (sections.get("summary") or "").strip():
        inline = _split_inline(text)
        if (inline.get("summary") or "").strip():
            sections = inline
    if not sections:
        return ParsedAnswer()
    rationale = _clean_prose(sections.get("rationale"))
    summary = _clean_prose(sections.get("summary"))
    evidence_block = sections.get("evidence")
    return ParsedAnswer(
        rationale=rationale or None,
        evidence=split_quotes(evidence_block or ""),
        summary=summary or None,
        has_evidence_section=evidence_block is not None,
    )


def assemble_answer(rationale: str, evidence_block: str, summary: str) -> ParsedAnswer:
    """The three parts written in separate prefilled stages: each is cleaned on its own, so a
    stray label-like line inside one part cannot move text into another."""
    return ParsedAnswer(
        rationale=_clean_prose(_strip_label(rationale)) or None,
        evidence=split_quotes(_strip_label(evidence_block)),
        summary=_clean_prose(_strip_label(summary)) or None,
        has_evidence_section=True,
    )


def _strip_label(part: str) -> str:
    # A model that repeats the label it was given ("Summary: Summary: ...") or opens with one.
    m = _HEADER.match(part.lstrip("\n").split("\n", 1)[0]) if part.strip() else None
    if m and _is_header(m) and m.group("colon"):
        rest = part.lstrip("\n").partition("\n")[2]
        return (m.group("rest") + ("\n" + rest if rest else "")).strip()
    return part


def _is_header(m: re.Match[str]) -> bool:
    rest = m.group("rest").strip()
    bold = bool(m.group("open")) and bool(m.group("close1") or m.group("close2"))
    return bool(m.group("colon") or m.group("hash") or bold or not rest)


def _split_by_line_headers(text: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _HEADER.match(line)
        if m and _is_header(m):
            name = _SECTION_WORDS[m.group("word").lower()]
            if name in sections and "".join(sections.get("summary", [])).strip():
                break  # the model starts the whole answer again: keep the first, complete copy
            current = name
            sections.setdefault(name, [])  # a repeated header continues its section
            rest = m.group("rest").strip().strip("*_").strip()
            if rest:
                sections[name].append(rest)
            continue
        if current is not None:
            sections[current].append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def _split_inline(text: str) -> dict[str, str]:
    marks = list(_INLINE.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        name = m.group(1).lower()
        out.setdefault(name, text[m.end() : end])
    return out


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def _clean_prose(block: str | None) -> str:
    if block is None:
        return ""
    lines: list[str] = []
    seen: set[str] = set()
    for raw in block.splitlines():
        # Weak models loop at temperature 0; a sentence said again adds nothing.
        kept: list[str] = []
        for sentence in _SENTENCE_BREAK.split(raw.strip()):
            key = " ".join(sentence.lower().split())
            if key and key in seen:
                continue
            if key:
                seen.add(key)
            kept.append(sentence)
        line = " ".join(kept).strip()
        if line or not raw.strip():
            lines.append(line)
    prose = "\n".join(lines).strip().strip("*_").strip()
    if prose.lower().rstrip(".") in _EMPTY_MARKERS or not any(c.isalnum() for c in prose):
        return ""
    return prose


def split_quotes(block: str) -> list[str]:
    """One quote per line; bullets, numbering and wrapping quote marks removed; empty markers skipped."""
    quotes: list[str] = []
    for raw in block.splitlines():
        line = _BULLET.sub("", raw.strip()).strip()
        if not line:
            continue
        segments = _QUOTED_SEGMENT.findall(line)
        candidates = segments if len(segments) >= 2 else [line]
        for cand in candidates:
            q = cand.strip().strip(_WRAPPING_QUOTES).strip()
            if not q or q.lower().rstrip(".") in _EMPTY_MARKERS:
                continue
            if q not in quotes:
                quotes.append(q)
    return quotes
