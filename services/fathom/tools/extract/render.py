"""The ``query_url`` tool output: the URL, the goal, then Rationale / Evidence / Summary."""

from __future__ import annotations

from fathom.tools.extract.evidence import Evidence

_EVIDENCE_HEADER = {
    "model": "Evidence:",
    "choice": "Evidence:",
    "lexical": "Evidence (page sentences closest to the goal, chosen by word overlap, not by the extractor):",
    "none": "Evidence:",
}


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
