"""Tables of the job store (SQLAlchemy 2 typed declarative models).

A job owns trajectories; a trajectory owns its steps in order; a step owns its tool calls. Page
snapshots are shared provenance rows keyed by (body sha256, url): tool calls point at them by
``snapshot_sha256`` only, since the same body may be reached through several URLs.

Durable jobs (the distributed plane): a job is claimed by one worker at a time with a lease
(``worker_id`` + ``lease_expires_at``); a batch groups jobs submitted together; ``job_events`` is
the ordered progress log of each stream (``job:<id>``, ``batch:<id>``) that ``Watch`` replays.

Rewards (RAPO): a trajectory has at most one reward per stage, its full ``RewardBreakdown`` as JSON
next to the scalar, so a redelivered scoring task stores nothing twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from fathom.store.columns import JSONDoc, StoredText, UTCDateTime

JOB_MODES = ("search", "report")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
JOB_LANES = ("live", "train")
# Lane names before migration 0002; still accepted on input and mapped, so older callers keep working.
LEGACY_LANES = {"interactive": "live", "training": "train"}
MAX_PRIORITY = 9
REWARD_STAGES = (1, 2)

# Stable constraint names, so migrations can address them on every backend (SQLite batch mode too).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> datetime:
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("mode", JOB_MODES), name="mode"),
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        CheckConstraint(_in("lane", JOB_LANES), name="lane"),
        CheckConstraint(f"priority BETWEEN 0 AND {MAX_PRIORITY}", name="priority"),
        # Idempotent Submit: the same (client, request id) is one job, even under a race.
        UniqueConstraint("client_id", "client_request_id"),
        # Listing: "newest jobs", "newest jobs with status X", "... of lane X", "... of batch X".
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_lane_created_at", "lane", "created_at"),
        Index("ix_jobs_batch_id_created_at", "batch_id", "created_at"),
        # The sweeper (expired leases, queued jobs never picked up) and claiming.
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), default="research")
    question: Mapped[str] = mapped_column(StoredText)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    lane: Mapped[str] = mapped_column(String(16), default="live")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Who submitted it (quotas) and the caller's idempotency key of the Submit.
    client_id: Mapped[str] = mapped_column(String(128), default="")
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    # No foreign key: jobs may name a batch id of the caller's own (older callers did).
    batch_id: Mapped[str | None] = mapped_column(String(64))
    external_id: Mapped[str | None] = mapped_column(String(256))  # the caller's id of a batch item
    gold_answer: Mapped[str | None] = mapped_column(StoredText)
    error: Mapped[str | None] = mapped_column(StoredText)
    answer: Mapped[str | None] = mapped_column(StoredText)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Resumption: a running job whose heartbeat is stale belongs to a dead worker.
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The claim: only the worker holding an unexpired lease runs the job.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last sent to the queue
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    trajectories: Mapped[list[TrajectoryRecord]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


class TrajectoryRecord(Base):
    __tablename__ = "trajectories"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    question: Mapped[str] = mapped_column(StoredText)
    prompt: Mapped[str] = mapped_column(StoredText)
    model: Mapped[str] = mapped_column(String(256), default="")
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    answer: Mapped[str | None] = mapped_column(StoredText)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    job: Mapped[Job] = relationship(back_populates="trajectories")
    steps: Mapped[list[StepRecord]] = relationship(
        back_populates="trajectory",
        order_by="StepRecord.index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class StepRecord(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("trajectory_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trajectory_id: Mapped[str] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(StoredText)
    think: Mapped[str | None] = mapped_column(StoredText)
    answer: Mapped[str | None] = mapped_column(StoredText)
    # Token-exact record for training: never re-tokenize text to train on it.
    token_ids: Mapped[list[int] | None] = mapped_column(JSONDoc)
    logprobs: Mapped[list[Any] | None] = mapped_column(JSONDoc)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tool_response_tokens: Mapped[int] = mapped_column(Integer, default=0)
    finish_reason: Mapped[str] = mapped_column(String(32), default="stop")
    model_s: Mapped[float] = mapped_column(Double, default=0.0)
    tools_s: Mapped[float] = mapped_column(Double, default=0.0)
    overhead_s: Mapped[float] = mapped_column(Double, default=0.0)
    forced_final: Mapped[bool] = mapped_column(Boolean, default=False)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)

    trajectory: Mapped[TrajectoryRecord] = relationship(back_populates="steps")
    tool_calls: Mapped[list[ToolCallRecord]] = relationship(
        back_populates="step",
        order_by="ToolCallRecord.index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class ToolCallRecord(Base):
    __tablename__ = "tool_calls"
    __table_args__ = (UniqueConstraint("step_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(128))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    raw: Mapped[str] = mapped_column(StoredText)
    error: Mapped[str | None] = mapped_column(StoredText)
    result: Mapped[str | None] = mapped_column(StoredText)
    ok: Mapped[bool] = mapped_column(Boolean, default=False)
    elapsed_s: Mapped[float] = mapped_column(Double, default=0.0)
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)

    step: Mapped[StepRecord] = relationship(back_populates="tool_calls")


class PageSnapshotRecord(Base):
    __tablename__ = "page_snapshots"
    __table_args__ = (UniqueConstraint("sha256", "url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(StoredText)
    final_url: Mapped[str] = mapped_column(StoredText)
    status: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(255))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fetcher: Mapped[str] = mapped_column(String(32))
    extractor_version: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    encoding: Mapped[str | None] = mapped_column(String(64))
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)  # body cut at the size cap


class ReportRecord(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    markdown: Mapped[str] = mapped_column(StoredText)
    data: Mapped[dict[str, Any]] = mapped_column("json", JSONDoc)
    word_count: Mapped[int] = mapped_column(Integer, default=0)
    invalid_citations_removed: Mapped[int] = mapped_column(Integer, default=0)
    sentences_without_citation: Mapped[int] = mapped_column(Integer, default=0)
    citations_per_section: Mapped[Any] = mapped_column(JSONDoc, default=dict)
    paths: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class BatchRecord(Base):
    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(_in("mode", JOB_MODES), name="mode"),
        CheckConstraint(_in("lane", JOB_LANES), name="lane"),
        CheckConstraint(f"priority BETWEEN 0 AND {MAX_PRIORITY}", name="priority"),
        UniqueConstraint("client_id", "client_request_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(256), default="")
    mode: Mapped[str] = mapped_column(String(16))
    lane: Mapped[str] = mapped_column(String(16), default="live")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    client_id: Mapped[str] = mapped_column(String(128), default="")
    client_request_id: Mapped[str | None] = mapped_column(String(128))
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class JobEventRecord(Base):
    """One progress event; ``index`` counts 0, 1, 2... per stream, so a reader resumes by index."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("stream", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(128))
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)


class RewardRecord(Base):
    """The reward of one trajectory at one stage; ``breakdown`` is ``RewardBreakdown.to_dict()``."""

    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint(f"stage IN ({', '.join(str(s) for s in REWARD_STAGES)})", name="stage"),
        # Idempotent scoring: one reward per (trajectory, stage); its index also serves lookups.
        UniqueConstraint("trajectory_id", "stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trajectory_id: Mapped[str] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"))
    stage: Mapped[int] = mapped_column(Integer)
    reward: Mapped[float] = mapped_column(Double)
    breakdown: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
