"""The guided path with the real bundled model (SmolLM2-135M) on CPU."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fathom.core.config import BUNDLED_MODEL, Settings
from fathom.models.bundled import prepare_bundled
from fathom.models.transformers_backend import TransformersBackend
from fathom.synthesis import GuidedConfig, Synthesizer, write_report
from fathom.synthesis.evidence import collect_evidence
from fathom.synthesis.grounding import grounding, is_placeholder
from fathom.synthesis.guided import SECTION_MAP_TITLE, GuidedWriter
from fathom.synthesis.protocol import citable_urls

from .claims import LIST_MARK_RE, cited_claims
from .traces import (
    FAQ,
    QUESTION,
    STSCI,
    WIKI,
    build_trajectory,
    snapshot_texts,
    trajectory_with_failed_and_empty_reads,
)

pytestmark = pytest.mark.slow

# Small budgets: the machine running the suite may be a busy 2-core box.
SMALL = GuidedConfig(sections=2, source_chars=500, section_tokens=60, bullet_tokens=16,
                     recommendation_tokens=40, conclusion_tokens=40, max_total_tokens=300, temperature=0.0)


@pytest.fixture
async def bundled() -> AsyncIterator[TransformersBackend]:
    backend = TransformersBackend(str(prepare_bundled(Settings().models_dir)), name=BUNDLED_MODEL)
    yield backend
    await backend.aclose()


async def test_guided_report_from_the_bundled_model_says_only_what_the_pages_read_say(
    bundled: TransformersBackend, tmp_path: Path
) -> None:
    traj = trajectory_with_failed_and_empty_reads()  # with a 404 and an extraction that found nothing
    events: list[str] = []
    synth = Synthesizer(bundled, Settings().synthesizer, guided=True, guided_config=SMALL,
                        page_texts=snapshot_texts)
    report = await synth.synthesize(QUESTION, traj, on_progress=lambda e, d: events.append(e))

    assert report.guided and report.model == BUNDLED_MODEL
    assert report.invalid_citations_removed == 0
    assert report.sources and set(report.sources) <= citable_urls(traj)
    assert FAQ not in report.sources
    md_path, json_path = write_report(report, tmp_path)
    # pages that were read ground the body sections, in the order the research read them
    assert report.sources[:2] == [WIKI, STSCI]
    # every cited sentence is the cited page's own words, or a sentence of the model's they support
    pages = {e.url: e for e in collect_evidence(traj, snapshot_texts)}
    claims, uncited = cited_claims(report.markdown)
    assert claims and uncited == []
    for claim, urls in claims:
        assert any(grounding(claim, pages[u].grounds) for u in urls), (claim, urls)
    assert not [ln for ln in report.markdown.splitlines() if is_placeholder(LIST_MARK_RE.sub("", ln))]
    assert "Florida" not in report.markdown  # the quote the extractor's rationale invented
    md = report.markdown
    order = [md.index(h) for h in ("## Executive Summary", "## S1. ", "## S2. ", "## Conclusion",
                                   "## Sources used")]
    assert order == sorted(order)
    s1 = next(s for s in report.sections if s.title.startswith("S1. "))
    assert s1.title == "S1. James Webb Space Telescope" and s1.citations
    exec_summary = next(s for s in report.sections if s.title == "Executive Summary")
    assert len([ln for ln in exec_summary.text.splitlines() if ln.startswith("- ")]) >= 5
    assert all(c in citable_urls(traj) for s in report.sections for c in s.citations)
    assert report.citations_per_section["S1. James Webb Space Telescope"] >= 1
    assert report.word_count > 60
    assert 0 < report.meta["completion_tokens"] <= 300 + 16  # per-call budgets scale to the cap
    assert report.plan == "" and report.guided_plan.startswith(SECTION_MAP_TITLE)
    assert events[0] == "evidence" and events[-1] == "citations" and "section" in events

    assert md_path.read_text(encoding="utf-8").startswith("# How was the James Webb")
    assert json_path.stat().st_size > 500


async def test_model_chooses_section_sources_by_constrained_decoding(bundled: TransformersBackend) -> None:
    evidence = collect_evidence(build_trajectory())
    writer = GuidedWriter(bundled, 0.0, GuidedConfig(sections=2, select_sources="model"))
    chosen = await writer.select(QUESTION, evidence)
    assert len(chosen) == 2 and chosen[0] is not chosen[1]
    assert {e.url for e in chosen} <= {e.url for e in evidence}
    assert writer.calls == 2  # one constrained choice per section
