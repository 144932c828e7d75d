"""``JobStore``: every read and write of research jobs, their trajectories and reports.

Each call opens its own session and transaction, so one ``JobStore`` may be shared by threads
(async callers use ``asyncio.to_thread``). Writes that a retrying caller may repeat (a step
re-delivered by a queue, a snapshot seen twice) are idempotent by their natural keys. Every
database failure surfaces as ``StoreError`` with what was being done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from fathom.agent.trajectory import Step, Trajectory
from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.store.db import Database
from fathom.store.models import (
    JOB_LANES,
    JOB_MODES,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    Job,
    PageSnapshotRecord,
    ReportRecord,
    StepRecord,
    ToolCallRecord,
    TrajectoryRecord,
    new_id,
    now,
)
from fathom.store.records import JobInfo, ReportInfo
from fathom.store.rows import (
    snapshot_from,
    snapshot_from_dict,
    snapshot_row,
    step_row,
    tool_call_row,
    trajectory_from,
)
from fathom.tools.fetch.base import PageSnapshot

log = get_logger(__name__)

MAX_LIST_LIMIT = 10_000


def _job_info(job: Job) -> JobInfo:
    return JobInfo(
        id=job.id,
        kind=job.kind,
        question=job.question,
        mode=job.mode,
        status=job.status,
        lane=job.lane,
        created_at=job.created_at,
        settings=dict(job.settings or {}),
        batch_id=job.batch_id,
        error=job.error,
        answer=job.answer,
        started_at=job.started_at,
        finished_at=job.finished_at,
        worker_id=job.worker_id,
        heartbeat_at=job.heartbeat_at,
    )


def _report_info(rep: ReportRecord) -> ReportInfo:
    return ReportInfo(
        job_id=rep.job_id,
        markdown=rep.markdown,
        data=dict(rep.data or {}),
        word_count=rep.word_count,
        invalid_citations_removed=rep.invalid_citations_removed,
        sentences_without_citation=rep.sentences_without_citation,
        citations_per_section=rep.citations_per_section,
        paths={str(k): str(v) for k, v in (rep.paths or {}).items()},
        created_at=rep.created_at,
    )


def _count(report: dict[str, Any], *keys: str, default: int = 0) -> int:
    for key in keys:
        value = report.get(key)
        if value is None:
            continue
        if isinstance(value, list | tuple | dict):
            return len(value)
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"report field {key!r} is not a count: {value!r}") from exc
    return default


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _failing_as(self, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise StoreError(f"{action}: {exc}") from exc

    def _insert(self, table: Any) -> Any:
        """INSERT with the backend's ON CONFLICT support."""
        return (postgresql.insert if self.db.backend == "postgresql" else sqlite.insert)(table)

    # -- jobs -------------------------------------------------------------------------------

    def create_job(
        self,
        question: str,
        mode: str = "report",
        settings_json: dict[str, Any] | None = None,
        lane: str = "interactive",
        *,
        kind: str = "research",
        batch_id: str | None = None,
        job_id: str | None = None,
    ) -> str:
        """Store a queued job and return its id (a new UUID unless ``job_id`` is given)."""
        if not question or not question.strip():
            raise StoreError("cannot create a job: the question is empty")
        if mode not in JOB_MODES:
            raise StoreError(f"cannot create a job: mode {mode!r} is not one of {', '.join(JOB_MODES)}")
        if lane not in JOB_LANES:
            raise StoreError(f"cannot create a job: lane {lane!r} is not one of {', '.join(JOB_LANES)}")
        job_id = job_id or new_id()
        with self._failing_as(f"creating job {job_id}"), self.db.transaction() as s:
            s.add(
                Job(
                    id=job_id,
                    kind=kind,
                    question=question,
                    mode=mode,
                    lane=lane,
                    status="queued",
                    batch_id=batch_id,
                    settings=dict(settings_json or {}),
                    created_at=now(),
                )
            )
        log.debug("job_created", job_id=job_id, mode=mode, lane=lane)
        return job_id

    def get_job(self, job_id: str) -> JobInfo:
        """The job with this id, or with the only id that starts with ``job_id``."""
        key = (job_id or "").strip()
        if not key:
            raise StoreError("no job id given")
        with self._failing_as(f"reading job {key}"), self.db.session() as s:
            job = s.get(Job, key)
            if job is not None:
                return _job_info(job)
            pattern = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            found = s.scalars(select(Job).where(Job.id.like(pattern, escape="\\")).limit(2)).all()
            if not found:
                raise StoreError(f"no job with id or id prefix {key!r}")
            if len(found) > 1:
                raise StoreError(f"job id prefix {key!r} is ambiguous: give more characters")
            return _job_info(found[0])

    def list_jobs(
        self,
        status: str | None = None,
        limit: int = 50,
        *,
        lane: str | None = None,
        batch_id: str | None = None,
        offset: int = 0,
    ) -> list[JobInfo]:
        """Newest first."""
        if status is not None and status not in JOB_STATUSES:
            raise StoreError(f"unknown job status {status!r}: one of {', '.join(JOB_STATUSES)}")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise StoreError(f"limit must be between 1 and {MAX_LIST_LIMIT}, not {limit}")
        if offset < 0:
            raise StoreError(f"offset must not be negative, not {offset}")
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(Job.status == status)
        if lane is not None:
            query = query.where(Job.lane == lane)
        if batch_id is not None:
            query = query.where(Job.batch_id == batch_id)
        with self._failing_as("listing jobs"), self.db.session() as s:
            return [_job_info(j) for j in s.scalars(query)]

    def job_counts(self, batch_id: str | None = None) -> dict[str, int]:
        """Number of jobs per status (every status present, zero when none)."""
        query = select(Job.status, func.count()).group_by(Job.status)
        if batch_id is not None:
            query = query.where(Job.batch_id == batch_id)
        with self._failing_as("counting jobs"), self.db.session() as s:
            counts = {status: 0 for status in JOB_STATUSES}
            counts.update({str(st): int(n) for st, n in s.execute(query)})
            return counts

    def stale_jobs(self, older_than_s: float, limit: int = 100) -> list[JobInfo]:
        """Running jobs whose worker has not sent a heartbeat for ``older_than_s`` seconds:
        candidates for resumption from their last persisted step."""
        cutoff = now() - timedelta(seconds=older_than_s)
        last_sign = func.coalesce(Job.heartbeat_at, Job.started_at, Job.created_at)
        query = (
            select(Job).where(Job.status == "running", last_sign < cutoff)
            .order_by(last_sign).limit(limit)
        )
        with self._failing_as("finding stale jobs"), self.db.session() as s:
            return [_job_info(j) for j in s.scalars(query)]

    # -- job status -------------------------------------------------------------------------

    def _transition(
        self, job_id: str, to: str, allowed_from: Sequence[str], values: dict[str, Any]
    ) -> None:
        with self._failing_as(f"marking job {job_id} {to}"), self.db.transaction() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_(allowed_from))
                .values(status=to, **values)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return
            current = s.scalar(select(Job.status).where(Job.id == job_id))
        if current is None:
            raise StoreError(f"no job {job_id}")
        if current == to and to in TERMINAL_STATUSES:
            return  # a repeated terminal mark (e.g. a re-delivered task) changes nothing
        raise StoreError(f"job {job_id} is {current}: it cannot be marked {to}")

    def mark_running(self, job_id: str, worker_id: str | None = None) -> None:
        """queued -> running; running -> running re-claims the job (resumption by a new worker)."""
        t = now()
        self._transition(
            job_id, "running", ("queued", "running"),
            {"started_at": func.coalesce(Job.started_at, t), "worker_id": worker_id, "heartbeat_at": t},
        )

    def heartbeat(self, job_id: str, worker_id: str | None = None) -> None:
        """Record that the worker running the job is alive."""
        values: dict[str, Any] = {"heartbeat_at": now()}
        if worker_id is not None:
            values["worker_id"] = worker_id
        self._transition(job_id, "running", ("running",), values)

    def mark_succeeded(self, job_id: str, answer: str | None = None) -> None:
        self._transition(
            job_id, "succeeded", ("running",), {"answer": answer, "finished_at": now(), "error": None}
        )

    def mark_failed(self, job_id: str, error: str) -> None:
        self._transition(job_id, "failed", ("queued", "running"), {"error": error, "finished_at": now()})

    def mark_cancelled(self, job_id: str, reason: str | None = None) -> None:
        self._transition(
            job_id, "cancelled", ("queued", "running"), {"error": reason, "finished_at": now()}
        )

    # -- trajectories -----------------------------------------------------------------------

    def start_trajectory(self, job_id: str, question: str, prompt: str, model: str = "") -> str:
        """A new, empty trajectory of the job; returns its id."""
        trajectory_id = new_id()
        with self._failing_as(f"starting a trajectory of job {job_id}"), self.db.transaction() as s:
            if s.get(Job, job_id) is None:
                raise StoreError(f"cannot start a trajectory: no job {job_id}")
            s.add(
                TrajectoryRecord(
                    id=trajectory_id, job_id=job_id, question=question, prompt=prompt, model=model,
                    total_tokens=0, meta={}, created_at=now(),
                )
            )
        return trajectory_id

    def record_step(self, trajectory_id: str, step: Step) -> bool:
        """Persist a completed step and its tool calls in one transaction.

        Idempotent on (trajectory, step index): a re-delivered step is ignored and the first
        stored version kept. Returns True when this call stored the step.
        """
        row = step_row(step)
        calls = [tool_call_row(c) for c in step.tool_calls]
        indexes = [c["index"] for c in calls]
        if len(set(indexes)) != len(indexes):
            raise StoreError(f"step {step.index}: tool call indexes repeat: {indexes}")
        action = f"recording step {step.index} of trajectory {trajectory_id}"
        with self._failing_as(action), self.db.transaction() as s:
            if s.get(TrajectoryRecord, trajectory_id) is None:
                raise StoreError(f"{action}: no such trajectory")
            stmt = (
                self._insert(StepRecord)
                .values(trajectory_id=trajectory_id, created_at=now(), **row)
                .on_conflict_do_nothing(index_elements=["trajectory_id", "index"])
                .returning(StepRecord.id)
            )
            step_id = s.scalar(stmt)
            if step_id is None:
                log.debug("step_already_recorded", trajectory_id=trajectory_id, index=step.index)
                return False
            if calls:
                s.execute(insert(ToolCallRecord), [{"step_id": step_id, **c} for c in calls])
        return True

    def finish_trajectory(self, trajectory_id: str, traj: Trajectory) -> None:
        """Store the outcome of a finished trajectory, and any of its steps not yet recorded."""
        for step in traj.steps:
            self.record_step(trajectory_id, step)
        values: dict[str, Any] = {
            "answer": traj.answer,
            "stop_reason": traj.stop_reason,
            "total_tokens": int(traj.total_tokens),
            "meta": dict(traj.meta),
            "finished_at": now(),
        }
        if traj.model:
            values["model"] = traj.model
        with self._failing_as(f"finishing trajectory {trajectory_id}"), self.db.transaction() as s:
            done = s.execute(
                update(TrajectoryRecord).where(TrajectoryRecord.id == trajectory_id).values(**values)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise StoreError(f"cannot finish trajectory {trajectory_id}: no such trajectory")

    def _load(self, s: Session, where: Any) -> Trajectory | None:
        query = (
            select(TrajectoryRecord)
            .where(where)
            .order_by(TrajectoryRecord.created_at.desc(), TrajectoryRecord.id.desc())
            .limit(1)
            .options(selectinload(TrajectoryRecord.steps).selectinload(StepRecord.tool_calls))
        )
        row = s.scalars(query).first()
        return None if row is None else trajectory_from(row)

    def load_trajectory(self, job_id: str) -> Trajectory | None:
        """The job's latest trajectory rebuilt as dataclasses (None when it has none yet)."""
        with self._failing_as(f"loading the trajectory of job {job_id}"), self.db.session() as s:
            return self._load(s, TrajectoryRecord.job_id == job_id)

    def load_trajectory_by_id(self, trajectory_id: str) -> Trajectory:
        with self._failing_as(f"loading trajectory {trajectory_id}"), self.db.session() as s:
            traj = self._load(s, TrajectoryRecord.id == trajectory_id)
        if traj is None:
            raise StoreError(f"no trajectory {trajectory_id}")
        return traj

    def trajectory_ids(self, job_id: str) -> list[str]:
        """Ids of the job's trajectories, oldest first."""
        query = (
            select(TrajectoryRecord.id)
            .where(TrajectoryRecord.job_id == job_id)
            .order_by(TrajectoryRecord.created_at, TrajectoryRecord.id)
        )
        with self._failing_as(f"listing trajectories of job {job_id}"), self.db.session() as s:
            return list(s.scalars(query))

    # -- page snapshots ---------------------------------------------------------------------

    def record_snapshot(self, snap: PageSnapshot) -> bool:
        """Store a page snapshot's provenance; idempotent on (sha256, url). True when new."""
        row = snapshot_row(snap)
        with self._failing_as(f"recording the snapshot of {snap.url}"), self.db.transaction() as s:
            stmt = (
                self._insert(PageSnapshotRecord)
                .values(**row)
                .on_conflict_do_nothing(index_elements=["sha256", "url"])
                .returning(PageSnapshotRecord.id)
            )
            return s.scalar(stmt) is not None

    def record_snapshot_dict(self, data: dict[str, Any]) -> bool:
        """``record_snapshot`` for a snapshot in dict/JSON form (as tool results carry it)."""
        return self.record_snapshot(snapshot_from_dict(data))

    def find_snapshots(self, *, sha256: str | None = None, url: str | None = None) -> list[PageSnapshot]:
        """Snapshots by body hash and/or URL (requested or final), newest first."""
        if sha256 is None and url is None:
            raise StoreError("find_snapshots needs a sha256 or a url")
        query = select(PageSnapshotRecord).order_by(
            PageSnapshotRecord.fetched_at.desc(), PageSnapshotRecord.id.desc()
        )
        if sha256 is not None:
            query = query.where(PageSnapshotRecord.sha256 == sha256.lower())
        if url is not None:
            query = query.where((PageSnapshotRecord.url == url) | (PageSnapshotRecord.final_url == url))
        with self._failing_as("finding snapshots"), self.db.session() as s:
            return [snapshot_from(r) for r in s.scalars(query)]

    # -- reports ----------------------------------------------------------------------------

    def save_report(
        self,
        job_id: str,
        report_dict: dict[str, Any],
        markdown: str,
        paths: dict[str, str] | None = None,
    ) -> None:
        """Store (or replace) the job's report. Summary counts are read from ``report_dict``."""
        # Column names, not attribute names: this is a Core upsert on the table.
        values: dict[str, Any] = {
            "markdown": markdown,
            "json": dict(report_dict),
            "word_count": _count(report_dict, "word_count", "words", default=len(markdown.split())),
            "invalid_citations_removed": _count(report_dict, "invalid_citations_removed"),
            "sentences_without_citation": _count(
                report_dict, "sentences_without_citation", "sentences_without_citations"
            ),
            "citations_per_section": report_dict.get("citations_per_section") or {},
            "paths": {str(k): str(v) for k, v in (paths or {}).items()},
            "created_at": now(),
        }
        table = ReportRecord.__table__
        with self._failing_as(f"saving the report of job {job_id}"), self.db.transaction() as s:
            if s.get(Job, job_id) is None:
                raise StoreError(f"cannot save a report: no job {job_id}")
            s.execute(
                self._insert(table)
                .values(job_id=job_id, **values)
                .on_conflict_do_update(index_elements=["job_id"], set_=values)
            )

    def get_report(self, job_id: str) -> ReportInfo | None:
        with self._failing_as(f"reading the report of job {job_id}"), self.db.session() as s:
            rep = s.scalar(select(ReportRecord).where(ReportRecord.job_id == job_id))
            return None if rep is None else _report_info(rep)

