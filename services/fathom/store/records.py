"""What the store hands out: plain frozen dataclasses, never ORM objects bound to a closed session."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fathom.core.errors import StoreError
from fathom.store.models import TERMINAL_STATUSES


class RecordNotFound(StoreError):
    """No job / batch with that id (the gateway answers NOT_FOUND)."""


class BadPageToken(StoreError):
    """A ``list_jobs`` page token that this store did not hand out (INVALID_ARGUMENT)."""


class ClaimLost(StoreError):
    """The worker no longer holds the job's claim: another worker took it over after the lease
    expired, or the job ended. The worker must stop and write nothing more."""


@dataclass(frozen=True)
class JobInfo:
    id: str
    kind: str
    question: str
    mode: str  # "search" | "report"
    status: str  # "queued" | "running" | "succeeded" | "failed" | "cancelled"
    lane: str  # "live" | "train"
    created_at: datetime
    settings: dict[str, Any] = field(default_factory=dict)
    batch_id: str | None = None
    error: str | None = None
    answer: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    heartbeat_at: datetime | None = None
    priority: int = 0
    client_id: str = ""
    client_request_id: str | None = None
    external_id: str | None = None
    gold_answer: str | None = None
    lease_expires_at: datetime | None = None
    attempts: int = 0
    enqueued_at: datetime | None = None
    deadline_at: datetime | None = None
    cancel_requested: bool = False

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


@dataclass(frozen=True)
class BatchItemIn:
    """One question of a batch as the caller gave it."""

    question: str
    external_id: str | None = None
    gold_answer: str | None = None


@dataclass(frozen=True)
class BatchInfo:
    id: str
    name: str
    mode: str
    lane: str
    priority: int
    client_id: str
    client_request_id: str | None
    total: int
    created_at: datetime
    counts: dict[str, int] = field(default_factory=dict)  # jobs per status, every status present
    done: int = 0  # jobs in a terminal status

    @property
    def is_finished(self) -> bool:
        return self.done >= self.total


@dataclass(frozen=True)
class EventInfo:
    stream: str  # "job:<id>" | "batch:<id>"
    index: int  # 0, 1, 2... within the stream
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RewardInfo:
    """A stored reward: the scalar RAPO trains on and the breakdown that explains it."""

    trajectory_id: str
    stage: int  # 1 | 2
    reward: float
    breakdown: dict[str, Any]  # RewardBreakdown.to_dict()
    created_at: datetime
