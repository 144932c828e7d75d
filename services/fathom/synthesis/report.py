"""The report record: what the synthesizer hands back, stored and served as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ReportSection:
    title: str
    text: str
    citations: list[str]  # valid cited URLs in this section, in order, one per occurrence
    level: int = 2  # markdown heading level; 0 for text before the first heading


@dataclass
class Report:
    """A checked report. ``markdown`` has already been through the citation check."""

    question: str
    plan: str  # the synthesizer model's own plan (<think>...</think>); "" when it wrote none
    markdown: str
    sections: list[ReportSection]
    sources: list[str]
    invalid_citations_removed: int
    sentences_without_citation: int
    citations_per_section: dict[str, int]
    word_count: int
    model: str
    invalid_citations: list[str] = field(default_factory=list)
    uncited_sentences: list[str] = field(default_factory=list)
    guided: bool = False
    # Guided reports: which page grounds which section, built by code, so never stored as ``plan``.
    guided_plan: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # token usage, trace compaction, timings

    @property
    def citation_count(self) -> int:
        return sum(self.citations_per_section.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        d = dict(data)
        d["sections"] = [ReportSection(**s) for s in d.get("sections", [])]
        return cls(**d)
