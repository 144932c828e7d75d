"""``JobStore``: every read and write of research jobs, their trajectories and reports, batches,
job claims and the event log of progress.

Each call opens its own session and transaction, so one ``JobStore`` may be shared by threads
(async callers use ``asyncio.to_thread``). Writes that a retrying caller may repeat (a step
re-delivered by a queue, a snapshot seen twice, a Submit sent again) are idempotent by their natural
keys, enforced by unique constraints rather than by reading first, so concurrent writers on other
processes are safe too. Every database failure surfaces as ``StoreError`` with what was being done.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, not_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload

from fathom.agent.trajectory import Step, Trajectory
from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.store.columns import utc
from fathom.store.db import Database
from fathom.store.models import (
    JOB_LANES,
    JOB_MODES,
    JOB_STATUSES,
    LEGACY_LANES,
    MAX_PRIORITY,
    REWARD_STAGES,
    TERMINAL_STATUSES,
    BatchRecord,
    Job,
    JobEventRecord,
    PageSnapshotRecord,
    ReportRecord,
    RewardRecord,
    StepRecord,
    ToolCallRecord,
    TrajectoryRecord,
    new_id,
    now,
)
from fathom.store.records import (
    BadPageToken,
    BatchInfo,
    BatchItemIn,
    ClaimLost,
    EventInfo,
    JobInfo,
    RecordNotFound,
    ReportInfo,
    RewardInfo,
)
from fathom.store.rows import (
    export_step,
    snapshot_from,
    snapshot_from_dict,
    snapshot_row,
    step_from,
    step_row,
    tool_call_row,
    trajectory_from,
)
from fathom.tools.fetch.base import PageSnapshot

log = get_logger(__name__)

MAX_LIST_LIMIT = 10_000
MAX_BATCH_ITEMS = 100_000
ACTIVE_STATUSES = ("queued", "running")
ID_CHUNK = 5_000  # ids per IN (...): well under SQLite's and PostgreSQL's bound-parameter limits
EXPORT_CHUNK = 200
EVENT_RETRIES = 50

__all__ = ["BadPageToken", "ClaimLost", "JobStore", "RecordNotFound"]


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
        priority=job.priority,
        client_id=job.client_id,
        client_request_id=job.client_request_id,
        external_id=job.external_id,
        gold_answer=job.gold_answer,
        lease_expires_at=job.lease_expires_at,
        attempts=job.attempts,
        enqueued_at=job.enqueued_at,
        deadline_at=job.deadline_at,
        cancel_requested=bool(job.cancel_requested),
    )


def _lane(lane: str) -> str:
    """``lane`` in today's spelling; the names before migration 0002 are mapped."""
    lane = LEGACY_LANES.get(lane, lane)
    if lane not in JOB_LANES:
        raise StoreError(f"lane {lane!r} is not one of {', '.join(JOB_LANES)}")
    return lane


def _check_job_input(question: str, mode: str, lane: str, priority: int) -> str:
    """Validate what every new job needs; returns the lane in today's spelling."""
    if not question or not question.strip():
        raise StoreError("cannot create a job: the question is empty")
    if mode not in JOB_MODES:
        raise StoreError(f"cannot create a job: mode {mode!r} is not one of {', '.join(JOB_MODES)}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise StoreError(
            f"cannot create a job: priority must be an integer 0..{MAX_PRIORITY}, not {priority!r}")
    try:
        return _lane(lane)
    except StoreError as exc:
        raise StoreError(f"cannot create a job: {exc}") from None


def _positive_seconds(value: float, what: str) -> timedelta:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise StoreError(f"{what} must be a positive number of seconds, not {value!r}")
    return timedelta(seconds=float(value))


def _lease(lease_s: float) -> timedelta:
    return _positive_seconds(lease_s, "lease_s")


def _deadline(created: datetime, deadline_s: float | None) -> datetime | None:
    return None if deadline_s is None else created + _positive_seconds(deadline_s, "deadline_s")


def _job_row(
    job_id: str,
    question: str,
    mode: str,
    lane: str,
    settings: dict[str, Any] | None,
    created: datetime,
    *,
    priority: int = 0,
    client_id: str = "",
    client_request_id: str | None = None,
    batch_id: str | None = None,
    external_id: str | None = None,
    gold_answer: str | None = None,
    kind: str = "research",
    deadline_at: datetime | None = None,
) -> dict[str, Any]:
    """Every column of a new queued job (a bulk INSERT needs them all spelled out)."""
    return {
        "id": job_id, "kind": kind, "question": question, "mode": mode, "status": "queued",
        "lane": lane, "priority": priority, "client_id": client_id,
        "client_request_id": client_request_id, "batch_id": batch_id, "external_id": external_id,
        "gold_answer": gold_answer, "settings": dict(settings or {}), "created_at": created,
        "attempts": 0, "cancel_requested": False, "deadline_at": deadline_at,
    }


def _counts(s: Session, batch_id: str | None) -> dict[str, int]:
    query = select(Job.status, func.count()).group_by(Job.status)
    if batch_id is not None:
        query = query.where(Job.batch_id == batch_id)
    counts = {status: 0 for status in JOB_STATUSES}
    counts.update({str(st): int(n) for st, n in s.execute(query)})
    return counts


def _encode_page_token(created_at: datetime, job_id: str) -> str:
    raw = json.dumps([utc(created_at).isoformat(), job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        when, job_id = json.loads(raw)
        if not isinstance(when, str) or not isinstance(job_id, str):
            raise ValueError("not a (time, id) pair")
        return utc(datetime.fromisoformat(when)), job_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadPageToken(f"page_token {token[:40]!r} is not one this server handed out") from exc


def _export_chunk(s: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """Export rows of ``jobs``: their reports and latest trajectories read in two queries."""
    ids = [j.id for j in jobs]
    reports = {str(job_id): str(md) for job_id, md in s.execute(
        select(ReportRecord.job_id, ReportRecord.markdown).where(ReportRecord.job_id.in_(ids)))}
    latest: dict[str, TrajectoryRecord] = {}
    query = (
        select(TrajectoryRecord).where(TrajectoryRecord.job_id.in_(ids))
        .order_by(TrajectoryRecord.created_at, TrajectoryRecord.id)
        .options(selectinload(TrajectoryRecord.steps).selectinload(StepRecord.tool_calls))
    )
    for traj in s.scalars(query):
        latest[traj.job_id] = traj  # ascending: the last one seen is the newest
    return [_export_row(job, reports.get(job.id), latest.get(job.id)) for job in jobs]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat()


def _export_row(job: Job, report: str | None, traj: TrajectoryRecord | None) -> dict[str, Any]:
    ordered = [] if traj is None else sorted(traj.steps, key=lambda x: x.index)
    steps = [export_step(step_from(st)) for st in ordered]
    elapsed = None
    if job.started_at is not None and job.finished_at is not None:
        elapsed = (job.finished_at - job.started_at).total_seconds()
    return {
        "id": job.id, "external_id": job.external_id, "question": job.question,
        "gold_answer": job.gold_answer, "state": job.status, "mode": job.mode, "lane": job.lane,
        "priority": job.priority, "answer": job.answer, "error": job.error, "report": report,
        "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "elapsed_s": elapsed, "attempts": job.attempts,
        "model": None if traj is None else traj.model,
        "stop_reason": None if traj is None else traj.stop_reason,
        "total_tokens": None if traj is None else traj.total_tokens,
        "steps": steps,
    }


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


def _reward_info(row: RewardRecord) -> RewardInfo:
    return RewardInfo(trajectory_id=row.trajectory_id, stage=row.stage, reward=row.reward,
                      breakdown=dict(row.breakdown or {}), created_at=row.created_at)


def _reward_values(breakdown: dict[str, Any]) -> tuple[int, float]:
    """(stage, reward) of a breakdown dict, checked: a reward RAPO trains on must be a finite number
    of a known stage, or the store refuses it rather than poisoning a batch later."""
    stage, reward = breakdown.get("stage"), breakdown.get("reward")
    if isinstance(stage, bool) or stage not in REWARD_STAGES:
        raise StoreError(f"a reward breakdown needs stage in {REWARD_STAGES}, not {stage!r}")
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        raise StoreError(f"a reward breakdown needs a finite number as reward, not {reward!r}")
    return int(stage), float(reward)


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
        settings: dict[str, Any] | None = None,
        lane: str = "live",
        *,
        priority: int = 0,
        client_id: str = "",
        client_request_id: str | None = None,
        deadline_s: float | None = None,
        batch_id: str | None = None,
        external_id: str | None = None,
        gold_answer: str | None = None,
        kind: str = "research",
        job_id: str | None = None,
    ) -> str:
        """Store a queued job and return its id (a new UUID unless ``job_id`` is given).

        Idempotent Submit: with a ``client_request_id``, the same (``client_id``,
        ``client_request_id``) returns the id of the job stored first and stores nothing. Two
        racing submits are settled by the unique constraint (INSERT ... ON CONFLICT DO NOTHING),
        not by a read before the write.
        """
        lane = _check_job_input(question, mode, lane, priority)
        request_id = client_request_id or None  # proto strings default to "": no key given
        created = now()
        job_id = job_id or new_id()
        row = _job_row(
            job_id, question, mode, lane, settings, created,
            priority=priority, client_id=client_id, client_request_id=request_id, batch_id=batch_id,
            external_id=external_id, gold_answer=gold_answer, kind=kind,
            deadline_at=_deadline(created, deadline_s),
        )
        with self._failing_as(f"creating job {job_id}"), self.db.transaction() as s:
            if request_id is None:
                s.execute(insert(Job).values(**row))
            else:
                stored = s.scalar(
                    self._insert(Job).values(**row)
                    .on_conflict_do_nothing(index_elements=["client_id", "client_request_id"])
                    .returning(Job.id)
                )
                if stored is None:
                    existing = s.scalar(select(Job.id).where(
                        Job.client_id == client_id, Job.client_request_id == request_id))
                    if existing is None:  # pragma: no cover - the conflicting row cannot vanish
                        raise StoreError("the job of this client request id disappeared")
                    log.debug("job_submit_repeated", job_id=existing, client_request_id=request_id)
                    return str(existing)
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
                raise RecordNotFound(f"no job with id or id prefix {key!r}")
            if len(found) > 1:
                raise StoreError(f"job id prefix {key!r} is ambiguous: give more characters")
            return _job_info(found[0])

    def list_jobs(
        self,
        state: str | None = None,
        lane: str | None = None,
        page_size: int = 50,
        page_token: str | None = None,
        batch_id: str | None = None,
    ) -> tuple[list[JobInfo], str | None]:
        """A page of jobs, newest first, and the token of the next page (None on the last).

        Keyset paging on (created_at, id): the token names the last row handed out, so jobs
        created meanwhile never shift a page (they sort before it) and nothing repeats or is
        skipped, unlike OFFSET paging.
        """
        if not 1 <= page_size <= MAX_LIST_LIMIT:
            raise StoreError(f"page_size must be between 1 and {MAX_LIST_LIMIT}, not {page_size}")
        query = self._job_filter(select(Job), state, lane, batch_id)
        if page_token:
            after_t, after_id = _decode_page_token(page_token)
            query = query.where(or_(
                Job.created_at < after_t, and_(Job.created_at == after_t, Job.id < after_id)))
        query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(page_size + 1)
        with self._failing_as("listing jobs"), self.db.session() as s:
            jobs = [_job_info(j) for j in s.scalars(query)]
        if len(jobs) <= page_size:
            return jobs, None
        jobs = jobs[:page_size]
        return jobs, _encode_page_token(jobs[-1].created_at, jobs[-1].id)

    def recent_jobs(
        self,
        status: str | None = None,
        limit: int = 50,
        *,
        lane: str | None = None,
        batch_id: str | None = None,
        offset: int = 0,
    ) -> list[JobInfo]:
        """Newest first, by offset: the CLI's ``jobs list`` (``list_jobs`` pages by token)."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise StoreError(f"limit must be between 1 and {MAX_LIST_LIMIT}, not {limit}")
        if offset < 0:
            raise StoreError(f"offset must not be negative, not {offset}")
        query = (
            self._job_filter(select(Job), status, lane, batch_id)
            .order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
        )
        with self._failing_as("listing jobs"), self.db.session() as s:
            return [_job_info(j) for j in s.scalars(query)]

    @staticmethod
    def _job_filter(query: Any, state: str | None, lane: str | None, batch_id: str | None) -> Any:
        if state is not None:
            if state not in JOB_STATUSES:
                raise StoreError(f"unknown job status {state!r}: one of {', '.join(JOB_STATUSES)}")
            query = query.where(Job.status == state)
        if lane is not None:
            query = query.where(Job.lane == _lane(lane))
        if batch_id is not None:
            query = query.where(Job.batch_id == batch_id)
        return query

    def job_counts(self, batch_id: str | None = None) -> dict[str, int]:
        """Number of jobs per status (every status present, zero when none)."""
        with self._failing_as("counting jobs"), self.db.session() as s:
            return _counts(s, batch_id)

    def active_jobs(self, client_id: str) -> int:
        """Queued and running jobs of a client: what per-client quotas count."""
        query = select(func.count()).select_from(Job).where(
            Job.client_id == client_id, Job.status.in_(ACTIVE_STATUSES))
        with self._failing_as(f"counting active jobs of client {client_id!r}"), self.db.session() as s:
            return int(s.scalar(query) or 0)

    def job_progress(self, job_id: str) -> tuple[int, int]:
        """(steps, tool calls) recorded so far for the job, over all its trajectories."""
        steps = (
            select(func.count()).select_from(StepRecord)
            .join(TrajectoryRecord, StepRecord.trajectory_id == TrajectoryRecord.id)
            .where(TrajectoryRecord.job_id == job_id)
        )
        calls = (
            select(func.count()).select_from(ToolCallRecord)
            .join(StepRecord, ToolCallRecord.step_id == StepRecord.id)
            .join(TrajectoryRecord, StepRecord.trajectory_id == TrajectoryRecord.id)
            .where(TrajectoryRecord.job_id == job_id)
        )
        with self._failing_as(f"counting the progress of job {job_id}"), self.db.session() as s:
            return int(s.scalar(steps) or 0), int(s.scalar(calls) or 0)

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

    # -- claims, leases, the sweeper --------------------------------------------------------

    def claim_job(self, job_id: str, worker_id: str, lease_s: float) -> JobInfo | None:
        """Take the job for ``worker_id`` for ``lease_s`` seconds; None when it is not free.

        One compare-and-set UPDATE: free means queued, or running under an expired (or no) lease,
        and not asked to cancel. Two workers claiming at once: the row lock makes the second
        re-check the condition after the first commits, so exactly one row count is 1.
        """
        if not worker_id:
            raise StoreError(f"claiming job {job_id}: no worker id given")
        lease = _lease(lease_s)
        t = now()
        free = or_(
            Job.status == "queued",
            and_(Job.status == "running",
                 or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < t)),
        )
        with self._failing_as(f"claiming job {job_id}"), self.db.transaction() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, free, not_(Job.cancel_requested))
                .values(status="running", worker_id=worker_id, heartbeat_at=t,
                        started_at=func.coalesce(Job.started_at, t), lease_expires_at=t + lease,
                        attempts=Job.attempts + 1)
                .execution_options(synchronize_session=False)
            )
            job = s.get(Job, job_id)
            if job is None:
                raise RecordNotFound(f"cannot claim job {job_id}: no such job")
            if done.rowcount != 1:  # type: ignore[attr-defined]
                log.debug("job_not_claimed", job_id=job_id, status=job.status, holder=job.worker_id)
                return None
            return _job_info(job)

    def renew_lease(self, job_id: str, worker_id: str, lease_s: float) -> bool:
        """Extend the worker's lease; False when the claim is lost (the worker must stop)."""
        lease = _lease(lease_s)
        t = now()
        with self._failing_as(f"renewing the lease of job {job_id}"), self.db.transaction() as s:
            done = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                .values(lease_expires_at=t + lease, heartbeat_at=t)
                .execution_options(synchronize_session=False)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def request_cancel(self, job_id: str, reason: str = "cancelled on request") -> JobInfo:
        """Cancel: a queued job ends at once; a running one is flagged for its worker to stop
        (and can no longer be claimed); a finished one is left as it is."""
        t = now()
        with self._failing_as(f"cancelling job {job_id}"), self.db.transaction() as s:
            self._cancel_where(s, Job.id == job_id, reason, t)
            job = s.get(Job, job_id)
            if job is None:
                raise RecordNotFound(f"cannot cancel job {job_id}: no such job")
            return _job_info(job)

    @staticmethod
    def _cancel_where(s: Session, where: Any, reason: str, t: datetime) -> None:
        s.execute(
            update(Job).where(where, Job.status == "queued")
            .values(status="cancelled", error=reason, finished_at=t, cancel_requested=True,
                    lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        s.execute(
            update(Job).where(where, Job.status == "running").values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )

    def expired_leases(self, limit: int = 100) -> list[JobInfo]:
        """Running jobs whose lease ran out (their worker died or hangs): to be queued again."""
        query = (
            select(Job).where(Job.status == "running", Job.lease_expires_at < now())
            .order_by(Job.lease_expires_at).limit(limit)
        )
        with self._failing_as("finding expired leases"), self.db.session() as s:
            return [_job_info(j) for j in s.scalars(query)]

    def stale_queued(self, older_than_s: float, limit: int = 100) -> list[JobInfo]:
        """Queued jobs sent to the queue more than ``older_than_s`` ago (or never sent and created
        that long ago) and still not picked up: their message may be lost."""
        cutoff = now() - timedelta(seconds=older_than_s)
        query = (
            select(Job)
            .where(Job.status == "queued", or_(
                Job.enqueued_at < cutoff, and_(Job.enqueued_at.is_(None), Job.created_at < cutoff)))
            .order_by(func.coalesce(Job.enqueued_at, Job.created_at)).limit(limit)
        )
        with self._failing_as("finding stale queued jobs"), self.db.session() as s:
            return [_job_info(j) for j in s.scalars(query)]

    def mark_enqueued(self, job_ids: Sequence[str]) -> int:
        """Record that these jobs were just sent to the queue; returns how many exist."""
        ids = list(dict.fromkeys(job_ids))
        t = now()
        updated = 0
        with self._failing_as(f"marking {len(ids)} jobs enqueued"), self.db.transaction() as s:
            for start in range(0, len(ids), ID_CHUNK):
                done = s.execute(
                    update(Job).where(Job.id.in_(ids[start:start + ID_CHUNK])).values(enqueued_at=t)
                    .execution_options(synchronize_session=False)
                )
                updated += int(done.rowcount)  # type: ignore[attr-defined]
        return updated

    # -- job status -------------------------------------------------------------------------

    def _transition(
        self,
        job_id: str,
        to: str,
        allowed_from: Sequence[str],
        values: dict[str, Any],
        worker_id: str | None = None,
    ) -> None:
        """Move the job to ``to`` from one of ``allowed_from`` (never out of a terminal status);
        with ``worker_id``, only while that worker still holds the claim."""
        where = [Job.id == job_id, Job.status.in_(allowed_from)]
        if worker_id is not None:
            where.append(Job.worker_id == worker_id)
        with self._failing_as(f"marking job {job_id} {to}"), self.db.transaction() as s:
            done = s.execute(
                update(Job).where(*where).values(status=to, **values)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                return
            current = s.execute(select(Job.status, Job.worker_id).where(Job.id == job_id)).first()
        if current is None:
            raise RecordNotFound(f"no job {job_id}")
        status, holder = current
        if status == to and to in TERMINAL_STATUSES:
            return  # a repeated terminal mark (e.g. a re-delivered task) changes nothing
        if worker_id is not None and (holder != worker_id or status in TERMINAL_STATUSES):
            raise ClaimLost(f"job {job_id} is {status} (worker {holder}): worker {worker_id} "
                            f"no longer holds it and cannot mark it {to}")
        raise StoreError(f"job {job_id} is {status}: it cannot be marked {to}")

    def mark_running(self, job_id: str, worker_id: str | None = None) -> None:
        """queued -> running; running -> running re-claims the job (resumption by a new worker).
        The in-process path; workers of the plane use ``claim_job``."""
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

    def mark_succeeded(self, job_id: str, answer: str | None = None, *, worker_id: str | None = None) -> None:
        self._transition(
            job_id, "succeeded", ("running",),
            {"answer": answer, "finished_at": now(), "error": None, "lease_expires_at": None},
            worker_id,
        )

    def mark_failed(self, job_id: str, error: str, *, worker_id: str | None = None) -> None:
        self._transition(
            job_id, "failed", ("queued", "running"),
            {"error": error, "finished_at": now(), "lease_expires_at": None}, worker_id,
        )

    def mark_cancelled(
        self, job_id: str, reason: str | None = None, *, worker_id: str | None = None
    ) -> None:
        self._transition(
            job_id, "cancelled", ("queued", "running"),
            {"error": reason, "finished_at": now(), "lease_expires_at": None}, worker_id,
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

    # -- rewards ----------------------------------------------------------------------------

    def save_reward(self, trajectory_id: str, breakdown: dict[str, Any]) -> bool:
        """Store a trajectory's reward (``RewardBreakdown.to_dict()``: its ``stage`` and ``reward``
        fill the columns). Idempotent on (trajectory, stage): the first stored reward is kept and a
        repeat (a redelivered task) stores nothing. Returns True when this call stored it."""
        stage, reward = _reward_values(breakdown)
        action = f"saving the stage-{stage} reward of trajectory {trajectory_id}"
        with self._failing_as(action), self.db.transaction() as s:
            if s.get(TrajectoryRecord, trajectory_id) is None:
                raise RecordNotFound(f"{action}: no such trajectory")
            stmt = (
                self._insert(RewardRecord)
                .values(trajectory_id=trajectory_id, stage=stage, reward=reward,
                        breakdown=dict(breakdown), created_at=now())
                .on_conflict_do_nothing(index_elements=["trajectory_id", "stage"])
                .returning(RewardRecord.id)
            )
            stored = s.scalar(stmt) is not None
        if not stored:
            log.debug("reward_already_stored", trajectory_id=trajectory_id, stage=stage)
        return stored

    def trajectory_exists(self, trajectory_id: str) -> bool:
        query = select(TrajectoryRecord.id).where(TrajectoryRecord.id == trajectory_id)
        with self._failing_as(f"looking up trajectory {trajectory_id}"), self.db.session() as s:
            return s.scalar(query) is not None

    def get_rewards(self, trajectory_id: str) -> list[RewardInfo]:
        """The trajectory's stored rewards, by stage (empty when it has none)."""
        query = select(RewardRecord).where(RewardRecord.trajectory_id == trajectory_id).order_by(
            RewardRecord.stage)
        with self._failing_as(f"reading the rewards of trajectory {trajectory_id}"), self.db.session() as s:
            return [_reward_info(r) for r in s.scalars(query)]

    def get_reward(self, trajectory_id: str, stage: int) -> RewardInfo | None:
        """The trajectory's reward at ``stage``, or None when it was not scored at that stage."""
        query = select(RewardRecord).where(RewardRecord.trajectory_id == trajectory_id,
                                           RewardRecord.stage == stage)
        with self._failing_as(f"reading the rewards of trajectory {trajectory_id}"), self.db.session() as s:
            row = s.scalar(query)
            return None if row is None else _reward_info(row)

    # -- batches ----------------------------------------------------------------------------

    def create_batch(
        self,
        items: Sequence[BatchItemIn],
        *,
        mode: str = "report",
        lane: str = "live",
        priority: int = 0,
        name: str = "",
        client_id: str = "",
        client_request_id: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> BatchInfo:
        """Store a batch and one queued job per item, in one transaction and ONE bulk INSERT of
        the jobs (10,000 questions in a round trip or a few, not 10,000).

        Items keep their order: each job's ``created_at`` is the batch's plus its position in
        microseconds, so listing (newest first) and export (oldest first) follow the file.
        The same (``client_id``, ``client_request_id``) returns the batch stored first.
        """
        if not items:
            raise StoreError("cannot create a batch: it has no items")
        if len(items) > MAX_BATCH_ITEMS:
            raise StoreError(f"cannot create a batch of {len(items)} items: at most {MAX_BATCH_ITEMS}")
        lane = _check_job_input("batch", mode, lane, priority)
        for i, item in enumerate(items):
            if not isinstance(item, BatchItemIn):
                raise StoreError(f"batch item {i} is a {type(item).__name__}, not a BatchItemIn")
            if not item.question or not item.question.strip():
                raise StoreError(f"batch item {i} ({item.external_id or 'no id'}): the question is empty")
        request_id = client_request_id or None
        batch_id = new_id()
        created = now()
        batch_row = {
            "id": batch_id, "name": name, "mode": mode, "lane": lane, "priority": priority,
            "client_id": client_id, "client_request_id": request_id, "total": len(items),
            "created_at": created,
        }
        snapshot = dict(settings or {})
        rows = [
            _job_row(new_id(), item.question, mode, lane, snapshot, created + timedelta(microseconds=i),
                     priority=priority, client_id=client_id, batch_id=batch_id,
                     external_id=item.external_id, gold_answer=item.gold_answer)
            for i, item in enumerate(items)
        ]
        with self._failing_as(f"creating a batch of {len(items)} jobs"), self.db.transaction() as s:
            if request_id is None:
                s.execute(insert(BatchRecord).values(**batch_row))
            else:
                stored = s.scalar(
                    self._insert(BatchRecord).values(**batch_row)
                    .on_conflict_do_nothing(index_elements=["client_id", "client_request_id"])
                    .returning(BatchRecord.id)
                )
                if stored is None:
                    batch_id = str(s.scalar(select(BatchRecord.id).where(
                        BatchRecord.client_id == client_id, BatchRecord.client_request_id == request_id)))
                    rows = []
            if rows:
                s.execute(insert(Job), rows)
        log.debug("batch_created", batch_id=batch_id, jobs=len(rows), lane=lane)
        return self.get_batch(batch_id)

    def get_batch(self, batch_id: str) -> BatchInfo:
        """The batch with its jobs counted by status."""
        with self._failing_as(f"reading batch {batch_id}"), self.db.session() as s:
            row = s.get(BatchRecord, batch_id)
            if row is None:
                raise RecordNotFound(f"no batch {batch_id}")
            counts = _counts(s, batch_id)
            return BatchInfo(
                id=row.id, name=row.name, mode=row.mode, lane=row.lane, priority=row.priority,
                client_id=row.client_id, client_request_id=row.client_request_id, total=row.total,
                created_at=row.created_at, counts=counts,
                done=sum(counts[st] for st in TERMINAL_STATUSES),
            )

    def cancel_batch(self, batch_id: str, reason: str = "batch cancelled") -> BatchInfo:
        """Every queued job of the batch cancelled (one UPDATE), every running one flagged."""
        with self._failing_as(f"cancelling batch {batch_id}"), self.db.transaction() as s:
            if s.get(BatchRecord, batch_id) is None:
                raise RecordNotFound(f"cannot cancel batch {batch_id}: no such batch")
            self._cancel_where(s, Job.batch_id == batch_id, reason, now())
        return self.get_batch(batch_id)

    def export_rows(self, batch_id: str, chunk: int = EXPORT_CHUNK) -> Iterator[dict[str, Any]]:
        """Every job of the batch as a plain dict, in submission order, for ``fathom batch export``:
        answers, reports, timings and the trace (steps with their tool calls).

        Read ``chunk`` jobs at a time, each chunk in its own short read (keyset on created_at,
        id), so a 10,000-job export neither holds one long transaction nor loads everything.
        """
        if chunk < 1:
            raise StoreError(f"export chunk must be positive, not {chunk}")
        after: tuple[datetime, str] | None = None
        while True:
            query = select(Job).where(Job.batch_id == batch_id)
            if after is not None:
                query = query.where(or_(Job.created_at > after[0],
                                        and_(Job.created_at == after[0], Job.id > after[1])))
            query = query.order_by(Job.created_at, Job.id).limit(chunk)
            with self._failing_as(f"exporting batch {batch_id}"), self.db.session() as s:
                jobs = list(s.scalars(query))
                if not jobs:
                    return
                rows = _export_chunk(s, jobs)
                after = (jobs[-1].created_at, jobs[-1].id)
            yield from rows

    # -- events -----------------------------------------------------------------------------

    def append_event(self, stream: str, kind: str, payload: dict[str, Any] | None = None) -> int:
        """Append an event to ``stream`` and return its index (0, 1, 2... per stream).

        The index is the next after the stream's last; two writers racing for the same index
        are settled by the unique (stream, index): the loser retries with the next one.
        """
        if not stream or len(stream) > 128:
            raise StoreError(f"event stream must be 1 to 128 characters, not {stream!r}")
        if not kind or len(kind) > 64:
            raise StoreError(f"event kind must be 1 to 64 characters, not {kind!r}")
        body = dict(payload or {})
        next_index = select(func.coalesce(func.max(JobEventRecord.index) + 1, 0)).where(
            JobEventRecord.stream == stream)
        for _ in range(EVENT_RETRIES):
            with self._failing_as(f"appending a {kind} event to {stream}"), self.db.transaction() as s:
                index = int(s.scalar(next_index) or 0)
                stored = s.scalar(
                    self._insert(JobEventRecord)
                    .values(stream=stream, index=index, kind=kind, payload=body, created_at=now())
                    .on_conflict_do_nothing(index_elements=["stream", "index"])
                    .returning(JobEventRecord.index)
                )
            if stored is not None:
                return int(stored)
        raise StoreError(f"appending an event to {stream}: {EVENT_RETRIES} writers in a row took the index")

    def events_since(self, stream: str, index: int = 0, limit: int = 500) -> list[EventInfo]:
        """Events of ``stream`` with index >= ``index``, in order (at most ``limit``). A watcher
        that has seen index n asks for n + 1."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise StoreError(f"limit must be between 1 and {MAX_LIST_LIMIT}, not {limit}")
        query = (
            select(JobEventRecord)
            .where(JobEventRecord.stream == stream, JobEventRecord.index >= index)
            .order_by(JobEventRecord.index).limit(limit)
        )
        with self._failing_as(f"reading events of {stream}"), self.db.session() as s:
            return [
                EventInfo(stream=e.stream, index=e.index, kind=e.kind, payload=dict(e.payload or {}),
                          created_at=e.created_at)
                for e in s.scalars(query)
            ]
