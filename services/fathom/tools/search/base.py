"""The search seam and the original's result format."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SearchHit:
    title: str
    url: str
    snippet: str
    score: float = 0.0
    doc_id: str | None = None  # local index only


@runtime_checkable
class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, top_k: int = 10) -> list[SearchHit]: ...

    async def aclose(self) -> None: ...


# One entry of format_results' output: "3. [Title](https://...)" (URLs may hold balanced parentheses).
_RESULT_ENTRY_RE = re.compile(
    r"^\s*\d+\.\s*\[(?P<title>[^\]\n]*)\]\((?P<url>https?://[^\s)]*(?:\([^\s)]*\)[^\s)]*)*)\)", re.M
)


def parse_results(text: str) -> list[tuple[str, str]]:
    """(title, URL) of each entry of a ``format_results`` text, in rank order."""
    return [(m["title"].strip(), m["url"]) for m in _RESULT_ENTRY_RE.finditer(text)]


def format_results(query: str, hits: list[SearchHit]) -> str:
    """Numbered markdown entries (index, title, URL, snippet) separated by rules, as the original."""
    if not hits:
        return f"No results found for '{query}'. Try a different or broader query."
    blocks = []
    for i, h in enumerate(hits, 1):
        blocks.append(f"{i}. [{h.title}]({h.url})\n{h.snippet.strip()}")
    return f"A search for '{query}' found {len(hits)} results:\n\n" + "\n\n---\n\n".join(blocks)
