"""What one worker process owns: an asyncio loop in a background thread, a lazily built Toolbox, the
ResultStore and the CancelBus listener.

Celery runs tasks on a threads pool; every task body hands its coroutine to the one loop with
``WorkerRuntime.run``. So the many tool calls of a worker share one httpx client, one browser pool
and one extractor model, and a cancel for a job cancels the asyncio tasks running for it (which
cancels the httpx request and closes the browser page).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from fathom.core.config import Settings
from fathom.core.logging import get_logger
from fathom.queue.cancel import CancelBus
from fathom.queue.results import ToolResultStore

if TYPE_CHECKING:
    from celery import Celery

    from fathom.tools.toolbox import Toolbox

log = get_logger(__name__)
T = TypeVar("T")


class JobCancelled(Exception):
    """The job this work belonged to was cancelled (``CancelBus.request``)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        redis_url = settings.plane.resolved_redis_url
        self.results = ToolResultStore(redis_url, ttl_s=settings.plane.tool_result_ttl_s)
        self.cancel = CancelBus(redis_url)
        self.worker_id = worker_id()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._toolbox: Toolbox | None = None
        self._toolbox_lock: asyncio.Lock | None = None
        self._jobs: dict[str, set[asyncio.Task[Any]]] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._stopped = False
        # Objects other modules build once per process and hang here (e.g. the research context).
        self.shared: dict[str, Any] = {}
        self.shared_lock = asyncio.Lock()

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Something built for this process that must be closed when the worker stops (last first)."""
        self._closers.append(closer)

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        self.start()
        assert self._loop is not None
        return self._loop

    def start(self) -> WorkerRuntime:
        with self._start_lock:
            if self._stopped:
                raise RuntimeError("WorkerRuntime is stopped")
            if self._thread is not None:
                return self
            loop = asyncio.new_event_loop()
            # Many jobs' store and Redis calls go to threads from this one loop (asyncio.to_thread).
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
                self.settings.plane.io_threads, thread_name_prefix="fathom-io"))
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._loop = loop
            self._thread = threading.Thread(target=serve, name="fathom-worker-loop", daemon=True)
            self._thread.start()
            ready.wait(timeout=10)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Close the toolbox and Redis connections, then stop the loop. Idempotent."""
        with self._start_lock:
            if self._stopped:
                return
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(timeout)
            except Exception:
                log.exception("worker_runtime.close_failed")
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=timeout)
            if not thread.is_alive():
                loop.close()
        else:
            self.cancel.close()
        self.results.close()

    async def _aclose(self) -> None:
        for tasks in list(self._jobs.values()):
            for task in tasks:
                task.cancel()
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.exception("worker_runtime.closer_failed")
        self._closers.clear()
        if self._toolbox is not None:
            await self._toolbox.aclose()
            self._toolbox = None
            from fathom.models.factory import close_backends

            await close_backends()
        await self.cancel.aclose()

    # -- running work -----------------------------------------------------------------------------

    def run(
        self, coro: Coroutine[Any, Any, T], timeout: float | None = None, *, job_id: str | None = None
    ) -> T:
        """Run ``coro`` on the worker loop and return its result (called from a Celery pool thread).

        ``timeout``: cancels the coroutine and raises ``TimeoutError`` past it (the threads pool has
        no Celery time limits, so this is what bounds a task). ``job_id``: a cancel of that job
        cancels the coroutine and raises ``JobCancelled``."""
        future = asyncio.run_coroutine_threadsafe(self._guarded(coro, job_id), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the task took longer than {timeout:g} s") from None

    async def _guarded(self, coro: Coroutine[Any, Any, T], job_id: str | None) -> T:
        if job_id is None:
            return await coro
        task = asyncio.current_task()
        assert task is not None
        cancelled = False

        def on_cancel(_: str) -> None:
            nonlocal cancelled
            cancelled = True
            task.cancel()

        self._jobs.setdefault(job_id, set()).add(task)
        handle = self.cancel.watch(job_id, on_cancel)
        try:
            return await coro
        except asyncio.CancelledError:
            if cancelled:
                task.uncancel()
                log.info("worker_runtime.cancelled", job_id=job_id)
                raise JobCancelled(job_id) from None
            raise
        finally:
            handle.close()
            tasks = self._jobs.get(job_id)
            if tasks is not None:
                tasks.discard(task)
                if not tasks:
                    del self._jobs[job_id]

    def running_jobs(self) -> list[str]:
        return list(self._jobs)

    async def toolbox(self) -> Toolbox:
        """The process's Toolbox, built on first use on the worker loop."""
        if self._toolbox is not None:
            return self._toolbox
        if self._toolbox_lock is None:
            self._toolbox_lock = asyncio.Lock()
        async with self._toolbox_lock:
            if self._toolbox is None:
                from fathom.tools.toolbox import build_toolbox

                s = self.settings
                base = s.web.origin if s.search.backend == "local" else None
                self._toolbox = build_toolbox(s, local_web_base=base)
                log.info("worker_runtime.toolbox_built", local_web=base)
            return self._toolbox


# -- one runtime per Celery app per process --------------------------------------------------------

_RUNTIMES: weakref.WeakKeyDictionary[Celery, WorkerRuntime] = weakref.WeakKeyDictionary()
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(app: Celery) -> WorkerRuntime:
    """The runtime of ``app`` in this process (``app.fathom_settings``), started on first use."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(app)
        if runtime is None or runtime._stopped:
            settings: Settings = app.fathom_settings  # type: ignore[attr-defined]
            runtime = _RUNTIMES[app] = WorkerRuntime(settings)
    return runtime.start()


def close_runtimes() -> None:
    """Worker shutdown: close every runtime of this process."""
    with _RUNTIMES_LOCK:
        runtimes = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for runtime in runtimes:
        runtime.stop()
