from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fathom.core.config import Settings
from fathom.core.errors import ModelError
from fathom.models.base import ModelBackend
from fathom.synthesis import Report, Synthesizer, write_report
from fathom.synthesis.protocol import trace_urls

from .scripted import INVENTED, PLAN, ScriptedSynthesizerModel
from .traces import ARIANE, ESA, L2, NASA, QUESTION, SMACS, STSCI, WIKI, build_trajectory, long_trajectory


async def test_unguided_plan_then_report_with_checked_citations(tmp_path: Path) -> None:
    model = ScriptedSynthesizerModel()
    assert isinstance(model, ModelBackend)
    role = Settings().synthesizer
    events: list[tuple[str, dict[str, Any]]] = []
    report = await Synthesizer(model, role).synthesize(
        QUESTION, build_trajectory(), on_progress=lambda e, d: events.append((e, d))
    )

    # two completions: the plan until </think>, then the report in the same turn
    (p1, params1), (p2, params2) = model.prompts
    assert p1.endswith("<|im_start|>assistant\n<think>\n")
    assert "SEARCH TRACE:\nUSER: " + QUESTION in p1
    assert params1.stop[0] == "</think>" and params1.temperature == 0.4
    assert p2 == p1 + PLAN.strip() + "\n</think>\n\n"
    assert "<|im_end|>" in params2.stop and "</think>" not in params2.stop
    # the report gets what the plan left of the new-token budget
    assert model.count_tokens(PLAN) + params2.max_new_tokens == role.max_new_tokens

    assert report.plan == PLAN.strip()
    assert report.model == "scripted-synthesizer" and not report.guided
    assert INVENTED not in report.markdown
    assert report.invalid_citations_removed == 1 and report.invalid_citations == [INVENTED]
    assert report.sources == [WIKI, ARIANE, ESA, STSCI, NASA, L2, SMACS]
    assert set(report.sources) <= trace_urls(build_trajectory())
    assert report.markdown.rstrip().endswith("\n".join(f"- {u}" for u in report.sources))
    assert report.citations_per_section["S3. First images"] == 3
    # the invented bullet lost its citation; so did nothing else
    assert report.uncited_sentences == [
        "Launch was postponed by a further month because of a fuel leak.",
        "The trajectory was so accurate that less propellant was needed for course corrections.",
    ]
    assert report.sentences_without_citation == 2
    assert [s.title for s in report.sections][:3] == [
        "How the James Webb Space Telescope Reached Space and What It First Saw",
        "Executive Summary",
        "S1. Launch",
    ]
    assert 250 < report.word_count < 700
    assert [e for e, _ in events] == ["trace", "plan", "plan", "report", "citations"]
    assert events[-1][1]["invalid_removed"] == 1

    md_path, json_path = write_report(report, tmp_path / "out")
    assert md_path.name.startswith("how-was-the-james-webb") and md_path.suffix == ".md"
    assert md_path.read_text(encoding="utf-8") == report.markdown
    again = Report.from_dict(json.loads(json_path.read_text(encoding="utf-8")))
    assert again == report


async def test_model_that_skips_the_plan_still_yields_a_checked_report() -> None:
    model = ScriptedSynthesizerModel(skip_plan=True)
    report = await Synthesizer(model, Settings().synthesizer).synthesize(QUESTION, build_trajectory())
    assert len(model.prompts) == 1  # the turn ended: no second completion
    assert report.plan == ""
    assert report.markdown.startswith("# How the James Webb Space Telescope Reached Space")
    assert report.invalid_citations_removed == 1 and INVENTED not in report.markdown


async def test_long_trace_is_compacted_to_fit_the_context() -> None:
    model = ScriptedSynthesizerModel()
    role = Settings().synthesizer.model_copy(update={"context_tokens": 9_000, "max_new_tokens": 2_000})
    report = await Synthesizer(model, role).synthesize(QUESTION, long_trajectory())
    prompt, _ = model.prompts[0]
    assert model.count_tokens(prompt) <= 9_000 - 2_000
    assert report.meta["trace_clipped_responses"] or report.meta["trace_dropped_responses"]
    assert "TOOL CALLS MADE (10):" in prompt


async def test_chat_api_role_sends_messages_and_still_checks_citations() -> None:
    model = ScriptedSynthesizerModel()
    role = Settings().synthesizer.model_copy(update={"api": "chat"})
    report = await Synthesizer(model, role).synthesize(QUESTION, build_trajectory())
    (prompt, _), = model.prompts
    assert prompt.startswith("<|im_start|>system\n")
    assert INVENTED not in report.markdown and report.invalid_citations_removed == 1


async def test_bad_input_is_refused_clearly() -> None:
    model = ScriptedSynthesizerModel()
    with pytest.raises(ValueError, match="question"):
        await Synthesizer(model, Settings().synthesizer).synthesize("  ", build_trajectory())
    empty = build_trajectory()
    empty.steps = []
    with pytest.raises(ModelError, match="no search results"):
        await Synthesizer(model, Settings().synthesizer, guided=True).synthesize(QUESTION, empty)
