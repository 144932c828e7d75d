"""The pages a research session read, with the page's own words that the trace holds for each.

The guided writer grounds every body section on one of these pages, and checks every sentence it
keeps against the page's words (:mod:`fathom.synthesis.grounding`). Only page text counts: the
quotes of the extractor's Evidence part, which the toolbox keeps only when it finds them on the
page, and the page's main text itself where a :data:`PageTexts` source can read it back from the
stored snapshot. Where it can, every quote is checked against that text again, so a quote-like
line that did not come from the page (a model echoing the layout in its Rationale) is dropped.
The extractor's Rationale and Summary are its own unchecked words and are never used.

Pure: page texts come in through ``PageTexts`` (see :mod:`fathom.synthesis.pages`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from fathom.agent.trajectory import ToolCall, Trajectory
from fathom.synthesis.citations import normalise_url, url_key
from fathom.synthesis.grounding import printable_sentence, quote_sentences, split_at_page_lines
from fathom.synthesis.protocol import citable_urls
from fathom.tools.extract.render import query_url_quotes as evidence_quotes
from fathom.tools.search.base import parse_results

# The main text of the page a successful ``query_url`` call read, or None when it is not at hand.
PageTexts = Callable[[ToolCall], str | None]

_SITE_SUFFIX_RE = re.compile(r"\s+[-|–—]\s+[^-|–—]{1,40}$")  # "Page title - Site name"


@dataclass
class Evidence:
    """One page the research read successfully."""

    url: str  # as the query_url call spelled it
    title: str  # the page's own title, else its search hit's; "" when neither is known
    quotes: list[str]  # the extractor's verbatim quotes (checked against page_text when known)
    order: int  # position among the pages read, in trace order
    page_text: str | None = None  # the page's main text, read back from its snapshot
    _sentences: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._refresh()

    def _refresh(self) -> None:
        out: list[str] = []
        for quote in self.quotes:
            for s in quote_sentences(quote):
                # With the page at hand each sentence must be on it, and its line breaks cut off a
                # heading that a quote ran into the sentence below it.
                pieces = [s] if self.page_text is None else [
                    p for p in split_at_page_lines(s, self.page_text) if printable_sentence(p)
                ]
                pieces = [self._without_heading(p) for p in pieces]
                out += [p for p in pieces if p not in out]
        self._sentences = out

    def _without_heading(self, sentence: str) -> str:
        """The sentence without the page's title in front of it. Page readers that flatten a short
        page put its heading and first paragraph on one line: "Eiffel Tower The Eiffel Tower is"."""
        for heading in (self.title.strip(), _SITE_SUFFIX_RE.sub("", self.title.strip())):
            rest = sentence[len(heading):].lstrip() if heading and sentence.startswith(heading + " ") else ""
            if rest and printable_sentence(rest):
                return rest
        return sentence

    @property
    def grounds(self) -> str:
        """The words a sentence about this page is checked against: the page's main text when it
        is at hand, else the quotes taken from it."""
        return self.page_text if self.page_text is not None else "\n".join(self.quotes)

    def sentences(self, limit: int | None = None) -> list[str]:
        """Complete sentences of the page, verbatim, in the extractor's order."""
        return self._sentences[:limit]

    @property
    def host(self) -> str:
        return re.sub(r"^www\.", "", urlsplit(self.url).netloc) or self.url


def collect_evidence(traj: Trajectory, page_texts: PageTexts | None = None) -> list[Evidence]:
    """Every page the research read successfully (the citable ones), in trace order, one item per
    URL; a page read twice pools its quotes."""
    citable = {url_key(u) for u in citable_urls(traj)}
    titles: dict[str, str] = {}
    for call in traj.tool_calls:
        if call.name == "search_urls" and call.ok and call.result:
            for hit_title, hit_url in parse_results(call.result):
                titles.setdefault(url_key(normalise_url(hit_url)), hit_title)
    items: dict[str, Evidence] = {}
    for call in traj.tool_calls:
        url = call.arguments.get("url")
        if call.name != "query_url" or not call.ok or not call.result or not isinstance(url, str):
            continue
        key = url_key(url)
        if key not in citable:
            continue
        quotes = evidence_quotes(call.result)
        text = page_texts(call) if page_texts is not None else None
        old = items.get(key)
        if old is None:
            title = call.meta.get("title")
            title = title.strip() if isinstance(title, str) else ""
            items[key] = Evidence(normalise_url(url), title or titles.get(key, ""), quotes, len(items), text)
            continue
        old.quotes += [q for q in quotes if q not in old.quotes]
        if old.page_text is None:
            old.page_text = text
        elif text is not None and text != old.page_text:
            old.page_text += "\n\n" + text  # read again and changed: either version is the page
        old._refresh()
    return list(items.values())
