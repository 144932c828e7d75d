"""The synthesizer: search trace in, checked cited report out.

Unguided (a real synthesizer such as Fathom-Synthesizer-4B): one raw ChatML prompt with the
assistant turn opened inside ``<think>``; the model writes its plan until ``</think>``, then —
in the same turn — the report until end of turn. Guided (weak models): see
:mod:`fathom.synthesis.guided`. Either way the report goes through ``check_citations`` before it
is returned, so no caller ever sees a citation of a page the research did not read
(``protocol.citable_urls``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fathom.agent.trajectory import Trajectory
from fathom.core.config import ModelRole
from fathom.core.errors import ModelError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams
from fathom.synthesis.budget import fit_trace
from fathom.synthesis.citations import check_citations
from fathom.synthesis.evidence import PageTexts, collect_evidence
from fathom.synthesis.guided import GuidedConfig, GuidedWriter
from fathom.synthesis.protocol import (
    END_OF_TURN_STOPS,
    SYNTHESIZER_SYSTEM_PROMPT,
    THINK_CLOSE,
    build_messages,
    build_prompt,
    citable_urls,
    parse_output,
)
from fathom.synthesis.report import Report

log = get_logger(__name__)

ProgressCallback = Callable[[str, dict[str, Any]], Awaitable[None] | None]

_CONTEXT_MARGIN_TOKENS = 64  # tokenizers disagree a little on joins; keep a small reserve
_PLAN_SHARE = 0.4  # of the new-token budget the plan may use; the report gets the rest


class Synthesizer:
    def __init__(
        self,
        backend: ModelBackend,
        role: ModelRole,
        guided: bool = False,
        guided_config: GuidedConfig | None = None,
        page_texts: PageTexts | None = None,
    ) -> None:
        self.backend = backend
        self.role = role
        self.guided = guided
        self.guided_config = guided_config or GuidedConfig()
        # Guided: the pages' main texts (from their snapshots) that sentences are checked against;
        # without it, the verbatim quotes in the trace are the pages' only words at hand.
        self.page_texts = page_texts

    async def synthesize(
        self, question: str, trajectory: Trajectory, on_progress: ProgressCallback | None = None
    ) -> Report:
        if not question.strip():
            raise ValueError("the question is empty")

        async def emit(event: str, data: dict[str, Any]) -> None:
            if on_progress is not None:
                res = on_progress(event, data)
                if inspect.isawaitable(res):
                    await res

        t0 = time.perf_counter()
        allowed = citable_urls(trajectory)
        guided_plan = ""
        if self.guided:
            guided_plan, raw, meta = await self._guided(question, trajectory, emit)
            plan = ""  # the guided writer's section map is code's work, stored apart from a plan
        else:
            plan, raw, meta = await self._unguided(question, trajectory, allowed, emit)
        if not raw.strip():
            raise ModelError(f"the synthesizer ({self.backend.name}) wrote a plan but no report")

        check = check_citations(raw, allowed)
        meta["seconds"] = round(time.perf_counter() - t0, 3)
        meta["citable_urls"] = len(allowed)
        await emit("citations", {"valid": len(check.citations), "invalid_removed": check.invalid_removed,
                                 "sources": len(check.sources),
                                 "sentences_without_citation": check.sentences_without_citation})
        log.info("report synthesized", guided=self.guided, words=check.word_count,
                 sources=len(check.sources), invalid_removed=check.invalid_removed)
        return Report(
            question=question,
            plan=plan,
            guided_plan=guided_plan,
            markdown=check.markdown,
            sections=check.sections,
            sources=check.sources,
            invalid_citations_removed=check.invalid_removed,
            sentences_without_citation=check.sentences_without_citation,
            citations_per_section=check.citations_per_section,
            word_count=check.word_count,
            model=self.backend.name,
            invalid_citations=check.invalid_urls,
            uncited_sentences=check.uncited_sentences,
            guided=self.guided,
            meta=meta,
        )

    def _params(self, max_new_tokens: int, stop: tuple[str, ...]) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=self.role.temperature,
            top_p=self.role.top_p,
            repetition_penalty=self.role.repetition_penalty,
            stop=stop,
        )

    def _used(self, c: Completion) -> int:
        return c.usage.completion_tokens or self.backend.count_tokens(c.text)

    async def _unguided(
        self, question: str, traj: Trajectory, allowed: set[str], emit: Callable[..., Awaitable[None]]
    ) -> tuple[str, str, dict[str, Any]]:
        role = self.role
        frame = build_prompt(question, "", allowed)  # everything but the trace
        budget = (role.context_tokens - role.max_new_tokens - self.backend.count_tokens(frame)
                  - _CONTEXT_MARGIN_TOKENS)
        fit = fit_trace(traj, self.backend.count_tokens, budget)
        meta: dict[str, Any] = {
            "trace_tokens": fit.tokens,
            "trace_dropped_responses": fit.dropped_responses,
            "trace_clipped_responses": fit.clipped_responses,
            "trace_clipped_reasoning": fit.clipped_reasoning,
        }
        await emit("trace", {"tokens": fit.tokens, "budget": budget, "compacted": fit.compacted})

        if role.api == "chat":
            msgs = [ChatMessage(m["role"], m["content"]) for m in build_messages(question, fit.text, allowed)]
            c = await self.backend.chat(msgs, self._params(role.max_new_tokens, END_OF_TURN_STOPS))
            plan, report = parse_output(c.text)
            meta.update(report_tokens=self._used(c), finish_reason=c.finish_reason)
            await emit("report", {"tokens": meta["report_tokens"], "finish_reason": c.finish_reason})
            return plan, report, meta

        prompt = build_prompt(question, fit.text, allowed)
        await emit("plan", {"status": "started"})
        plan_budget = max(256, int(role.max_new_tokens * _PLAN_SHARE))
        c1 = await self.backend.complete(prompt, self._params(plan_budget, (THINK_CLOSE, *END_OF_TURN_STOPS)))
        plan_tokens = self._used(c1)
        meta.update(plan_tokens=plan_tokens, plan_finish_reason=c1.finish_reason)
        ended_turn = c1.stop in END_OF_TURN_STOPS or (
            # backends that cannot say which stop matched: a finished report shows its layout
            c1.finish_reason == "stop" and c1.stop is None and "executive summary" in c1.text.lower()
        )
        if ended_turn:
            # The model skipped the plan or ended its turn: whatever it wrote is all we get.
            plan, report = parse_output(c1.text)
            if not report and "executive summary" in plan.lower():
                plan, report = "", plan
            meta.update(report_tokens=0, finish_reason=c1.finish_reason)
            await emit("report", {"tokens": 0, "finish_reason": c1.finish_reason})
            return plan, report, meta

        plan = c1.text.strip()
        await emit("plan", {"status": "done", "tokens": plan_tokens, "finish_reason": c1.finish_reason})
        # A plan cut off by its budget is closed for the model, so the report still gets written.
        report_prompt = f"{prompt}{plan}\n{THINK_CLOSE}\n\n"
        report_budget = max(256, role.max_new_tokens - plan_tokens)
        c2 = await self.backend.complete(report_prompt, self._params(report_budget, END_OF_TURN_STOPS))
        meta.update(report_tokens=self._used(c2), finish_reason=c2.finish_reason,
                    report_truncated=c2.finish_reason == "length")
        await emit("report", {"tokens": meta["report_tokens"], "finish_reason": c2.finish_reason})
        _, report = parse_output(f"{THINK_CLOSE}{c2.text}")
        return plan, report, meta

    async def _guided(
        self, question: str, traj: Trajectory, emit: Callable[..., Awaitable[None]]
    ) -> tuple[str, str, dict[str, Any]]:
        # Reading snapshots back is disk and parsing work: off the event loop.
        evidence = await asyncio.to_thread(collect_evidence, traj, self.page_texts)
        if not evidence:
            raise ModelError("the search trace holds no page that was read successfully to write a "
                             "report from (search results alone are not cited)")
        writer = GuidedWriter(self.backend, self.role.temperature, self.guided_config)
        checked = sum(e.page_text is not None for e in evidence)
        await emit("evidence", {"pages": len(evidence), "page_texts": checked})
        draft = await writer.write(question, evidence, emit)
        meta = {
            "completion_tokens": draft.completion_tokens,
            "model_calls": draft.model_calls,
            "pages_read": len(evidence),
            "pages_checked_against_snapshot": checked,
            "sections_from_model": sum(s.generated for s in draft.sections),
            "generated_sentences_dropped": draft.dropped_sentences,
        }
        await emit("report", {"tokens": draft.completion_tokens})
        return draft.section_map, draft.markdown, meta


__all__ = ["SYNTHESIZER_SYSTEM_PROMPT", "ProgressCallback", "Synthesizer"]
