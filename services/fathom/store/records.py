"""What the store hands out: plain frozen dataclasses, never ORM objects bound to a closed session."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fathom.store.models import TERMINAL_STATUSES


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str
    question: str
    mode: str  # "search" | "report"
    status: str  # "queued" | "running" | "succeeded" | "failed" | "cancelled"
    lane: str  # "interactive" | "training"
    created_at: datetime
    settings: dict[str, Any] = field(default_factory=dict)
    batch_id: str | None = None
    error: str | None = None
    answer: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    heartbeat_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class ReportInfo:
    job_id: str
    markdown: str
    data: dict[str, Any]  # the synthesizer's report as JSON
    word_count: int
    invalid_citations_removed: int
    sentences_without_citation: int
    citations_per_section: Any
    paths: dict[str, str]
    created_at: datetime
