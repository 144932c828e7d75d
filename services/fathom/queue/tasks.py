"""The plane's Celery tasks (names fixed by docs/PLANE.md).

Tool tasks are idempotent by call id: a result already stored for the call is returned at once (a
redelivered message never runs the tool twice once it has finished). Tool-level failures are results
(``ok=False``), never task failures; only transient broker/Redis connection errors are retried, with
backoff. The threads pool has no Celery time limits of its own: each body is bounded by
``WorkerRuntime.run(timeout=...)``, which cancels the coroutine; the soft/hard limits declared on the
tasks apply when a worker runs another pool.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import kombu.exceptions
import redis

from fathom.core.config import Settings
from fathom.core.logging import get_logger
from fathom.tools.base import ToolResult

if TYPE_CHECKING:
    from celery import Celery

    from fathom.queue.worker_runtime import WorkerRuntime
    from fathom.tools.toolbox import Toolbox

log = get_logger(__name__)

# Transient: the broker or Redis is away for a moment. Anything else is a result or a real failure.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError, ConnectionError,
)
_RETRY: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS, "retry_backoff": 1, "retry_backoff_max": 30, "retry_jitter": True,
    "max_retries": 8,
}
_COMMON: dict[str, Any] = {
    "bind": True, "shared": False, "acks_late": True, "reject_on_worker_lost": True, "ignore_result": True,
}
TASK_SLACK_S = 5.0  # on top of a tool's own deadline: the tool enforces it, this only bounds a misbehaviour
FETCH_TEXT_CHARS = 200_000  # `fathom.tools.fetch` returns at most this much text


def tool_limit_s(settings: Settings, tool: str) -> float:
    """The hard bound of one tool task body (seconds)."""
    from fathom.tools.toolbox import fetch_limit_s

    if tool == "search_urls":
        return settings.search.timeout_s + 2 * TASK_SLACK_S
    if tool == "query_url":
        # A read, then the extractor (its attempts share the role's request timeout).
        return fetch_limit_s(settings) + settings.extractor.timeout_s + TASK_SLACK_S
    return fetch_limit_s(settings) + TASK_SLACK_S


def cancelled_result(tool: str, job_id: str) -> ToolResult:
    return ToolResult(text=f"Error ({tool}): cancelled — job {job_id} was cancelled", ok=False,
                      meta={"error": "Cancelled", "job_id": job_id})


def run_tool_task(
    runtime: WorkerRuntime,
    tool: str,
    call_id: str,
    job_id: str | None,
    body: Callable[[Toolbox], Awaitable[ToolResult]],
    lane: str = "live",
) -> dict[str, Any]:
    """The shared body of every tool task: idempotency, cancellation, limits, storing the result."""
    from fathom.queue.worker_runtime import JobCancelled

    existing = runtime.results.get(call_id)
    if existing is not None:
        runtime.results.notify(call_id)  # the first writer may have died before its publish
        log.info("tool_task.already_done", tool=tool, call_id=call_id)
        return {"call_id": call_id, "ok": existing.get("ok"), "recorded": True}
    started = time.time()
    limit = tool_limit_s(runtime.settings, tool)
    if job_id and runtime.cancel.is_cancelled(job_id):
        result = cancelled_result(tool, job_id)
    else:
        async def call() -> ToolResult:
            return await body(await runtime.toolbox())

        try:
            result = runtime.run(call(), timeout=limit, job_id=job_id or None)
        except JobCancelled:
            result = cancelled_result(tool, job_id or "")
        except TimeoutError:
            result = ToolResult(text=f"Error ({tool}): timed out after {limit:.0f} s", ok=False,
                                meta={"error": "Timeout"})
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # a defect below: the model reads a failure, the log the traceback
            log.exception("tool_task.internal_error", tool=tool, call_id=call_id)
            result = ToolResult(text=f"Error ({tool}): internal error ({type(exc).__name__})", ok=False,
                                meta={"error": type(exc).__name__})
    finished = time.time()
    record = {
        "call_id": call_id, "ok": result.ok, "text": result.text, "meta": result.meta,
        "elapsed_s": round(finished - started, 4), "worker": runtime.worker_id,
        "started_at": started, "finished_at": finished, "tool": tool, "job_id": job_id,
    }
    written = runtime.results.put(call_id, record)
    from fathom.core.metrics import observe_tool

    observe_tool(tool, lane, result.ok, finished - started)
    log.info("tool_task.done", tool=tool, call_id=call_id, ok=result.ok, elapsed_s=record["elapsed_s"],
             written=written)
    return {"call_id": call_id, "ok": result.ok, "recorded": not written}


async def fetch_page(toolbox: Toolbox, url: str, render: bool | None, limit_s: float) -> ToolResult:
    """``fathom.tools.fetch``: the fetch chain's read, as FetchResponse fields (meta) + text."""
    from fathom.tools.toolbox import MAX_URL_CHARS, read_for_tool

    url = url.strip() if isinstance(url, str) else ""
    if not url or len(url) > MAX_URL_CHARS:
        return ToolResult(text="Error (fetch): argument 'url' is empty or too long", ok=False,
                          meta={"error": "ArgumentError"})
    read = await read_for_tool(toolbox.reader, url, render=render, limit_s=limit_s)
    if isinstance(read, ToolResult):
        return read
    text = read.text.text[:FETCH_TEXT_CHARS]
    meta = {
        "url": url, "final_url": read.page.final_url, "status": read.page.status,
        "content_type": read.page.content_type, "title": read.text.title or "",
        "rendered": read.page.fetcher == "browser",
        "snapshot_sha256": read.snapshot.sha256 if read.snapshot is not None else "",
        "text_chars": len(read.text.text), "text_truncated": len(read.text.text) > FETCH_TEXT_CHARS,
    }
    return ToolResult(text=text, meta=meta)


REWARD_TASK_LIMIT_S = 600.0  # one trajectory: a judge call, plus one labeller call per tool call at worst


async def reward_scorer(runtime: WorkerRuntime) -> Any:
    """The worker process's ``RewardScorer`` (judge, labeller, store), built once on its runtime and
    closed with it, so the LLM judge's cache and the embedding model are shared by every task."""
    async with runtime.shared_lock:
        scorer = runtime.shared.get("reward_scorer")
        if scorer is None:
            from contextlib import AsyncExitStack

            from fathom.models.factory import close_backends
            from fathom.research.runtime import open_store
            from fathom.reward.service import build_scorer

            stack = AsyncExitStack()
            stack.push_async_callback(close_backends)
            store = getattr(runtime, "store", None) or open_store(runtime.settings, stack)
            scorer = runtime.shared["reward_scorer"] = build_scorer(runtime.settings, store)
            runtime.add_closer(stack.aclose)
            log.info("reward_task.scorer_built", judge=scorer.judge.name, labeller=scorer.labeller.name)
    return scorer


def score_trajectory_sync(runtime: WorkerRuntime, trajectory_id: str, golds: list[str],
                          stage: int | None) -> dict[str, Any]:
    """Body of ``fathom.reward.score``: the stored trajectory scored and its reward stored, once."""

    async def go() -> dict[str, Any]:
        scorer = await reward_scorer(runtime)
        result: dict[str, Any] = await scorer.score_stored(trajectory_id, golds, stage)
        return result

    return runtime.run(go(), timeout=REWARD_TASK_LIMIT_S)


def send_reward_score(app: Celery, trajectory_id: str, golds: list[str], stage: int | None = None,
                      lane: str = "train") -> str:
    """Queue ``fathom.reward.score`` on ``reward.<lane>``; returns the task id. The reward lands in the
    store (``JobStore.get_reward``): tasks keep no results."""
    from fathom.queue.names import queue_name

    target = queue_name("reward", lane)
    kwargs = {"trajectory_id": trajectory_id, "golds": list(golds), "stage": stage}
    result = app.send_task("fathom.reward.score", kwargs=kwargs, queue=target, routing_key=target)
    return str(result.id)


def lane_of(task: Any) -> str:
    """The lane a message came in on (``fetch.train`` -> ``train``), for metrics."""
    info = getattr(task.request, "delivery_info", None) or {}
    key = str(info.get("routing_key") or "")
    return key.rpartition(".")[2] or "live"


def register_tasks(app: Celery) -> None:
    """Add the plane's tasks to ``app`` (its settings: ``app.fathom_settings``)."""
    settings: Settings = app.fathom_settings  # type: ignore[attr-defined]
    from fathom.queue.worker_runtime import runtime_for

    def limits(tool: str) -> dict[str, float]:
        hard = tool_limit_s(settings, tool)
        return {"soft_time_limit": hard, "time_limit": hard + TASK_SLACK_S}

    @app.task(name="fathom.tools.search_urls", **_COMMON, **_RETRY, **limits("search_urls"))
    def search_urls(self: Any, call_id: str, query: str, top_k: int = 10, job_id: str | None = None) -> Any:
        args = {"query": query, "top_k": top_k}
        return run_tool_task(runtime_for(self.app), "search_urls", call_id, job_id,
                             lambda tb: tb.call("search_urls", args), lane_of(self))

    @app.task(name="fathom.tools.query_url", **_COMMON, **_RETRY, **limits("query_url"))
    def query_url(
        self: Any, call_id: str, url: str, goal: str, job_id: str | None = None, render: bool | None = None
    ) -> Any:
        args = {"url": url, "goal": goal}

        def run(tb: Toolbox) -> Any:
            return tb.call("query_url", args) if render is None else tb.query_url(url, goal, render=render)

        return run_tool_task(runtime_for(self.app), "query_url", call_id, job_id, run, lane_of(self))

    @app.task(name="fathom.tools.fetch", **_COMMON, **_RETRY, **limits("fetch"))
    def fetch(
        self: Any, call_id: str, url: str, render: bool | None = None, job_id: str | None = None
    ) -> Any:
        runtime = runtime_for(self.app)
        limit = tool_limit_s(runtime.settings, "fetch") - TASK_SLACK_S
        return run_tool_task(runtime, "fetch", call_id, job_id, lambda tb: fetch_page(tb, url, render, limit),
                             lane_of(self))

    @app.task(name="fathom.research.run", **_COMMON, **_RETRY)
    def research_run(self: Any, job_id: str) -> Any:
        from fathom.core.metrics import timed_task
        from fathom.research.worker import run_job_sync

        with timed_task("research.run", lane_of(self)) as outcome:
            state = run_job_sync(job_id, runtime_for(self.app))
            outcome["outcome"] = str(state)
            return state

    @app.task(name="fathom.synthesis.run", **_COMMON, **_RETRY)
    def synthesis_run(self: Any, job_id: str) -> Any:
        from fathom.core.metrics import timed_task
        from fathom.research.worker import synthesize_job_sync

        with timed_task("synthesis.run", lane_of(self)):
            return synthesize_job_sync(job_id, runtime_for(self.app))

    @app.task(name="fathom.reward.score", **_COMMON, **_RETRY, soft_time_limit=REWARD_TASK_LIMIT_S,
              time_limit=REWARD_TASK_LIMIT_S + TASK_SLACK_S)
    def reward_score(self: Any, trajectory_id: str, golds: list[str], stage: int | None = None) -> Any:
        """Idempotent by (trajectory, stage): a redelivered message finds the stored reward and
        neither judges nor stores again. A request no reward can be computed for (no golds, unknown
        stage, no such trajectory) fails the task without a retry."""
        from fathom.core.metrics import timed_task

        with timed_task("reward.score", lane_of(self)) as outcome:
            result = score_trajectory_sync(runtime_for(self.app), trajectory_id, list(golds), stage)
            outcome["outcome"] = "stored" if result["stored"] else "already_stored"
            return {k: v for k, v in result.items() if k != "breakdown"}
