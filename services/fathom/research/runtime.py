"""The one place that builds a research runtime from settings.

Local mode (the embedded default): the bundled model in process, the shipped sample corpus served
by the local web on a free loopback port, SQLite. Any part switches to a real deployment by
configuration alone: ``FATHOM_POLICY__BACKEND=openai`` + ``FATHOM_POLICY__BASE_URL=...`` (vLLM),
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
from fathom.research.service import ResearchService
from fathom.store.db import Database
from fathom.store.repository import JobStore
from fathom.synthesis.pages import SnapshotPageTexts
from fathom.synthesis.synthesizer import Synthesizer
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


class LocalRuntime:
    """Async context manager that starts what the configured mode needs and tears it down."""

    def __init__(self, settings: Settings, reports_dir: Path | None = None) -> None:
        # A private copy: the runtime fills in derived values (index dir, context budget) that must
        # not leak into the shared settings of the process.
        self.settings = settings.model_copy(deep=True)
        self.reports_dir = reports_dir or (settings.data_dir / "reports")
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Runtime:
        s = self.settings
        base_url: str | None = None
        if s.search.backend == "local":
            from fathom.corpus.sample import ensure_sample_index
            from fathom.corpus.web import LocalWeb

            index_dir = s.search.index_dir = s.search.index_dir or ensure_sample_index(s)
            web = LocalWeb(index_dir)
            web.start()
            self._stack.callback(web.stop)
            base_url = web.base_url
            log.info("local_web_started", base_url=base_url, corpus=str(index_dir))

        db = Database(s.resolved_database_url)
        db.migrate()
        self._stack.callback(db.dispose)
        store = JobStore(db)

        policy = build_backend("policy", s)
        window = getattr(policy, "context_tokens", None)
        if isinstance(window, int) and 0 < window < s.agent.max_context_tokens:
            # The 40,960-token budget is the Fathom model's; a smaller model's window is the real limit.
            log.info("context_budget_capped", budget=window, model=policy.name)
            s.agent.max_context_tokens = window
        synth_backend = build_backend("synthesizer", s)
        toolbox = build_toolbox(s, local_web_base=base_url)
        self._stack.push_async_callback(toolbox.aclose)

        guided = GuidedPolicy.from_settings(s.agent) if _guided(s) else None
        agent = AgentLoop(policy, toolbox, s.agent, policy_sampling(s), guided=guided)
        # The guided writer checks each sentence against the page text kept in the snapshots.
        page_texts = SnapshotPageTexts(s.snapshot_dir, s.fetch)
        self._stack.callback(page_texts.close)
        synthesizer = Synthesizer(synth_backend, s.synthesizer, guided=is_weak_model(s.synthesizer),
                                  page_texts=page_texts)
        service = ResearchService(
            store=store, agent=agent, synthesizer=synthesizer, reports_dir=self.reports_dir,
            settings_snapshot=settings_snapshot(s),
        )
        return Runtime(s, service, store, toolbox, policy, synth_backend, base_url)

    async def __aexit__(self, *exc: object) -> None:
        from fathom.models.factory import close_backends

        await self._stack.aclose()
        await close_backends()


def _guided(settings: Settings) -> bool:
    if "guided" in settings.agent.model_fields_set:
        return settings.agent.guided
    return is_weak_model(settings.policy)


__all__ = ["LocalRuntime", "Runtime", "is_weak_model", "policy_sampling"]
