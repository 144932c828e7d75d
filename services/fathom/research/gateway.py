"""``JobGateway``: the research jobs service object behind the gRPC ``ResearchService``.

It validates (every check before anything is persisted, typed errors from ``fathom.core.errors``),
persists jobs and batches, enqueues them through an ``Enqueuer`` and reads progress from the
``EventBus``. It runs nothing itself: research workers (or, in tests and local mode, the
``LocalEnqueuer``) do. Store calls run in worker threads so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from fathom.core.errors import InvalidArgument, NotFound, QuotaExceeded
from fathom.core.logging import get_logger
from fathom.queue.names import LANES
from fathom.research.bus import BATCH_TERMINAL_KINDS, JOB_TERMINAL_KINDS, EventBus, batch_stream, job_stream
from fathom.store.records import BadPageToken, BatchInfo, BatchItemIn, EventInfo, JobInfo, RecordNotFound

if TYPE_CHECKING:
    from fathom.core.config import Settings
    from fathom.research.worker import WorkerContext
    from fathom.store.repository import JobStore

log = get_logger(__name__)

MODES = ("search", "report")
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
MAX_PRIORITY = 9
MAX_PAGE_SIZE = 1000
MAX_REQUEST_ID_CHARS = 200
ENQUEUE_CHUNK = 1000
# A job that ended this long ago without its terminal event (a worker that died between the two)
# ends its watchers anyway.
WATCH_END_GRACE_S = 2.0
T = TypeVar("T")


class Enqueuer(Protocol):
    """Hands job ids to research workers (Celery in the plane; ``LocalEnqueuer`` in process)."""

    def enqueue_research(self, job_ids: Iterable[str], lane: str) -> int: ...


# -- validation (shared with the local ResearchService) ------------------------------------------


def check_question(question: object, *, max_chars: int | None = None, field: str = "question") -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidArgument(f"{field}: the question is empty", reason="QUESTION_EMPTY", field=field)
    text = question.strip()
    if not any(ch.isalnum() for ch in text):  # control characters or punctuation alone
        raise InvalidArgument(f"{field}: the question has no letters or digits", reason="QUESTION_NO_TEXT",
                              field=field)
    if max_chars is not None and len(text) > max_chars:
        raise InvalidArgument(
            f"{field}: the question has {len(text)} characters, more than the {max_chars} allowed",
            reason="QUESTION_TOO_LONG", field=field, limit=max_chars,
        )
    return text


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise InvalidArgument(f"unknown mode {mode!r}: expected 'search' or 'report'",
                              reason="MODE_UNKNOWN", field="mode")
    return str(mode)


def check_lane(lane: object) -> str:
    if lane not in LANES:
        raise InvalidArgument(f"unknown lane {lane!r}: expected one of {', '.join(LANES)}",
                              reason="LANE_UNKNOWN", field="lane")
    return str(lane)


def check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise InvalidArgument(f"priority must be an integer from 0 to {MAX_PRIORITY}, not {priority!r}",
                              reason="PRIORITY_OUT_OF_RANGE", field="priority")
    return priority


def check_deadline(deadline_s: float | None) -> float | None:
    """None or 0: the default deadline; negative: refused."""
    if deadline_s is None or deadline_s == 0:
        return None
    if not deadline_s > 0:  # also refuses NaN
        raise InvalidArgument(f"deadline_s must not be negative, not {deadline_s!r}",
                              reason="DEADLINE_NEGATIVE", field="deadline_s")
    return float(deadline_s)


def check_id(value: object, field: str = "job_id") -> str:
    try:
        return str(uuid.UUID(str(value).strip()))
    except (ValueError, AttributeError):
        raise InvalidArgument(f"{field} {value!r} is not a valid id (a UUID)", reason="ID_MALFORMED",
                              field=field) from None


def check_request_id(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(f"client_request_id is longer than {MAX_REQUEST_ID_CHARS} characters",
                              reason="REQUEST_ID_TOO_LONG", field="client_request_id")
    return value


# -- the gateway ----------------------------------------------------------------------------------


class JobGateway:
    def __init__(self, store: JobStore, bus: EventBus, enqueuer: Enqueuer, settings: Settings) -> None:
        self.store = store
        self.bus = bus
        self.enqueuer = enqueuer
        self.settings = settings
        self._cancel_bus: Any = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call in a thread, with the store's not-found / bad-token errors typed."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except RecordNotFound as exc:
            raise NotFound(str(exc)) from exc
        except BadPageToken as exc:
            raise InvalidArgument(str(exc), reason="PAGE_TOKEN_INVALID", field="page_token") from exc

    def _snapshot(self) -> dict[str, Any]:
        from fathom.research.runtime import settings_snapshot

        return settings_snapshot(self.settings)

    async def _check_quota(self, client_id: str) -> None:
        quota = self.settings.plane.client_running_quota
        active = await self._call(self.store.active_jobs, client_id)
        if active >= quota:
            raise QuotaExceeded(f"client {client_id!r} has {active} queued or running jobs; its quota "
                                f"is {quota}", reason="CLIENT_QUOTA", client_id=client_id, limit=quota)

    async def _enqueue(self, job_ids: list[str], lane: str) -> None:
        for start in range(0, len(job_ids), ENQUEUE_CHUNK):
            chunk = job_ids[start:start + ENQUEUE_CHUNK]
            await asyncio.to_thread(self.enqueuer.enqueue_research, chunk, lane)
        await self._call(self.store.mark_enqueued, job_ids)

    # -- jobs -----------------------------------------------------------------------------------

    async def submit(self, question: str, mode: str = "report", lane: str = "live", priority: int = 0,
                     deadline_s: float | None = None, client_id: str = "",
                     client_request_id: str | None = None) -> JobInfo:
        text = check_question(question, max_chars=self.settings.plane.max_question_chars)
        mode, lane, priority = check_mode(mode), check_lane(lane), check_priority(priority)
        deadline = check_deadline(deadline_s) or self.settings.plane.job_deadline_s
        request_id = check_request_id(client_request_id)
        await self._check_quota(client_id)
        job_id = await self._call(self.store.create_job, text, mode, self._snapshot(), lane,
                                  priority=priority, client_id=client_id, client_request_id=request_id,
                                  deadline_s=deadline)
        job = await self._call(self.store.get_job, job_id)
        if job.enqueued_at is None and job.status == "queued":
            await self._enqueue([job.id], lane)
            job = await self._call(self.store.get_job, job_id)
        log.info("job_submitted", job_id=job.id, mode=mode, lane=lane, client_id=client_id)
        return job

    async def get(self, job_id: str) -> JobInfo:
        return await self._call(self.store.get_job, check_id(job_id))

    async def list(self, state: str | None = None, lane: str | None = None, page_size: int = 50,
                   page_token: str | None = None,
                   batch_id: str | None = None) -> tuple[builtins.list[JobInfo], str | None]:
        if state is not None and state not in STATES:
            raise InvalidArgument(f"unknown state {state!r}", reason="STATE_UNKNOWN", field="state")
        if lane is not None:
            check_lane(lane)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be from 0 to {MAX_PAGE_SIZE}", reason="PAGE_SIZE",
                                  field="page_size")
        batch = check_id(batch_id, "batch_id") if batch_id else None
        return await self._call(self.store.list_jobs, state, lane, page_size or 50, page_token or None, batch)

    async def cancel(self, job_id: str) -> JobInfo:
        """Queued: cancelled at once. Running: flagged, and the worker hears it within a second."""
        before = await self.get(job_id)
        if before.is_terminal:
            return before
        after = await self._call(self.store.request_cancel, before.id)
        await asyncio.to_thread(self._broadcast_cancel, [after.id] if after.status == "running" else [])
        if after.status == "cancelled":
            await self._publish_cancelled(after)
        return after

    async def _publish_cancelled(self, job: JobInfo) -> None:
        await self.bus.apublish(job_stream(job.id), "job_cancelled",
                                {"job_id": job.id, "elapsed_s": 0.0, "message": "cancelled while queued",
                                 "state": "cancelled"})

    def _broadcast_cancel(self, job_ids: Sequence[str]) -> None:
        """Tell running workers through Redis (``fathom:cancel``); without Redis they poll the flag."""
        if not job_ids or self.bus.redis_url is None:
            return
        import redis

        try:
            if self._cancel_bus is None:
                from fathom.queue.cancel import CancelBus

                self._cancel_bus = CancelBus(self.bus.redis_url)
            for job_id in job_ids:
                self._cancel_bus.request(job_id)
        except (redis.RedisError, OSError) as exc:
            # The store flag stays set: the worker sees it on its next lease renewal.
            log.warning("cancel_broadcast_failed", jobs=len(job_ids), error=str(exc))

    async def watch(self, job_id: str, from_event: int = 0) -> AsyncIterator[EventInfo]:
        """The job's events from ``from_event`` on (a reconnecting client passes its next index)."""
        job = await self.get(job_id)
        if from_event < 0:
            raise InvalidArgument("from_event must not be negative", reason="FROM_EVENT_NEGATIVE",
                                  field="from_event")

        async def ended() -> bool:
            current = await self._call(self.store.get_job, job.id)
            if not current.is_terminal:
                return False
            finished = current.finished_at
            if finished is None:
                return True
            if finished.tzinfo is None:
                finished = finished.replace(tzinfo=UTC)
            return (datetime.now(UTC) - finished).total_seconds() > WATCH_END_GRACE_S

        async for event in self.bus.watch(job_stream(job.id), from_event, terminal_kinds=JOB_TERMINAL_KINDS,
                                          is_done=ended):
            yield event

    # -- batches --------------------------------------------------------------------------------

    async def submit_batch(self, items: Sequence[BatchItemIn | str | Mapping[str, Any]], mode: str = "search",
                           lane: str = "train", priority: int = 0, name: str = "", client_id: str = "",
                           client_request_id: str | None = None) -> BatchInfo:
        limit = self.settings.plane.max_batch_items
        if len(items) > limit:
            raise QuotaExceeded(f"a batch holds at most {limit} items, not {len(items)}",
                                reason="BATCH_TOO_LARGE", limit=limit)
        if not items:
            raise InvalidArgument("the batch has no items", reason="BATCH_EMPTY", field="items")
        mode, lane, priority = check_mode(mode), check_lane(lane), check_priority(priority)
        request_id = check_request_id(client_request_id)
        max_chars = self.settings.plane.max_question_chars
        clean = [_batch_item(item, i, max_chars) for i, item in enumerate(items)]
        # Batches are bounded by max_batch_items, not by the client's running quota: they are bulk
        # work that waits its turn in its lane (a 10,000-question batch is meant to queue).
        batch = await self._call(self.store.create_batch, clean, mode=mode, lane=lane, priority=priority,
                                 name=name, client_id=client_id, client_request_id=request_id,
                                 settings=self._snapshot())
        waiting = await self._unenqueued(batch.id)
        if waiting:
            await self._enqueue(waiting, lane)
        log.info("batch_submitted", batch_id=batch.id, items=len(clean), enqueued=len(waiting), lane=lane)
        return await self._call(self.store.get_batch, batch.id)

    async def _unenqueued(self, batch_id: str) -> builtins.list[str]:
        """Queued jobs of the batch not handed to a worker yet (all of them on a first submit)."""
        ids: builtins.list[str] = []
        token: str | None = None
        while True:
            page, token = await self._call(self.store.list_jobs, "queued", None, MAX_PAGE_SIZE, token,
                                           batch_id)
            ids.extend(j.id for j in page if j.enqueued_at is None)
            if not token:
                return ids

    async def get_batch(self, batch_id: str) -> BatchInfo:
        return await self._call(self.store.get_batch, check_id(batch_id, "batch_id"))

    async def cancel_batch(self, batch_id: str) -> BatchInfo:
        batch = await self.get_batch(batch_id)
        running: builtins.list[str] = []
        token: str | None = None
        while True:
            page, token = await self._call(self.store.list_jobs, "running", None, MAX_PAGE_SIZE, token,
                                           batch.id)
            running.extend(j.id for j in page)
            if not token:
                break
        await self._call(self.store.cancel_batch, batch.id)
        await asyncio.to_thread(self._broadcast_cancel, running)
        after = await self._call(self.store.get_batch, batch.id)
        await self.bus.apublish(batch_stream(batch.id), "batch_cancelled",
                                {"batch_id": batch.id, "counts": dict(after.counts)})
        if after.is_finished:
            await self.bus.apublish(batch_stream(batch.id), "batch_done",
                                    {"batch_id": batch.id, "counts": dict(after.counts)})
        return after

    async def watch_batch(self, batch_id: str, from_event: int = 0) -> AsyncIterator[EventInfo]:
        batch = await self.get_batch(batch_id)
        if from_event < 0:
            raise InvalidArgument("from_event must not be negative", reason="FROM_EVENT_NEGATIVE",
                                  field="from_event")

        seen_finished = 0

        async def finished() -> bool:
            # Finished at two checks in a row (a poll apart): the last job's events, published just
            # after its mark, have landed by then.
            nonlocal seen_finished
            done = (await self._call(self.store.get_batch, batch.id)).is_finished
            seen_finished = seen_finished + 1 if done else 0
            return seen_finished >= 2

        async for event in self.bus.watch(batch_stream(batch.id), from_event,
                                          terminal_kinds=BATCH_TERMINAL_KINDS, is_done=finished):
            yield event


def _batch_item(item: BatchItemIn | str | Mapping[str, Any], index: int, max_chars: int) -> BatchItemIn:
    field = f"items[{index}].question"
    if isinstance(item, str):
        return BatchItemIn(check_question(item, max_chars=max_chars, field=field))
    if isinstance(item, BatchItemIn):
        question, external_id, gold = item.question, item.external_id, item.gold_answer
    elif isinstance(item, Mapping):
        question = str(item.get("question") or "")
        external_id = item.get("external_id", item.get("id"))
        gold = item.get("gold_answer", item.get("answer"))
    else:
        raise InvalidArgument(f"items[{index}] is not a question", reason="ITEM_MALFORMED",
                              field=f"items[{index}]", index=index)
    try:
        text = check_question(question, max_chars=max_chars, field=field)
    except InvalidArgument as exc:
        exc.metadata["index"] = str(index)
        raise
    return BatchItemIn(text, str(external_id) if external_id not in (None, "") else None,
                       str(gold) if gold not in (None, "") else None)


# -- local mode: jobs run in this process -----------------------------------------------------------


class LocalEnqueuer:
    """Runs enqueued jobs as asyncio tasks on ``loop`` (tests, one-process mode). Thread-safe:
    the gateway calls it from a worker thread."""

    def __init__(self, ctx: WorkerContext, loop: asyncio.AbstractEventLoop | None = None,
                 *, concurrency: int = 8) -> None:
        self.ctx = ctx
        self.loop = loop or asyncio.get_running_loop()
        self._gate = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[str]] = set()
        self.enqueued: list[str] = []

    def enqueue_research(self, job_ids: Iterable[str], lane: str) -> int:
        ids = list(job_ids)
        self.enqueued.extend(ids)
        self.loop.call_soon_threadsafe(self._start, ids)
        return len(ids)

    def _start(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            task = self.loop.create_task(self._run(job_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, job_id: str) -> str:
        from fathom.research.worker import run_job

        async with self._gate:
            try:
                return await run_job(job_id, self.ctx)
            except Exception:
                log.exception("local_job_failed", job_id=job_id)
                return "failed"

    async def drain(self) -> None:
        """Wait for every job started so far (and any they start)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
