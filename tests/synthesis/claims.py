"""Reads a finished report back into its cited claims, for tests that check each one against the
page it cites (the report's own layout: a claim, then its citations in square brackets)."""

from __future__ import annotations

import re

_CITATIONS_RE = re.compile(r"(?:\s*\[https?://[^\]\s]+\])+")
_URL_IN_BRACKETS_RE = re.compile(r"\[(https?://[^\]\s]+)\]")
LIST_MARK_RE = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")


def cited_claims(markdown: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(claim, cited URLs) for every cited stretch of the body, and any body text left uncited.
    Headings and the Sources used list are not body text."""
    claims: list[tuple[str, list[str]]] = []
    uncited: list[str] = []
    body = markdown.split("\n## Sources used", 1)[0]
    for line in body.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = LIST_MARK_RE.sub("", line, count=1)
        start = 0
        for m in _CITATIONS_RE.finditer(text):
            claims.append((text[start:m.start()].strip(), _URL_IN_BRACKETS_RE.findall(m.group(0))))
            start = m.end()
        if text[start:].strip():
            uncited.append(text[start:].strip())
    return claims, uncited
