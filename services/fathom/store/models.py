"""Tables of the job store (SQLAlchemy 2 typed declarative models).

A job owns trajectories; a trajectory owns its steps in order; a step owns its tool calls. Page
snapshots are shared provenance rows keyed by (body sha256, url): tool calls point at them by
``snapshot_sha256`` only, since the same body may be reached through several URLs.
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
JOB_LANES = ("interactive", "training")

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
        # Listing: "newest jobs", "newest jobs with status X".
        Index("ix_jobs_status_created_at", "status", "created_at"),
        Index("ix_jobs_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(32), default="research")
    question: Mapped[str] = mapped_column(StoredText)
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    lane: Mapped[str] = mapped_column(String(16), default="interactive")
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    error: Mapped[str | None] = mapped_column(StoredText)
    answer: Mapped[str | None] = mapped_column(StoredText)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Resumption: a running job whose heartbeat is stale belongs to a dead worker.
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

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
