"""Evidence items pulled from a search trace: one per URL, with the text the trace holds for it.

The guided writer grounds each body section on one item, and builds the plan's evidence map
from all of them. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from fathom.agent.trajectory import Trajectory
from fathom.synthesis.citations import normalise_url, url_key

# One hit of search_urls output: "3. [Title](https://...)\nsnippet"
_HIT_RE = re.compile(
    r"^\s*\d+\.\s*\[(?P<title>[^\]\n]*)\]\((?P<url>https?://[^\s)]*(?:\([^\s)]*\)[^\s)]*)*)\)\s*\n"
    r"(?P<snippet>.*?)(?=\n\s*-{3,}\s*\n|\Z)",
    re.M | re.S,
)
# Lines of a query_url response that repeat the request rather than carry evidence.
_ECHO_LINE_RE = re.compile(r"^\s*(\*\*)?(url|goal|source)(\*\*)?\s*:", re.I)
_WORDS_RE = re.compile(r"[^\W_]{3,}", re.UNICODE)


@dataclass
class Evidence:
    url: str  # as it occurs in the trace
    title: str
    text: str  # what the trace says about this URL: page evidence, else the search snippet
    kind: Literal["page", "search"]
    order: int  # first appearance in the trace


def _page_text(result: str) -> str:
    lines = [ln for ln in result.splitlines() if not _ECHO_LINE_RE.match(ln)]
    text = "\n".join(lines)
    text = re.sub(r"https?://\S+", "", text)  # the grounding text must not smuggle URLs
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def collect_evidence(traj: Trajectory) -> list[Evidence]:
    """Read pages first (richest evidence), then search hits, each in trace order."""
    items: dict[str, Evidence] = {}
    titles: dict[str, str] = {}
    order = 0
    for call in traj.tool_calls:
        if not call.ok or not call.result:
            continue
        if call.name == "search_urls":
            for m in _HIT_RE.finditer(call.result):
                url = normalise_url(m.group("url"))
                key = url_key(url)
                title = m.group("title").strip()
                titles.setdefault(key, title)
                if key not in items:
                    order += 1
                    snippet = " ".join(m.group("snippet").split())
                    items[key] = Evidence(url, title or url, snippet, "search", order)
        elif call.name == "query_url" and isinstance(call.arguments.get("url"), str):
            url = normalise_url(call.arguments["url"])
            key = url_key(url)
            text = _page_text(call.result)
            if not text:
                continue
            goal = str(call.arguments.get("goal", "")).strip()
            old = items.get(key)
            if old is None or old.kind == "search":
                order += 1
                title = titles.get(key) or goal or url
                items[key] = Evidence(url, title, text, "page", old.order if old else order)
            else:
                old.text += "\n\n" + text
    return sorted(items.values(), key=lambda e: (e.kind != "page", e.order))


def relevance(question: str, text: str) -> float:
    """Share of the question's content words that the text mentions."""
    q = {w.lower() for w in _WORDS_RE.findall(question)}
    if not q:
        return 0.0
    t = {w.lower() for w in _WORDS_RE.findall(text)}
    return len(q & t) / len(q)
