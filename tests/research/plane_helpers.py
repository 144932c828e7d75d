"""Small real parts for the durable-job tests: a scripted agent context and a recording enqueuer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from fathom.agent.loop import AgentLoop
from fathom.core.config import AgentSettings, Settings
from fathom.models.base import SamplingParams
from fathom.research.bus import EventBus
from fathom.research.worker import LocalTrajectoryRunner, WorkerContext
from fathom.store.repository import JobStore

from tests.agent.agent_scripted import InMemoryTools, ScriptedBackend

SEARCH = ('\nLet me search.\n</think>\n\n<tool_call>\n{"name": "search_urls", "arguments": '
          '{"query": "K2 first ascent"}}\n</tool_call>')
READ = ('\nRead the K2 page.\n</think>\n\n<tool_call>\n{"name": "query_url", "arguments": '
        '{"url": "https://mountains.example/k2", "goal": "first ascent"}}\n</tool_call>')
ANSWER = "\nThe page says 1954.\n</think>\n\n\\boxed{Lino Lacedelli and Achille Compagnoni}"
QUESTION = "Who made the first ascent of K2?"
ANSWER_TEXT = "Lino Lacedelli and Achille Compagnoni"


class RecordingEnqueuer:
    """An Enqueuer that keeps what it was given (the gateway's side of the queue, no worker)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    def enqueue_research(self, job_ids: Iterable[str], lane: str) -> int:
        ids = list(job_ids)
        self.calls.append((ids, lane))
        return len(ids)

    @property
    def ids(self) -> list[str]:
        return [i for ids, _ in self.calls for i in ids]


def settings(tmp_path: Path, **plane: object) -> Settings:
    s = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    for key, value in plane.items():
        setattr(s.plane, key, value)
    return s


def context(store: JobStore, backend: ScriptedBackend, *, worker_id: str = "w1", lease_s: float = 30.0,
            redis_url: str | None = None, cancel_poll_s: float = 1.0, max_turns: int = 64) -> WorkerContext:
    agent = AgentLoop(backend, InMemoryTools(), AgentSettings(max_turns=max_turns), SamplingParams())
    return WorkerContext(store=store, bus=EventBus(store, redis_url), runner=LocalTrajectoryRunner(agent),
                         synthesis=None, worker_id=worker_id, lease_s=lease_s, redis_url=redis_url,
                         cancel_poll_s=cancel_poll_s)


async def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``check`` (a store read) until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
