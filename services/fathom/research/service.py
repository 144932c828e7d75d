"""``ResearchService``: the research job of local mode as a transport-free service object.

The CLI calls it directly (one process, no Redis). It runs each job through the research worker's
own code (``fathom.research.worker.execute_job``): the same claim, step persistence, events and
resumption as a worker of the plane, with the agent loop and the synthesizer in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Trajectory
from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.research.bus import EventBus
from fathom.research.gateway import check_mode, check_question
from fathom.research.worker import (
    EventSink,
    LocalSynthesis,
    LocalTrajectoryRunner,
    WorkerContext,
    execute_job,
    tool_target,
)
from fathom.store.repository import JobStore
from fathom.synthesis.report import Report
from fathom.synthesis.synthesizer import Synthesizer

Mode = Literal["search", "report"]
LOCAL_LEASE_S = 30.0

log = get_logger(__name__)
_tool_target = tool_target  # the old private name, kept for importers


@dataclass
class ResearchResult:
    job_id: str
    answer: str | None
    trajectory: Trajectory
    report: Report | None = None
    report_paths: tuple[Path, Path] | None = None
    timings: dict[str, float] = field(default_factory=dict)


class ResearchService:
    def __init__(
        self,
        *,
        store: JobStore,
        agent: AgentLoop,
        synthesizer: Synthesizer | None,
        reports_dir: Path,
        settings_snapshot: dict[str, Any] | None = None,
        bus: EventBus | None = None,
        lease_s: float = LOCAL_LEASE_S,
    ) -> None:
        self.store = store
        self.agent = agent
        self.synthesizer = synthesizer
        self.reports_dir = reports_dir
        self._settings_snapshot = settings_snapshot or {}
        self.bus = bus or EventBus(store, None)
        self.worker_id = f"local-{socket.gethostname()}-{os.getpid()}"
        self.lease_s = lease_s

    async def submit(self, question: str, mode: Mode = "report", lane: str = "live") -> str:
        """Store a queued job (``InvalidArgument`` for an empty or oversized question or an
        unknown mode; nothing is stored then)."""
        question = check_question(question)
        check_mode(mode)
        return await asyncio.to_thread(
            self.store.create_job, question, mode, self._settings_snapshot, lane
        )

    def context(self) -> WorkerContext:
        synthesis = (LocalSynthesis(self.store, self.synthesizer, self.reports_dir)
                     if self.synthesizer is not None else None)
        return WorkerContext(store=self.store, bus=self.bus, runner=LocalTrajectoryRunner(self.agent),
                             synthesis=synthesis, worker_id=self.worker_id, lease_s=self.lease_s)

    async def run(self, job_id: str, on_event: EventSink | None = None) -> ResearchResult:
        """Run (or resume) the job here; ``on_event`` sees every progress event as it is stored."""
        job = await asyncio.to_thread(self.store.get_job, job_id)
        if job.is_terminal:
            raise StoreError(f"job {job.id} already ended ({job.status}); submit it again to rerun")
        try:
            outcome = await execute_job(job.id, self.context(), on_event)
        except asyncio.CancelledError:
            # Local mode has nobody to resume the job later: an interrupted run is cancelled.
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.mark_cancelled, job.id, "interrupted")
            raise
        if not outcome.claimed:
            raise StoreError(f"job {job.id} is {outcome.state} and claimed by another worker; not run")
        traj = outcome.trajectory
        if traj is None:  # stopped before the trajectory finished (cancelled)
            traj = await asyncio.to_thread(self.store.load_trajectory, job.id) or Trajectory(job.question, "")
        return ResearchResult(job_id=job.id, answer=traj.answer, trajectory=traj, report=outcome.report,
                              report_paths=outcome.report_paths, timings=outcome.timings)
