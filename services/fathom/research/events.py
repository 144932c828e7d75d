"""Progress events of a research job, for a terminal, a gRPC stream or a log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventKind = Literal[
    "job_started", "step", "synthesis_started", "synthesis_done", "job_done", "job_failed"
]


@dataclass(frozen=True)
class ProgressEvent:
    kind: EventKind
    job_id: str
    elapsed_s: float
    turn: int = 0
    total_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{name, target, ok}]
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
