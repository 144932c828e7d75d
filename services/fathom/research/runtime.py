"""The one place that builds a research runtime from settings.

Local mode (the embedded default): the bundled model in process, the shipped sample corpus served
by the local web at the configured origin (``settings.web``), SQLite. Any part switches to a real
deployment by configuration alone: ``FATHOM_POLICY__BACKEND=openai`` + ``FATHOM_POLICY__BASE_URL=...`` (vLLM),
``FATHOM_SEARCH__BACKEND=serper`` + ``FATHOM_SERPER_API_KEY``, ``FATHOM_DATABASE_URL=postgresql://...``.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fathom.agent.guided import GuidedPolicy
from fathom.agent.loop import AgentLoop
from fathom.core.config import Settings, is_weak_model
from fathom.core.logging import get_logger
from fathom.models.base import ModelBackend, SamplingParams
from fathom.models.factory import build_backend
from fathom.research.bus import EventBus
from fathom.research.service import ResearchService
from fathom.store.db import Database
from fathom.store.repository import JobStore
from fathom.synthesis.pages import SnapshotPageTexts
from fathom.synthesis.synthesizer import Synthesizer
from fathom.tools.base import ToolRunner
from fathom.tools.toolbox import Toolbox, build_toolbox

log = get_logger(__name__)

def policy_sampling(settings: Settings) -> SamplingParams:
    role = settings.policy
    return SamplingParams(
        max_new_tokens=min(role.max_new_tokens, settings.agent.max_new_tokens_per_turn),
        temperature=role.temperature,
        top_p=role.top_p,
        repetition_penalty=role.repetition_penalty,
        logprobs=True,
    )


def settings_snapshot(settings: Settings) -> dict[str, Any]:
    """What a job records about its configuration; secrets are never included."""
    data = settings.model_dump(mode="json", exclude={"serper_api_key"})
    for role in ("policy", "synthesizer", "extractor", "judge"):
        data.get(role, {}).pop("api_key", None)
    return data


@dataclass
class Runtime:
    settings: Settings
    service: ResearchService
    store: JobStore
    toolbox: Toolbox
    policy: ModelBackend
    synthesizer_backend: ModelBackend
    local_web_base: str | None
    bus: EventBus | None = None


def open_store(settings: Settings, stack: AsyncExitStack) -> JobStore:
    """A migrated store on the configured database, disposed with ``stack``."""
    db = Database(settings.resolved_database_url)
    db.migrate()
    stack.callback(db.dispose)
    return JobStore(db)


def build_agent(settings: Settings, tools: ToolRunner, stack: AsyncExitStack) -> AgentLoop:
    """The policy's agent loop over ``tools``. Caps the context budget at a smaller model's window
    (this mutates ``settings.agent``: pass a private copy)."""
    policy = build_backend("policy", settings)
    window = getattr(policy, "context_tokens", None)
    if isinstance(window, int) and 0 < window < settings.agent.max_context_tokens:
        # The 40,960-token budget is the Fathom model's; a smaller model's window is the real limit.
        log.info("context_budget_capped", budget=window, model=policy.name)
        settings.agent.max_context_tokens = window
    guided = GuidedPolicy.from_settings(settings.agent) if _guided(settings) else None
    return AgentLoop(policy, tools, settings.agent, policy_sampling(settings), guided=guided)


def build_synthesizer(settings: Settings, stack: AsyncExitStack) -> Synthesizer:
    # The guided writer checks each sentence against the page text kept in the snapshots.
    page_texts = SnapshotPageTexts(settings.snapshot_dir, settings.fetch,
                                   index_url=settings.fetch.snapshot_index_url)
    stack.callback(page_texts.close)
    return Synthesizer(build_backend("synthesizer", settings), settings.synthesizer,
                       guided=is_weak_model(settings.synthesizer), page_texts=page_texts)


def _start_local_web(settings: Settings, stack: AsyncExitStack) -> str:
    """The local web at the stable configured origin (``settings.web``), reused when one is
    already serving there, so URLs in stored reports stay valid after the job ends."""
    from fathom.corpus.sample import ensure_sample_index

    index_dir = settings.search.index_dir = settings.search.index_dir or ensure_sample_index(settings)
    from fathom.corpus.web import ensure_local_web

    base_url, stop = ensure_local_web(settings, index_dir)
    if stop is not None:
        stack.callback(stop)
    log.info("local_web_started", base_url=base_url, corpus=str(index_dir))
    return base_url


class LocalRuntime:
    """Async context manager that starts what the configured mode needs and tears it down."""

    def __init__(self, settings: Settings, reports_dir: Path | None = None) -> None:
        # A private copy: the runtime fills in derived values (index dir, context budget) that must
        # not leak into the shared settings of the process.
        self.settings = settings.model_copy(deep=True)
        self.reports_dir = reports_dir or (settings.data_dir / "reports")
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Runtime:
        s, stack = self.settings, self._stack
        try:
            base_url = _start_local_web(s, stack) if s.search.backend == "local" else None
            store = open_store(s, stack)
            toolbox = build_toolbox(s, local_web_base=base_url)
            stack.push_async_callback(toolbox.aclose)
            agent = build_agent(s, toolbox, stack)
            synthesizer = build_synthesizer(s, stack)
            # Local mode has no Redis: events are store rows, watchers poll.
            bus = EventBus(store, None)
            service = ResearchService(
                store=store, agent=agent, synthesizer=synthesizer, reports_dir=self.reports_dir,
                settings_snapshot=settings_snapshot(s), bus=bus,
            )
        except BaseException:
            await self.__aexit__()
            raise
        return Runtime(s, service, store, toolbox, agent.backend, synthesizer.backend, base_url, bus)

    async def __aexit__(self, *exc: object) -> None:
        from fathom.models.factory import close_backends

        await self._stack.aclose()
        # The backends come from the factory's process-wide cache; this runtime built them, so it
        # closes them (a later runtime builds fresh ones).
        await close_backends()


def _guided(settings: Settings) -> bool:
    if "guided" in settings.agent.model_fields_set:
        return settings.agent.guided
    return is_weak_model(settings.policy)


__all__ = ["LocalRuntime", "Runtime", "build_agent", "build_synthesizer", "is_weak_model", "open_store",
           "policy_sampling"]
