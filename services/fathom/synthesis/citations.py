"""The citation check every report passes before anyone sees it. Pure: no I/O.

A citation is a full URL in square brackets right after the sentence it supports. Only the
allowed URLs may be cited (the pages the research read: ``protocol.citable_urls``): anything else
is removed (and counted), markdown links to other URLs lose their target, and bare other URLs
are dropped. The Sources used
section is rebuilt from the citations that survive, deduplicated in order of first use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from fathom.synthesis.report import ReportSection

_TRAILING = ".,;:!?'\"*_>`"

# One alternation so that each URL is seen once, in the right role:
#   link  [text](url)     cite  [url] or [url1, url2]     bare  url
_TOKEN_RE = re.compile(
    r"(?P<link>\[(?P<ltext>[^\]\n]*)\]\((?P<lurl>[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)\))"
    r"|(?P<cite>\[\s*(?P<curls>https?://[^\]\n]*?)\s*\])"
    r"|(?P<bare>https?://[^\s<>\"'\[\]{}|\\^`]+)"
)
_CITE_SPLIT_RE = re.compile(r"\s*[,;]\s*(?=https?://)|\s+(?=https?://)")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SOURCES_TITLE_RE = re.compile(r"^(sources?(\s+used)?|references|bibliography|works cited)\s*:?$", re.I)
_TABLE_ROW_RE = re.compile(r"^\s*\|")
_RULE_RE = re.compile(r"^\s*([-*_]\s*){3,}$")
_BULLET_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_MARK = "\x00"  # stands for a valid citation while sentences are split

SOURCES_HEADING = "## Sources used"


def normalise_url(url: str) -> str:
    """Trim what prose glues to a URL: trailing punctuation and an unbalanced closing bracket."""
    u = url.strip()
    while u:
        if u[-1] in _TRAILING or (u[-1] == ")" and u.count(")") > u.count("(")):
            u = u[:-1]
        else:
            break
    return u


def url_key(url: str) -> str:
    """Equality key for URLs: case-insensitive scheme and host, no fragment, no trailing slash."""
    u = normalise_url(url)
    try:
        p = urlsplit(u)
    except ValueError:
        return u
    path = p.path.rstrip("/")
    return urlunsplit((p.scheme.lower(), p.netloc.lower(), path, p.query, ""))


@dataclass
class CitationCheck:
    """What the check found and the cleaned markdown."""

    markdown: str
    citations: list[str]  # every valid citation occurrence, in order (trace spelling)
    sources: list[str]  # deduplicated, in order of first citation
    invalid_removed: int
    invalid_urls: list[str]
    sections: list[ReportSection]
    citations_per_section: dict[str, int]
    uncited_sentences: list[str] = field(default_factory=list)
    word_count: int = 0

    @property
    def sentences_without_citation(self) -> int:
        return len(self.uncited_sentences)


def _lines_and_headings(markdown: str) -> Iterator[tuple[str, re.Match[str] | None]]:
    """Each line with its heading match; a ``#`` inside a code fence is no heading."""
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        yield line, None if fenced else _HEADING_RE.match(line)


def _split_sections(markdown: str) -> list[tuple[int, str, list[str]]]:
    """(level, title, body lines) per heading; text before the first heading has level 0."""
    out: list[tuple[int, str, list[str]]] = [(0, "", [])]
    for line, m in _lines_and_headings(markdown):
        if m:
            out.append((len(m.group(1)), m.group(2).strip(), []))
        else:
            out[-1][2].append(line)
    return out


def _is_sources_title(title: str) -> bool:
    return bool(_SOURCES_TITLE_RE.match(title.strip().strip("*_ ")))


def _drop_sources_sections(markdown: str) -> str:
    """The model's own Sources section goes: it is rebuilt from the citations that survive."""
    kept: list[str] = []
    skip_level = 0
    for line, m in _lines_and_headings(markdown):
        if m:
            level = len(m.group(1))
            if skip_level and level > skip_level:
                continue
            skip_level = level if _is_sources_title(m.group(2)) else 0
            if skip_level:
                continue
        elif skip_level:
            continue
        kept.append(line)
    return "\n".join(kept)


class _Cleaner:
    """Rewrites citation tokens, remembering what it kept and removed."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed: dict[str, str] = {}
        for u in allowed:
            self.allowed.setdefault(url_key(u), normalise_url(u))
        self.citations: list[str] = []
        self.invalid: list[str] = []

    def resolve(self, url: str) -> str | None:
        return self.allowed.get(url_key(url))

    def __call__(self, m: re.Match[str]) -> str:
        if m.group("link") is not None:
            target = self.resolve(m.group("lurl"))
            if target is None and m.group("lurl").startswith(("http://", "https://")):
                self.invalid.append(m.group("lurl"))
                return m.group("ltext")
            return m.group(0)
        if m.group("cite") is not None:
            parts = [p for p in _CITE_SPLIT_RE.split(m.group("curls")) if p]
            if any(not p.startswith(("http://", "https://")) or " " in p for p in parts):
                return m.group(0)  # brackets around prose that merely starts with a URL
            good: list[str] = []
            for p in parts:
                target = self.resolve(p)
                if target is None:
                    self.invalid.append(normalise_url(p))
                elif target not in good:
                    good.append(target)
            self.citations.extend(good)
            return " ".join(f"[{u}]" for u in good)
        raw = m.group("bare")
        url = normalise_url(raw)
        tail = raw[len(url):]
        target = self.resolve(url)
        if target is None:
            self.invalid.append(url)
            return tail
        self.citations.append(target)
        return target + tail


def _tidy(text: str) -> str:
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(?<=\S)[ \t]{2,}", " ", line)
        line = re.sub(r"[ \t]+(?=[.,;:!?](\s|$))", "", line)
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _prose_units(lines: list[str]) -> list[str]:
    """Paragraphs and bullet items; headings, tables, rules and code are not prose."""
    units: list[str] = []
    para: list[str] = []
    fenced = False

    def flush() -> None:
        if para:
            units.append(" ".join(para))
            para.clear()

    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
            flush()
            continue
        if fenced or not line.strip() or _TABLE_ROW_RE.match(line) or _RULE_RE.match(line):
            flush()
            continue
        if _BULLET_RE.match(line):
            flush()
            units.append(_BULLET_RE.sub("", line, count=1))
            continue
        para.append(line.strip())
    flush()
    return units


def _sentences(unit: str, allowed: _Cleaner) -> list[tuple[str, bool]]:
    """(sentence, has citation). A citation placed after the full stop belongs to the sentence
    before it, as the protocol writes it."""

    def mark(m: re.Match[str]) -> str:
        if m.group("link") is not None:
            return m.group("ltext")
        if m.group("cite") is not None:
            return _MARK
        return _MARK if allowed.resolve(normalise_url(m.group("bare"))) else ""

    text = _TOKEN_RE.sub(mark, unit)
    pieces = [p for p in _SENT_SPLIT_RE.split(text) if p and p.strip()]
    merged: list[str] = []
    for p in pieces:
        lead = re.match(rf"^[\s{_MARK}]+", p)
        if lead and _MARK in lead.group(0) and merged:
            merged[-1] += lead.group(0)
            p = p[lead.end():]
        if not p.strip():
            continue
        if merged and p.lstrip()[:1].islower():  # "e.g. the" — an abbreviation, not a new sentence
            merged[-1] += " " + p
        else:
            merged.append(p)
    return [(s.replace(_MARK, "").strip(), _MARK in s) for s in merged]


def _is_substantive(sentence: str) -> bool:
    return len(_WORD_RE.findall(sentence)) >= 4 or len(_CJK_RE.findall(sentence)) >= 12


def check_citations(report_md: str, allowed_urls: Iterable[str]) -> CitationCheck:
    """Remove citations of URLs not allowed, rebuild Sources used, and measure coverage."""
    cleaner = _Cleaner(allowed_urls)
    body = _drop_sources_sections(report_md)
    body = _tidy(_TOKEN_RE.sub(cleaner, body))
    sources = list(dict.fromkeys(cleaner.citations))
    listing = "\n".join(f"- {u}" for u in sources) if sources else "- (no sources cited)"
    markdown = f"{body}\n\n{SOURCES_HEADING}\n\n{listing}\n"

    sections: list[ReportSection] = []
    per_section: dict[str, int] = {}
    uncited: list[str] = []
    for level, title, lines in _split_sections(body):
        text = "\n".join(lines).strip()
        if level == 0 and not text:
            continue
        flat: list[str] = []
        for m in _TOKEN_RE.finditer(text):
            if m.group("cite") is not None:
                flat.extend(
                    u for p in _CITE_SPLIT_RE.split(m.group("curls")) if (u := cleaner.resolve(p))
                )
            elif m.group("bare") is not None and (u := cleaner.resolve(normalise_url(m.group("bare")))):
                flat.append(u)
        key = title or "(preamble)"
        while key in per_section:
            key += "'"
        sections.append(ReportSection(title=title, level=level, text=text, citations=flat))
        per_section[key] = len(flat)
        for unit in _prose_units(lines):
            for sentence, has_cite in _sentences(unit, cleaner):
                if not has_cite and _is_substantive(sentence):
                    uncited.append(sentence)
    plain = _TOKEN_RE.sub(lambda m: m.group("ltext") or "", body)
    words = len(_WORD_RE.findall(_CJK_RE.sub(" ", plain))) + len(_CJK_RE.findall(plain))
    sections.append(ReportSection(title="Sources used", level=2, text=listing, citations=[]))
    return CitationCheck(
        markdown=markdown,
        citations=list(cleaner.citations),
        sources=sources,
        invalid_removed=len(cleaner.invalid),
        invalid_urls=list(dict.fromkeys(cleaner.invalid)),
        sections=sections,
        citations_per_section=per_section,
        uncited_sentences=uncited,
        word_count=words,
    )
