"""``Sweeper``: no job is lost when a worker dies or the broker forgets its messages.

Every ``plane.sweep_interval_s`` it queues again (1) running jobs whose lease expired (their
worker died; the next claim resumes them from their recorded steps) and (2) queued jobs whose
message was not picked up for ``plane.requeue_after_s`` (a Redis restart without persistence).
Duplicate messages are harmless, claims are compare-and-set, so several gateways may sweep at once;
a job re-queued recently is left alone so the queue does not fill with copies of it.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.research.bus import job_stream

if TYPE_CHECKING:
    from fathom.core.config import Settings
    from fathom.research.bus import EventBus
    from fathom.research.gateway import Enqueuer
    from fathom.store.records import JobInfo
    from fathom.store.repository import JobStore

log = get_logger(__name__)

SWEEP_LIMIT = 1000


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class Sweeper:
    def __init__(self, store: JobStore, enqueuer: Enqueuer, settings: Settings, *,
                 bus: EventBus | None = None, limit: int = SWEEP_LIMIT) -> None:
        self.store = store
        self.enqueuer = enqueuer
        self.settings = settings
        self.bus = bus
        self.limit = limit

    def _recently_requeued(self, job: JobInfo) -> bool:
        """Enqueued again after its lease expired, and not long ago: its message is still waiting."""
        enqueued, expired = _aware(job.enqueued_at), _aware(job.lease_expires_at)
        if enqueued is None or expired is None or enqueued < expired:
            return False
        age = (datetime.now(UTC) - enqueued).total_seconds()
        return age < self.settings.plane.requeue_after_s

    async def sweep_once(self) -> dict[str, int]:
        expired = await asyncio.to_thread(self.store.expired_leases, self.limit)
        expired = [j for j in expired if not self._recently_requeued(j)]
        # A dead worker's job that was asked to cancel can never be claimed again: end it here.
        flagged = [j for j in expired if j.cancel_requested]
        expired = [j for j in expired if not j.cancel_requested]
        for job in flagged:
            await self._cancel_dead(job)
        stale = await asyncio.to_thread(self.store.stale_queued, self.settings.plane.requeue_after_s,
                                        self.limit)
        await self._requeue(expired + stale)
        if self.bus is not None:
            for job in expired:
                await self.bus.apublish(job_stream(job.id), "job_requeued", {
                    "job_id": job.id, "elapsed_s": 0.0, "state": job.status,
                    "message": f"the lease of worker {job.worker_id} expired; queued again",
                })
        counts = {"expired_leases": len(expired), "stale_queued": len(stale), "cancelled": len(flagged)}
        if expired or stale:
            log.info("sweeper_requeued", **counts)
        return counts

    async def _cancel_dead(self, job: JobInfo) -> None:
        try:
            await asyncio.to_thread(self.store.mark_cancelled, job.id, "cancelled on request")
        except StoreError as exc:  # another gateway's sweeper, or a worker, got there first
            log.debug("sweeper_cancel_skipped", job_id=job.id, error=str(exc))
            return
        if self.bus is not None:
            await self.bus.apublish(job_stream(job.id), "job_cancelled", {
                "job_id": job.id, "elapsed_s": 0.0, "state": "cancelled",
                "message": "cancelled on request (its worker had stopped)"})

    async def _requeue(self, jobs: list[JobInfo]) -> None:
        by_lane: dict[str, list[str]] = defaultdict(list)
        for job in jobs:
            by_lane[job.lane].append(job.id)
        for lane, ids in by_lane.items():
            await asyncio.to_thread(self.enqueuer.enqueue_research, ids, lane)
        ids = [j.id for j in jobs]
        if ids:
            await asyncio.to_thread(self.store.mark_enqueued, ids)

    async def run_forever(self) -> None:
        """Sweep until cancelled; a failed sweep (store or broker down) is logged and retried."""
        while True:
            try:
                await self.sweep_once()
            except (StoreError, OSError, ConnectionError) as exc:
                log.warning("sweep_failed", error=str(exc))
            except Exception:
                log.exception("sweep_failed")
            await asyncio.sleep(self.settings.plane.sweep_interval_s)
