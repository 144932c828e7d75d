"""What the extractor hands back for one (page, goal)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

# "extract": the model answered in three parts; "compress": the model's compression of the page
# (about 30%); "truncate": the start of the page text. The last two are the original's fallbacks.
ExtractMethod = Literal["extract", "compress", "truncate"]
# Where the Evidence quotes came from: the model's own (verified) quotes; page sentences the model
# picked by constrained choice (protocol ``sentence_choice``); page sentences chosen by word overlap
# with the goal alone (when none of the model's quotes could be found on the page); or none.
EvidenceSource = Literal["model", "choice", "lexical", "none"]


@dataclass(frozen=True)
class Evidence:
    rationale: str
    evidence: list[str]  # verbatim spans of the page text, one per item
    summary: str
    dropped_quotes: int  # quotes the model gave that do not occur in the page
    method: ExtractMethod
    attempts: int  # extraction attempts spent (a cache hit reports those of the stored result)
    evidence_source: EvidenceSource = "model"
    model: str = ""
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(
            rationale=str(data["rationale"]),
            evidence=[str(q) for q in data["evidence"]],
            summary=str(data["summary"]),
            dropped_quotes=int(data["dropped_quotes"]),
            method=data["method"],
            attempts=int(data["attempts"]),
            evidence_source=data.get("evidence_source", "model"),
            model=str(data.get("model", "")),
            cached=bool(data.get("cached", False)),
        )
