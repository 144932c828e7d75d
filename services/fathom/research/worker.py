"""The research worker: run one durable job to its end, whichever process picks it up.

``run_job`` claims the job (compare-and-set with a worker id and a lease, so a redelivered message
never runs a job twice at once), renews the lease every ``lease_s / 3``, resumes from the steps the
store holds, runs the trajectory through a ``TrajectoryRunner`` (the local ``AgentLoop`` or the
PolicyService over gRPC), persists each step as it arrives and publishes it on the ``EventBus``,
synthesizes the report (locally or through the SynthesisService), and marks the end. A cancel
request (Redis ``fathom:cancel`` or the store flag) or a lost lease cancels the run; the per-job
deadline fails it with DEADLINE_EXCEEDED. A worker killed mid-run leaves the job ``running`` with a
lease that expires; the next claim resumes it, and steps are idempotent by (trajectory, index).

The local CLI (``ResearchService``) runs its jobs through this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from fathom.agent.trajectory import Step, Trajectory
from fathom.core.errors import StoreError
from fathom.core.logging import get_logger
from fathom.queue.keys import CANCEL_CHANNEL, cancel_key
from fathom.research.bus import EventBus, batch_stream, job_stream
from fathom.research.events import ProgressEvent, event_payload
from fathom.store.records import ClaimLost

if TYPE_CHECKING:
    from fathom.agent.loop import AgentLoop
    from fathom.core.config import Settings
    from fathom.store.records import JobInfo
    from fathom.store.repository import JobStore
    from fathom.synthesis.report import Report
    from fathom.synthesis.synthesizer import Synthesizer
    from fathom.tools.base import ToolRunner

Mode = Literal["search", "report"]
OnStep = Callable[[Step, Trajectory], Awaitable[None]]
EventSink = Callable[[ProgressEvent], Awaitable[None] | None]
ToolsFactory = Callable[[str, str, str], "ToolRunner"]  # (lane, job_id, trajectory_id) -> a job's runner

log = get_logger(__name__)


# -- seams -----------------------------------------------------------------------------------


class TrajectoryRunner(Protocol):
    """Runs (or continues) one trajectory, awaiting ``on_step`` as each step completes."""

    def new_trajectory(self, question: str, mode: Mode) -> Trajectory: ...

    async def run(self, question: str, mode: Mode, on_step: OnStep, resume: Trajectory | None, *,
                  trajectory_id: str, lane: str, deadline: float | None, job_id: str) -> Trajectory: ...


class SynthesisRunner(Protocol):
    """Writes and stores the report of a finished trajectory."""

    async def synthesize(self, job_id: str, question: str, traj: Trajectory) -> SynthesisDone: ...


@dataclass(frozen=True)
class SynthesisDone:
    words: int
    invalid_citations_removed: int
    report: Report | None = None  # None when it was written by another process (gRPC)
    paths: tuple[Path, Path] | None = None


class LocalTrajectoryRunner:
    """The agent loop in this process, with its own tools, or with a runner per job from ``tools``
    (the plane's ``QueueToolRunner`` is per job, so its tool tasks can be cancelled with it)."""

    def __init__(self, agent: AgentLoop, tools: ToolsFactory | None = None) -> None:
        self.agent = agent
        self.tools = tools

    def new_trajectory(self, question: str, mode: Mode) -> Trajectory:
        return self.agent.new_trajectory(question, mode)

    async def run(self, question: str, mode: Mode, on_step: OnStep, resume: Trajectory | None, *,
                  trajectory_id: str, lane: str, deadline: float | None, job_id: str) -> Trajectory:
        agent = self.agent
        if self.tools is not None:
            from fathom.agent.loop import AgentLoop

            tools = self.tools(lane, job_id, trajectory_id)
            agent = AgentLoop(agent.backend, tools, agent.settings, agent.sampling, agent.guided,
                              date=agent.date, final_answer_tokens=agent.final_answer_tokens)
            try:
                return await agent.run(question, mode=mode, on_step=on_step, resume=resume)
            finally:
                closer = getattr(agent.tools, "aclose", None)
                if closer is not None:
                    await closer()
        return await agent.run(question, mode=mode, on_step=on_step, resume=resume)


class GrpcTrajectoryRunner:
    """The PolicyService over gRPC (``fathom.rpc.clients.PolicyClient``): a stream of ``Step``s,
    then one done object with answer, stop_reason, total_tokens and prompt."""

    def __init__(self, client: Any, model: str = "") -> None:
        self.client = client
        self.model = model

    def new_trajectory(self, question: str, mode: Mode) -> Trajectory:
        from fathom.agent import protocol
        from fathom.tools.base import TOOL_SPECS

        # The same prompt the policy builds; the done message confirms (or corrects) it.
        prompt = protocol.build_prompt(question, TOOL_SPECS, mode, None)
        return Trajectory(question=question, prompt=prompt, model=self.model, meta={"mode": mode})

    async def run(self, question: str, mode: Mode, on_step: OnStep, resume: Trajectory | None, *,
                  trajectory_id: str, lane: str, deadline: float | None, job_id: str) -> Trajectory:
        traj = resume if resume is not None else self.new_trajectory(question, mode)
        stream: AsyncIterator[Any] = self.client.run_trajectory(
            trajectory_id, question, lane, resume_steps=list(traj.steps), timeout=deadline, mode=mode,
            job_id=job_id,
        )
        async for item in stream:
            if isinstance(item, Step):
                traj.steps.append(item)
                await on_step(item, traj)
                continue
            traj.answer = getattr(item, "answer", None) or None
            traj.stop_reason = getattr(item, "stop_reason", None) or "answered"
            traj.total_tokens = int(getattr(item, "total_tokens", 0) or 0)
            traj.prompt = getattr(item, "prompt", "") or traj.prompt
            if traj.stop_reason == "error":
                traj.meta["error"] = getattr(item, "error", "") or "the policy service reported an error"
        return traj


class LocalSynthesis:
    """The synthesizer in this process; reports go to the store (and to files when ``reports_dir``)."""

    def __init__(self, store: JobStore, synthesizer: Synthesizer, reports_dir: Path | None = None) -> None:
        self.store = store
        self.synthesizer = synthesizer
        self.reports_dir = reports_dir

    async def synthesize(self, job_id: str, question: str, traj: Trajectory) -> SynthesisDone:
        report, paths = await _synthesize_and_store(
            self.store, self.synthesizer, job_id, question, traj, self.reports_dir
        )
        return SynthesisDone(report.word_count, report.invalid_citations_removed, report, paths)


class GrpcSynthesis:
    """The SynthesisService over gRPC: it loads the stored trajectory and stores the report itself."""

    def __init__(self, client: Any, store: JobStore) -> None:
        self.client = client
        self.store = store

    async def synthesize(self, job_id: str, question: str, traj: Trajectory) -> SynthesisDone:
        await self.client.synthesize(job_id)
        info = await asyncio.to_thread(self.store.get_report, job_id)
        if info is None:
            raise StoreError(f"the synthesis service stored no report for job {job_id}")
        return SynthesisDone(info.word_count, info.invalid_citations_removed)


async def _synthesize_and_store(
    store: JobStore, synthesizer: Synthesizer, job_id: str, question: str, traj: Trajectory,
    reports_dir: Path | None,
) -> tuple[Report, tuple[Path, Path] | None]:
    from fathom.synthesis.writer import write_report

    report = await synthesizer.synthesize(question, traj)
    paths = write_report(report, reports_dir / job_id) if reports_dir is not None else None
    files = {"markdown": str(paths[0]), "json": str(paths[1])} if paths else {}
    await asyncio.to_thread(store.save_report, job_id, report.to_dict(), report.markdown, files)
    return report, paths


async def synthesize_job(job_id: str, store: JobStore, synthesizer: Synthesizer,
                         reports_dir: Path | None = None) -> Report:
    """Synthesize the job's stored trajectory and store the report: the one body of the
    SynthesisService servicer and of the ``fathom.synthesis.run`` task."""
    job = await asyncio.to_thread(store.get_job, job_id)
    traj = await asyncio.to_thread(store.load_trajectory, job.id)
    if traj is None:
        raise StoreError(f"job {job.id} has no trajectory to synthesize")
    report, _ = await _synthesize_and_store(store, synthesizer, job.id, job.question, traj, reports_dir)
    return report


# -- the job ---------------------------------------------------------------------------------


@dataclass
class WorkerContext:
    """What a worker process needs to run jobs; ``stack`` closes what was built for it."""

    store: JobStore
    bus: EventBus
    runner: TrajectoryRunner
    synthesis: SynthesisRunner | None
    worker_id: str
    lease_s: float = 30.0
    redis_url: str | None = None  # cancel channel; None: the store flag is polled instead
    cancel_bus: Any = None  # fathom.queue.cancel.CancelBus of the worker process, when it has one
    cancel_poll_s: float = 1.0
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def aclose(self) -> None:
        await self.stack.aclose()


@dataclass
class JobOutcome:
    job_id: str
    state: str  # the job's state when this worker let go of it
    claimed: bool
    trajectory: Trajectory | None = None
    report: Report | None = None
    report_paths: tuple[Path, Path] | None = None
    timings: dict[str, float] = field(default_factory=dict)


async def run_job(job_id: str, ctx: WorkerContext) -> str:
    """Run the job if this worker can claim it; returns the job's state afterwards."""
    return (await execute_job(job_id, ctx)).state


async def execute_job(job_id: str, ctx: WorkerContext, on_event: EventSink | None = None) -> JobOutcome:
    job = await asyncio.to_thread(ctx.store.claim_job, job_id, ctx.worker_id, ctx.lease_s)
    if job is None:
        # Another worker holds a live claim, or the job ended: never run it twice at once.
        current = await asyncio.to_thread(ctx.store.get_job, job_id)
        log.info("job_not_claimed", job_id=job_id, state=current.status, holder=current.worker_id)
        return JobOutcome(current.id, current.status, claimed=False)
    return await _JobRun(job, ctx, on_event).execute()


def _ended_before(traj: Trajectory) -> bool:
    """Whether a resumed trajectory already ended: its end was stored, or its last recorded step
    ended it and the worker died before storing the end (then the end is filled in here)."""
    from fathom.agent.loop import FINISHED

    if traj.stop_reason in FINISHED:
        return True
    if not traj.steps or not traj.steps[-1].ends_trajectory:
        return False
    last = traj.steps[-1]
    traj.answer = traj.last_answer
    traj.stop_reason = "answered" if last.answer is not None else "no_tool_call"
    return True


def tool_target(name: str | None, arguments: dict[str, Any]) -> str:
    if name == "search_urls":
        return str(arguments.get("query", ""))
    if name == "query_url":
        return str(arguments.get("url", ""))
    return ""


def step_event(job_id: str, step: Step, traj: Trajectory, elapsed_s: float) -> ProgressEvent:
    return ProgressEvent(
        "step", job_id, elapsed_s, turn=step.index + 1, total_tokens=traj.total_tokens,
        tool_calls=[{"name": c.name or "?", "target": tool_target(c.name, c.arguments), "ok": c.ok,
                     "error": c.error} for c in step.tool_calls],
        data={"answer": step.answer, "model_s": step.model_s, "tools_s": step.tools_s,
              "overhead_s": step.overhead_s, "index": step.index, "text": step.text,
              "completion_tokens": step.completion_tokens, "finish_reason": step.finish_reason,
              # The whole step for Watch (Progress.step); token ids and log-probs stay in the store.
              "step": {k: v for k, v in step.to_dict().items() if k not in ("token_ids", "logprobs")}},
    )


class _JobRun:
    """One claimed run of a job: the work task and its two guards (lease, cancel)."""

    def __init__(self, job: JobInfo, ctx: WorkerContext, on_event: EventSink | None) -> None:
        self.job = job
        self.ctx = ctx
        self.on_event = on_event
        self.t0 = time.perf_counter()
        self.stop_cause: str | None = None
        self.traj: Trajectory | None = None
        self.trajectory_id = ""
        self.outcome = JobOutcome(job.id, "running", claimed=True)
        self._main: asyncio.Task[JobOutcome] | None = None

    @property
    def mode(self) -> Mode:
        return "search" if self.job.mode == "search" else "report"

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    async def emit(self, event: ProgressEvent, state: str) -> None:
        await self.ctx.bus.apublish(job_stream(self.job.id), event.kind, event_payload(event, state))
        if self.on_event is not None:
            maybe = self.on_event(event)
            if asyncio.iscoroutine(maybe):
                await maybe

    async def execute(self) -> JobOutcome:
        job = self.job
        self.traj, self.trajectory_id = await self._resume_point()
        resumed = len(self.traj.steps)
        if resumed:
            log.info("research_job_resumed", job_id=job.id, steps=resumed, worker=self.ctx.worker_id)
        await self.emit(ProgressEvent("job_started", job.id, 0.0, message=job.question,
                                      data={"mode": self.mode, "resumed_steps": resumed,
                                            "worker": self.ctx.worker_id}), "running")
        self._main = asyncio.create_task(self._work())
        guards = [asyncio.create_task(self._lease_loop()), asyncio.create_task(self._cancel_listener())]
        try:
            return await self._main
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.stop_cause is None or (task is not None and task.cancelling()):
                raise  # the worker itself is going away: the lease expires and the job resumes elsewhere
            return await self._stopped()
        finally:
            for guard in guards:
                guard.cancel()
            if not self._main.done():
                self._main.cancel()
            await asyncio.gather(*guards, self._main, return_exceptions=True)

    async def _resume_point(self) -> tuple[Trajectory, str]:
        """The job's recorded trajectory (a dead worker's steps), or a new, stored, empty one."""
        store, job = self.ctx.store, self.job
        ids = await asyncio.to_thread(store.trajectory_ids, job.id)
        if ids:
            traj = await asyncio.to_thread(store.load_trajectory_by_id, ids[-1])
            traj.stop_reason = None if traj.stop_reason in ("cancelled", "error") else traj.stop_reason
            return traj, ids[-1]
        traj = self.ctx.runner.new_trajectory(job.question, self.mode)
        tid = await asyncio.to_thread(store.start_trajectory, job.id, job.question, traj.prompt, traj.model)
        return traj, tid

    def _deadline_s(self) -> float | None:
        deadline_at: datetime | None = getattr(self.job, "deadline_at", None)
        if deadline_at is None:
            return None
        if deadline_at.tzinfo is None:
            deadline_at = deadline_at.replace(tzinfo=UTC)
        return (deadline_at - datetime.now(UTC)).total_seconds()

    async def on_step(self, step: Step, traj: Trajectory) -> None:
        ts = time.perf_counter()
        store = self.ctx.store
        await asyncio.to_thread(store.record_step, self.trajectory_id, step)
        for call in step.tool_calls:
            snap = call.meta.get("snapshot")
            if isinstance(snap, dict):
                await asyncio.to_thread(store.record_snapshot_dict, snap)
        spent = time.perf_counter() - ts
        self.outcome.timings["store_s"] = self.outcome.timings.get("store_s", 0.0) + spent
        step.overhead_s += spent  # persisting is our overhead too
        await self.emit(step_event(self.job.id, step, traj, self.elapsed()), "running")

    async def _work(self) -> JobOutcome:
        left = self._deadline_s()
        try:
            async with asyncio.timeout(max(0.0, left) if left is not None else None) as scope:
                return await self._run_to_end(left)
        except TimeoutError:
            if not scope.expired():
                raise
            message = f"DEADLINE_EXCEEDED: the job's deadline passed after {self.elapsed():.1f}s"
            return await self._fail(message)
        except ClaimLost as exc:
            # Another worker took the job over (our lease ran out) or it ended: write nothing more.
            log.warning("research_job_claim_lost", job_id=self.job.id, error=str(exc))
            current = await asyncio.to_thread(self.ctx.store.get_job, self.job.id)
            self.outcome.state = current.status
            return self.outcome
        except StoreError:
            raise  # the store is unreachable: nothing can be recorded; the job resumes later
        except Exception as exc:
            log.exception("research_job_failed", job_id=self.job.id)
            await self._fail(f"{type(exc).__name__}: {exc}")
            raise

    async def _run_to_end(self, deadline: float | None) -> JobOutcome:
        job, store, out = self.job, self.ctx.store, self.outcome
        assert self.traj is not None
        if _ended_before(self.traj):
            # An earlier worker finished the trajectory and died (or lost its lease) before the job
            # ended, e.g. during synthesis: the policy has nothing left to do; go on from there.
            log.info("research_job_trajectory_already_ended", job_id=job.id, steps=len(self.traj.steps),
                     stop_reason=self.traj.stop_reason)
            traj = self.traj
        else:
            traj = await self.ctx.runner.run(
                job.question, self.mode, self.on_step, self.traj, trajectory_id=self.trajectory_id,
                lane=job.lane, deadline=deadline, job_id=job.id,
            )
        self.traj = out.trajectory = traj
        await asyncio.to_thread(store.finish_trajectory, self.trajectory_id, traj)
        out.timings["agent_s"] = self.elapsed()
        if traj.stop_reason in ("error", "cancelled"):
            # The model failed mid-run: the steps so far are kept; no report is written from them.
            message = traj.meta.get("error") or f"the policy ended with {traj.stop_reason}"
            return await self._fail(str(message))
        if self.mode == "report" and self.ctx.synthesis is not None:
            await self.emit(ProgressEvent("synthesis_started", job.id, self.elapsed()), "running")
            ts = time.perf_counter()
            done = await self.ctx.synthesis.synthesize(job.id, job.question, traj)
            out.report, out.report_paths = done.report, done.paths
            out.timings["synthesis_s"] = time.perf_counter() - ts
            await self.emit(ProgressEvent(
                "synthesis_done", job.id, self.elapsed(), message=str(done.paths[0]) if done.paths else "",
                data={"words": done.words, "invalid_citations_removed": done.invalid_citations_removed},
            ), "running")
        await asyncio.to_thread(store.mark_succeeded, job.id, traj.answer, worker_id=self.ctx.worker_id)
        out.state = "succeeded"
        out.timings["total_s"] = self.elapsed()
        await self.emit(ProgressEvent("job_done", job.id, self.elapsed(), message=traj.answer or "",
                                      total_tokens=traj.total_tokens), "succeeded")
        await self._batch_event("succeeded")
        return out

    async def _fail(self, message: str) -> JobOutcome:
        await asyncio.to_thread(self.ctx.store.mark_failed, self.job.id, message,
                                worker_id=self.ctx.worker_id)
        self.outcome.state = "failed"
        await self.emit(ProgressEvent("job_failed", self.job.id, self.elapsed(), message=message), "failed")
        await self._batch_event("failed")
        return self.outcome

    async def _stopped(self) -> JobOutcome:
        """The run was cancelled by a guard: a cancel request, or a lost claim."""
        store, job = self.ctx.store, self.job
        if self.stop_cause == "cancel":
            if self.traj is not None:
                self.traj.stop_reason = "cancelled"
                with contextlib.suppress(StoreError):
                    await asyncio.to_thread(store.finish_trajectory, self.trajectory_id, self.traj)
            try:
                await asyncio.to_thread(store.mark_cancelled, job.id, "cancelled on request",
                                        worker_id=self.ctx.worker_id)
            except StoreError:
                pass  # it ended a moment before the cancel landed; its state stands
            else:
                await self.emit(ProgressEvent("job_cancelled", job.id, self.elapsed(),
                                              message="cancelled on request"), "cancelled")
                await self._batch_event("cancelled")
        current = await asyncio.to_thread(store.get_job, job.id)
        log.info("research_job_stopped", job_id=job.id, cause=self.stop_cause, state=current.status)
        self.outcome.state = current.status
        return self.outcome

    async def _batch_event(self, state: str) -> None:
        batch_id = self.job.batch_id
        if not batch_id:
            return
        stream = batch_stream(batch_id)
        await self.ctx.bus.apublish(stream, "job_ended", {"job_id": self.job.id, "state": state})
        batch = await asyncio.to_thread(self.ctx.store.get_batch, batch_id)
        if batch.is_finished:  # the last job of the batch (two last ones may both say so: harmless)
            await self.ctx.bus.apublish(stream, "batch_done",
                                        {"batch_id": batch_id, "counts": dict(batch.counts)})

    def _stop(self, cause: str) -> None:
        if self.stop_cause is None and self._main is not None and not self._main.done():
            self.stop_cause = cause
            log.info("research_job_stopping", job_id=self.job.id, cause=cause)
            self._main.cancel()

    async def _lease_loop(self) -> None:
        """Renew the claim every lease_s / 3; a lost claim or a cancel flag stops the run."""
        store, job, ctx = self.ctx.store, self.job, self.ctx
        while True:
            await asyncio.sleep(ctx.lease_s / 3)
            try:
                kept = await asyncio.to_thread(store.renew_lease, job.id, ctx.worker_id, ctx.lease_s)
                if not kept:
                    return self._stop("lease_lost")
                if getattr(await asyncio.to_thread(store.get_job, job.id), "cancel_requested", False):
                    return self._stop("cancel")
            except StoreError as exc:
                log.warning("lease_renewal_failed", job_id=job.id, error=str(exc))

    async def _cancel_listener(self) -> None:
        """``fathom:cancel`` reaches the run within a second; without Redis the store flag is polled."""
        if self.ctx.cancel_bus is not None:
            handle = self.ctx.cancel_bus.watch(self.job.id, lambda _job_id: self._stop("cancel"))
            try:
                await asyncio.Event().wait()  # until the run ends and cancels this guard
            finally:
                handle.close()
        if self.ctx.redis_url is None:
            return await self._poll_cancel_flag()
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.Redis.from_url(self.ctx.redis_url, socket_connect_timeout=2)
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(CANCEL_CHANNEL)
            # Subscribed first, then the key: a cancel published before we listened is still seen.
            if await client.exists(cancel_key(self.job.id)):
                return self._stop("cancel")
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and _text(message.get("data")) == self.job.id:
                    return self._stop("cancel")
        except (RedisError, OSError) as exc:
            log.warning("cancel_listener_lost", job_id=self.job.id, error=str(exc))
            return await self._poll_cancel_flag()
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _poll_cancel_flag(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.cancel_poll_s)
            try:
                job = await asyncio.to_thread(self.ctx.store.get_job, self.job.id)
            except StoreError:
                continue
            if getattr(job, "cancel_requested", False):
                return self._stop("cancel")


class _TemplateTools:
    """The tool specs of a template agent whose jobs each get their own runner."""

    def __init__(self) -> None:
        from fathom.tools.base import TOOL_SPECS

        self.specs = TOOL_SPECS

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        raise RuntimeError("the template agent runs no tools: each job gets its own tool runner")

    async def aclose(self) -> None:
        return None


def _text(data: object) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)


# -- Celery task bodies ----------------------------------------------------------------------


def run_job_sync(job_id: str, runtime: Any) -> str:
    """Body of the ``fathom.research.run`` task, on the worker process's ``WorkerRuntime``."""
    settings: Settings = runtime.settings

    async def go() -> str:
        ctx = await _worker_context(runtime)
        return await run_job(job_id, ctx)

    state: str = runtime.run(go(), settings.plane.job_deadline_s + settings.plane.lease_s)
    return state


def synthesize_job_sync(job_id: str, runtime: Any) -> dict[str, Any]:
    """Body of the ``fathom.synthesis.run`` task: synthesize the stored trajectory, store the report."""
    settings: Settings = runtime.settings

    async def go() -> dict[str, Any]:
        ctx = await _worker_context(runtime)
        synthesizer = await _local_synthesizer(runtime, ctx)
        report = await synthesize_job(job_id, ctx.store, synthesizer)
        return {"job_id": job_id, "words": report.word_count}

    result: dict[str, Any] = runtime.run(go(), settings.plane.job_deadline_s)
    return result


async def _worker_context(runtime: Any) -> WorkerContext:
    """Built once per worker process and cached on its runtime (closed with it when it has
    ``add_closer``; otherwise at process exit)."""
    async with runtime.shared_lock:  # many tasks share the loop: build the context once
        ctx: WorkerContext | None = runtime.shared.get("research_context")
        if ctx is None:
            ctx = await build_plane_context(runtime.settings, str(runtime.worker_id),
                                            store=getattr(runtime, "store", None))
            ctx.cancel_bus = getattr(runtime, "cancel", None)
            runtime.shared["research_context"] = ctx
            runtime.add_closer(ctx.aclose)
    return ctx


async def _local_synthesizer(runtime: Any, ctx: WorkerContext) -> Synthesizer:
    async with runtime.shared_lock:
        synthesizer: Synthesizer | None = runtime.shared.get("research_synthesizer")
        if synthesizer is None:
            from fathom.research.runtime import build_synthesizer

            synthesizer = build_synthesizer(runtime.settings, ctx.stack)
            runtime.shared["research_synthesizer"] = synthesizer
    return synthesizer


async def build_plane_context(settings: Settings, worker_id: str, *,
                              store: JobStore | None = None) -> WorkerContext:
    """A research worker of the plane: tools over the queues, policy and synthesis by
    ``plane.policy_via`` / ``plane.synthesis_via``."""
    from fathom.research.runtime import build_agent, build_synthesizer, open_store

    stack = AsyncExitStack()
    if store is None:
        store = open_store(settings, stack)
    redis_url = settings.plane.resolved_redis_url
    bus = EventBus(store, redis_url)
    stack.callback(bus.close)
    runner: TrajectoryRunner
    if settings.plane.policy_via == "grpc":
        from fathom.rpc.clients import PolicyClient  # type: ignore[import-not-found,unused-ignore]

        policy_client = PolicyClient(settings)
        if hasattr(policy_client, "aclose"):
            stack.push_async_callback(policy_client.aclose)
        runner = GrpcTrajectoryRunner(policy_client, model=settings.policy.model)
    else:
        from fathom.queue.runner import QueueToolRunner  # type: ignore[import-not-found,unused-ignore]

        def tools(lane: str, job_id: str, trajectory_id: str) -> ToolRunner:
            runner_: ToolRunner = QueueToolRunner(settings, lane, job_id=job_id, trajectory_id=trajectory_id)
            return runner_

        # The template agent's own runner is never called: each job gets its own QueueToolRunner.
        agent = build_agent(settings, _TemplateTools(), stack)
        runner = LocalTrajectoryRunner(agent, tools)
    synthesis: SynthesisRunner
    if settings.plane.synthesis_via == "grpc":
        from fathom.rpc.clients import SynthesisClient  # type: ignore[import-not-found,unused-ignore]

        synthesis_client = SynthesisClient(settings)
        if hasattr(synthesis_client, "aclose"):
            stack.push_async_callback(synthesis_client.aclose)
        synthesis = GrpcSynthesis(synthesis_client, store)
    else:
        synthesis = LocalSynthesis(store, build_synthesizer(settings, stack))
    return WorkerContext(store=store, bus=bus, runner=runner, synthesis=synthesis, worker_id=worker_id,
                         lease_s=settings.plane.lease_s, redis_url=redis_url, stack=stack)
