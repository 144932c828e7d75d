from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fathom.core.config import Settings
from fathom.core.errors import ModelError
from fathom.models.base import ModelBackend
from fathom.synthesis import Report, Synthesizer, write_report
from fathom.synthesis.protocol import citable_urls

from .scripted import INVENTED, PLAN, ScriptedSynthesizerModel
from .traces import (
    ARIANE,
    ESA,
    L2,
    MIRROR,
    MISSING,
    NASA,
    QUESTION,
    SMACS,
    STSCI,
    WIKI,
    build_trajectory,
    long_trajectory,
    trajectory_with_failed_and_empty_reads,
)


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
    # the invented URL, and pages only listed in search results (never read), lose their citations
    assert report.invalid_citations_removed == 6
    assert report.invalid_citations == [ARIANE, INVENTED, NASA.rstrip("/"), L2, SMACS]
    assert report.sources == [WIKI, ESA, STSCI]
    assert set(report.sources) <= citable_urls(build_trajectory())
    assert report.markdown.rstrip().endswith("\n".join(f"- {u}" for u in report.sources))
    assert report.citations_per_section["S3. First images"] == 2
    # the sentences whose only citation was removed, and the one the model left uncited
    assert report.uncited_sentences == [
        "The launch was flown as Ariane 5 flight VA256, one of the rocket's final missions.",
        "Launch was postponed by a further month because of a fuel leak.",
        "The James Webb Space Telescope is an international programme led by NASA with ESA and the "
        "Canadian Space Agency.",
        "Ariane 5 was a heavy-lift vehicle that has since been retired.",
        "The trajectory was so accurate that less propellant was needed for course corrections.",
        "The observatory settled at the Sun-Earth L2 point, about 1.5 million kilometres from Earth.",
        "The cluster lies in the southern constellation Volans.",
    ]
    assert report.sentences_without_citation == 7
    assert [s.title for s in report.sections][:3] == [
        "How the James Webb Space Telescope Reached Space and What It First Saw",
        "Executive Summary",
        "S1. Launch",
    ]
    assert 250 < report.word_count < 700
    assert [e for e, _ in events] == ["trace", "plan", "plan", "report", "citations"]
    assert events[-1][1]["invalid_removed"] == 6

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
    assert report.invalid_citations_removed == 6 and INVENTED not in report.markdown


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
    assert INVENTED not in report.markdown and report.invalid_citations_removed == 6


async def test_bad_input_is_refused_clearly() -> None:
    model = ScriptedSynthesizerModel()
    with pytest.raises(ValueError, match="question"):
        await Synthesizer(model, Settings().synthesizer).synthesize("  ", build_trajectory())
    empty = build_trajectory()
    empty.steps = []
    with pytest.raises(ModelError, match="no page that was read"):
        await Synthesizer(model, Settings().synthesizer, guided=True).synthesize(QUESTION, empty)


async def test_a_report_citing_a_page_that_failed_to_load_loses_the_citation() -> None:
    """The policy invented a URL; reading it gave a 404 whose text names it and a mirror. The model's
    report cites both: the citations are removed and counted, and the prompt never offered them."""
    report_md = (
        "# Webb\n\n## Executive Summary\n\n"
        f"- Webb launched on 25 December 2021 on an Ariane 5 rocket. [{WIKI}]\n"
        f"- The launch slipped by a week because of a fuel leak. [{MISSING}]\n\n"
        f"## Conclusion\n\nA mirror of the agency page confirms the delay. [{MIRROR}, {ESA}]\n"
    )
    model = ScriptedSynthesizerModel(report=report_md)
    traj = trajectory_with_failed_and_empty_reads()
    report = await Synthesizer(model, Settings().synthesizer).synthesize(QUESTION, traj)
    may_cite = model.prompts[0][0].split("URLS YOU MAY CITE:\n", 1)[1].split("\n\n", 1)[0]
    assert MISSING not in may_cite and MIRROR not in may_cite
    assert report.invalid_citations_removed == 2 and report.invalid_citations == [MISSING, MIRROR]
    assert MISSING not in report.markdown and MIRROR not in report.markdown
    assert report.sources == [WIKI, ESA]
    assert report.uncited_sentences == ["The launch slipped by a week because of a fuel leak."]
