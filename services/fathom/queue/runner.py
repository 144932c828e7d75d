"""``QueueToolRunner``: the agent's tools over the plane's queues, and ``CeleryEnqueuer`` for the gateway.

The runner validates a call exactly as the in-process Toolbox does (the same argument checks, so a
bad call costs no queue round trip and reads the same to the model), publishes the task to the
``search``/``fetch`` queue of its lane (the publish is sync: it runs in a thread) and awaits the
result on the process's one ``ResultWaiter`` without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import structlog

from fathom.core.config import Settings
from fathom.core.logging import get_logger
from fathom.queue.app import TRACE_HEADER
from fathom.queue.names import check_lane, queue_name
from fathom.queue.results import ResultWaiter, shared_waiter
from fathom.queue.tasks import tool_limit_s
from fathom.tools.base import QUERY_URL, SEARCH_URLS, TOOL_SPECS, ToolResult, ToolSpec

# Toolbox keeps these private today; they are the one definition of a valid call (see report).
from fathom.tools.toolbox import (
    MAX_GOAL_CHARS,
    MAX_QUERY_CHARS,
    MAX_URL_CHARS,
    ArgumentError,
    _error,
    _text_arg,
    parse_top_k,
)

if TYPE_CHECKING:
    from celery import Celery

log = get_logger(__name__)

# How long a call may wait in its queue before its tool deadline starts to count.
DEFAULT_QUEUE_WAIT_S = 60.0
# How long publishing one task may take before the call reports the tool service unavailable.
PUBLISH_TIMEOUT_S = 30.0


def _trace_headers() -> dict[str, str]:
    trace_id = structlog.contextvars.get_contextvars().get(TRACE_HEADER)
    return {TRACE_HEADER: str(trace_id)} if trace_id else {}


class QueueToolRunner:
    """A ``ToolRunner`` whose calls run on the plane's tool workers."""

    specs: tuple[ToolSpec, ...] = TOOL_SPECS

    def __init__(
        self,
        settings: Settings,
        lane: str,
        *,
        job_id: str | None = None,
        trajectory_id: str | None = None,
        celery_app: Celery | None = None,
        waiter: ResultWaiter | None = None,
        queue_wait_s: float = DEFAULT_QUEUE_WAIT_S,
    ) -> None:
        self.settings = settings
        self.lane = check_lane(lane)
        self.job_id = job_id
        self.trajectory_id = trajectory_id
        self.queue_wait_s = queue_wait_s
        self._app = celery_app
        self._waiter = waiter

    @property
    def app(self) -> Celery:
        if self._app is None:
            from fathom.queue.app import get_celery_app

            self._app = get_celery_app()
        return self._app

    def waiter(self) -> ResultWaiter:
        if self._waiter is None:
            self._waiter = shared_waiter(self.settings.plane.resolved_redis_url)
        return self._waiter

    async def call(self, name: str, arguments: dict[str, Any], *, call_id: str | None = None,
                   render: bool | None = None) -> ToolResult:
        """Validate, enqueue, await. ``call_id``: a deterministic id (e.g. ``trajectory:step:index``)
        makes a repeated call (a resumed trajectory) return the recorded result; None: a fresh uuid."""
        if not isinstance(arguments, dict):
            return _error(name, "arguments must be a JSON object", "ArgumentError")
        try:
            if name == SEARCH_URLS.name:
                query = _text_arg(name, arguments, "query", MAX_QUERY_CHARS)
                kwargs: dict[str, Any] = {"query": query, "top_k": parse_top_k(arguments.get("top_k"))}
                task, queue = "fathom.tools.search_urls", "search"
            elif name == QUERY_URL.name:
                url = _text_arg(name, arguments, "url", MAX_URL_CHARS)
                goal = _text_arg(name, arguments, "goal", MAX_GOAL_CHARS)
                kwargs = {"url": url, "goal": goal}
                if render is not None:  # ToolsService's choice; the agent's calls leave it to the chain
                    kwargs["render"] = render
                task, queue = "fathom.tools.query_url", "fetch"
            else:
                known = ", ".join(s.name for s in self.specs)
                return _error(name, f"unknown tool '{name}'; the tools are: {known}", "UnknownTool")
        except ArgumentError as exc:
            return _error(name, exc.message, "ArgumentError")
        return await self.submit(task, queue, name, kwargs, call_id=call_id)

    async def fetch(self, url: str, *, render: bool | None = None, call_id: str | None = None) -> ToolResult:
        """A raw read through the fetch workers (``fathom.tools.fetch``), for the ToolsService."""
        return await self.submit("fathom.tools.fetch", "fetch", "fetch", {"url": url, "render": render},
                                 call_id=call_id)

    async def submit(
        self, task: str, queue: str, tool: str, kwargs: dict[str, Any], *, call_id: str | None = None
    ) -> ToolResult:
        call_id = call_id or f"{self.trajectory_id or 'call'}:{uuid.uuid4().hex}"
        payload = {"call_id": call_id, **kwargs, "job_id": self.job_id}
        target = queue_name(queue, self.lane)
        timeout = tool_limit_s(self.settings, tool) + self.queue_wait_s
        waiter = self.waiter()
        try:
            # Bounded: kombu retries a publish a few times, but a half-dead broker connection can
            # block a socket read without end; the caller gets Unavailable instead of a hang.
            await asyncio.wait_for(asyncio.to_thread(
                self.app.send_task, task, kwargs=payload, queue=target, routing_key=target,
                headers=_trace_headers(),
            ), PUBLISH_TIMEOUT_S)
        except Exception as exc:  # the broker is away: the model is told, the trajectory goes on
            log.warning("queue_runner.publish_failed", task=task, call_id=call_id, error=str(exc))
            return _error(tool, f"the tool service is unavailable ({type(exc).__name__})", "Unavailable")
        record = await waiter.wait(call_id, timeout)
        if record is None:
            return _error(tool, f"timed out after {timeout:.0f} s waiting for the tool", "Timeout",
                          call_id=call_id)
        meta = dict(record.get("meta") or {})
        meta.setdefault("call_id", call_id)
        meta.setdefault("worker", record.get("worker"))
        meta.setdefault("elapsed_s", record.get("elapsed_s", 0.0))  # the tool's own time on the worker
        return ToolResult(text=str(record.get("text", "")), ok=bool(record.get("ok")), meta=meta)

    async def aclose(self) -> None:
        """The waiter is the process's (shared); nothing of this runner's own to close."""


class CeleryEnqueuer:
    """The gateway's ``Enqueuer``: research and synthesis messages, many per producer connection."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def enqueue_research(self, job_ids: Iterable[str], lane: str) -> int:
        return self._send_many("fathom.research.run", queue_name("research", lane), job_ids)

    def enqueue_synthesis(self, job_id: str, lane: str) -> int:
        return self._send_many("fathom.synthesis.run", queue_name("synthesis", lane), [job_id])

    def _send_many(self, task: str, queue: str, job_ids: Iterable[str]) -> int:
        headers = _trace_headers()
        sent = 0
        with self.app.producer_or_acquire() as producer:
            for job_id in job_ids:
                self.app.send_task(task, kwargs={"job_id": job_id}, queue=queue, routing_key=queue,
                                   producer=producer, headers=headers)
                sent += 1
        return sent
