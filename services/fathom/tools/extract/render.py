"""The ``query_url`` tool output: the URL, the goal, then Rationale / Evidence / Summary."""

from __future__ import annotations

import re

from fathom.tools.extract.evidence import Evidence

_EVIDENCE_HEADER = {
    "model": "Evidence:",
    "choice": "Evidence:",
    "lexical": "Evidence (page sentences closest to the goal, chosen by word overlap, not by the extractor):",
    "none": "Evidence:",
}


# The Evidence part of a response, up to its Summary part; the header wording varies by source.
_EVIDENCE_HEADER_RE = re.compile(r"^Evidence\b[^\n]*:[ \t]*$", re.M)
_SUMMARY_HEADER_RE = re.compile(r"^Summary:", re.M)


def query_url_quotes(result: str) -> list[str]:
    """The quotes of a ``query_url`` response: one per line, in double quotes, in its Evidence
    part. The placeholder written when there are none ("None found on the page.") is no quote."""
    m = _EVIDENCE_HEADER_RE.search(result)
    if m is None:
        return []
    block = result[m.end():]
    end = _SUMMARY_HEADER_RE.search(block)
    if end is not None:
        block = block[: end.start()]
    quotes: list[str] = []
    for line in block.splitlines():
        line = line.strip()
        # a line cut short (a response shortened to fit the context) lacks its closing mark
        if len(line) > 2 and line[0] == '"' and line[-1] == '"' and line[1:-1] not in quotes:
            quotes.append(line[1:-1])
    return quotes


def format_query_url_result(url: str, goal: str, evidence: Evidence) -> str:
    quotes = "\n".join(f'"{q}"' for q in evidence.evidence) or "None found on the page."
    rationale = evidence.rationale.strip() or "(none given)"
    summary = evidence.summary.strip() or "(none given)"
    return (
        f"URL: {url}\n"
        f"Goal: {goal}\n\n"
        f"Rationale: {rationale}\n\n"
        f"{_EVIDENCE_HEADER[evidence.evidence_source]}\n{quotes}\n\n"
        f"Summary: {summary}"
    )
