"""``ResearchService``: the research job as a transport-free service object.

The CLI calls it directly (local mode); a gRPC gateway or a Celery task body wraps the same object
later. Every step is persisted as it completes, so a watcher sees progress and a dead worker's job
can resume from its last step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Step, Trajectory
from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.research.events import ProgressEvent
from fathom.store.repository import JobStore
from fathom.synthesis.report import Report
from fathom.synthesis.synthesizer import Synthesizer
from fathom.synthesis.writer import write_report

Mode = Literal["search", "report"]
EventSink = Callable[[ProgressEvent], Awaitable[None] | None]

log = get_logger(__name__)


@dataclass
class ResearchResult:
    job_id: str
    answer: str | None
    trajectory: Trajectory
    report: Report | None = None
    report_paths: tuple[Path, Path] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _tool_target(name: str | None, arguments: dict[str, Any]) -> str:
    if name == "search_urls":
        return str(arguments.get("query", ""))
    if name == "query_url":
        return str(arguments.get("url", ""))
    return ""


class ResearchService:
    def __init__(
        self,
        *,
        store: JobStore,
        agent: AgentLoop,
        synthesizer: Synthesizer | None,
        reports_dir: Path,
        settings_snapshot: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.agent = agent
        self.synthesizer = synthesizer
        self.reports_dir = reports_dir
        self._settings_snapshot = settings_snapshot or {}

    async def submit(self, question: str, mode: Mode = "report", lane: str = "interactive") -> str:
        question = question.strip()
        if not question:
            raise ValueError("the question is empty")
        if mode not in ("search", "report"):
            raise ValueError(f"unknown mode {mode!r}: expected 'search' or 'report'")
        return await asyncio.to_thread(
            self.store.create_job, question, mode, self._settings_snapshot, lane
        )

    async def run(self, job_id: str, on_event: EventSink | None = None) -> ResearchResult:
        job = await asyncio.to_thread(self.store.get_job, job_id)
        job_id = job.id
        question = job.question
        mode: Mode = "search" if job.mode == "search" else "report"
        t0 = time.perf_counter()

        async def emit(event: ProgressEvent) -> None:
            if on_event is not None:
                maybe = on_event(event)
                if asyncio.iscoroutine(maybe):
                    await maybe

        if job.status in ("succeeded", "failed", "cancelled"):
            raise StoreError(f"job {job_id} already ended ({job.status}); submit it again to rerun")
        # A job left running by a dead worker resumes from its last persisted step.
        resume: Trajectory | None = None
        trajectory_id: str | None = None
        if job.status == "running":
            ids = await asyncio.to_thread(self.store.trajectory_ids, job_id)
            if ids:
                trajectory_id = ids[-1]
                resume = await asyncio.to_thread(self.store.load_trajectory_by_id, trajectory_id)
                log.info("research_job_resumed", job_id=job_id, steps=len(resume.steps))
        await asyncio.to_thread(self.store.mark_running, job_id)
        await emit(ProgressEvent("job_started", job_id, 0.0, message=question,
                                 data={"mode": mode, "resumed_steps": len(resume.steps) if resume else 0}))
        store_s = 0.0

        async def ensure_trajectory(traj: Trajectory) -> str:
            nonlocal trajectory_id
            if trajectory_id is None:
                trajectory_id = await asyncio.to_thread(
                    self.store.start_trajectory, job_id, traj.question, traj.prompt, traj.model
                )
            return trajectory_id

        async def on_step(step: Step, traj: Trajectory) -> None:
            nonlocal store_s
            ts = time.perf_counter()
            tid = await ensure_trajectory(traj)
            await asyncio.to_thread(self.store.record_step, tid, step)
            for call in step.tool_calls:
                snap = call.meta.get("snapshot")
                if isinstance(snap, dict):
                    await asyncio.to_thread(self.store.record_snapshot_dict, snap)
            store_s += time.perf_counter() - ts
            # Persisting is our overhead too: fold it into the step's overhead figure.
            step.overhead_s += time.perf_counter() - ts
            await emit(
                ProgressEvent(
                    "step",
                    job_id,
                    time.perf_counter() - t0,
                    turn=step.index + 1,
                    total_tokens=traj.total_tokens,
                    tool_calls=[
                        {"name": c.name or "?", "target": _tool_target(c.name, c.arguments),
                         "ok": c.ok, "error": c.error}
                        for c in step.tool_calls
                    ],
                    data={"answer": step.answer, "model_s": step.model_s, "tools_s": step.tools_s,
                          "overhead_s": step.overhead_s},
                )
            )

        try:
            traj = await self.agent.run(question, mode=mode, on_step=on_step, resume=resume)
            tid = await ensure_trajectory(traj)
            await asyncio.to_thread(self.store.finish_trajectory, tid, traj)
            t_agent = time.perf_counter() - t0
            result = ResearchResult(job_id=job_id, answer=traj.answer, trajectory=traj)
            result.timings["agent_s"] = t_agent
            result.timings["store_s"] = store_s
            if traj.stop_reason == "error":
                # The model failed mid-run: the steps so far are kept; no report is written from them.
                message = str(traj.meta.get("error") or "the policy model failed")
                await asyncio.to_thread(self.store.mark_failed, job_id, message)
                await emit(ProgressEvent("job_failed", job_id, time.perf_counter() - t0, message=message))
                return result
            if mode == "report" and self.synthesizer is not None:
                await emit(ProgressEvent("synthesis_started", job_id, time.perf_counter() - t0))
                ts = time.perf_counter()
                report = await self.synthesizer.synthesize(question, traj)
                paths = write_report(report, self.reports_dir / job_id)
                await asyncio.to_thread(
                    self.store.save_report, job_id, report.to_dict(), report.markdown,
                    {"markdown": str(paths[0]), "json": str(paths[1])},
                )
                result.report, result.report_paths = report, paths
                result.timings["synthesis_s"] = time.perf_counter() - ts
                await emit(
                    ProgressEvent(
                        "synthesis_done", job_id, time.perf_counter() - t0,
                        message=str(paths[0]),
                        data={"words": report.word_count,
                              "invalid_citations_removed": report.invalid_citations_removed},
                    )
                )
            await asyncio.to_thread(self.store.mark_succeeded, job_id, traj.answer)
            result.timings["total_s"] = time.perf_counter() - t0
            await emit(ProgressEvent("job_done", job_id, result.timings["total_s"],
                                     message=traj.answer or "", total_tokens=traj.total_tokens))
            return result
        except asyncio.CancelledError:
            await asyncio.to_thread(self.store.mark_cancelled, job_id)
            raise
        except StoreError:
            raise
        except Exception as exc:
            log.exception("research_job_failed", job_id=job_id)
            await asyncio.to_thread(self.store.mark_failed, job_id, f"{type(exc).__name__}: {exc}")
            await emit(ProgressEvent("job_failed", job_id, time.perf_counter() - t0, message=str(exc)))
            raise
