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
from fathom.synthesis.guided import GuidedWriter
from fathom.synthesis.protocol import trace_urls

from .traces import ESA, QUESTION, WIKI, build_trajectory

pytestmark = pytest.mark.slow

# Small budgets: the machine running the suite may be a busy 2-core box.
SMALL = GuidedConfig(sections=2, source_chars=500, section_tokens=60, bullet_tokens=16,
                     recommendation_tokens=40, conclusion_tokens=40, max_total_tokens=300, temperature=0.0)


@pytest.fixture
async def bundled() -> AsyncIterator[TransformersBackend]:
    backend = TransformersBackend(str(prepare_bundled(Settings().models_dir)), name=BUNDLED_MODEL)
    yield backend
    await backend.aclose()


async def test_guided_report_from_the_bundled_model_cites_only_trace_urls(
    bundled: TransformersBackend, tmp_path: Path
) -> None:
    traj = build_trajectory()
    events: list[str] = []
    synth = Synthesizer(bundled, Settings().synthesizer, guided=True, guided_config=SMALL)
    report = await synth.synthesize(QUESTION, traj, on_progress=lambda e, d: events.append(e))

    allowed = trace_urls(traj)
    assert report.guided and report.model == BUNDLED_MODEL
    assert report.invalid_citations_removed == 0
    assert report.sources and set(report.sources) <= allowed
    md_path, json_path = write_report(report, tmp_path)
    # pages that were read ground the body sections, in the order the research read them
    assert report.sources[:2] == [WIKI, ESA]
    md = report.markdown
    order = [md.index(h) for h in ("## Executive Summary", "## S1. ", "## S2. ", "## Recommendations",
                                   "## Conclusion", "## Sources used")]
    assert order == sorted(order)
    s1 = next(s for s in report.sections if s.title.startswith("S1. "))
    assert s1.title == "S1. James Webb Space Telescope" and s1.citations
    exec_summary = next(s for s in report.sections if s.title == "Executive Summary")
    assert len([ln for ln in exec_summary.text.splitlines() if ln.startswith("- ")]) >= 5
    assert all(c in allowed for s in report.sections for c in s.citations)
    assert report.citations_per_section["S1. James Webb Space Telescope"] >= 1
    assert report.word_count > 60
    assert 0 < report.meta["completion_tokens"] <= 300 + 16  # per-call budgets scale to the cap
    assert "| Section | Item | Content | Confidence |" in report.plan
    assert events[0] == "plan" and events[-1] == "citations" and "section" in events

    assert md_path.read_text(encoding="utf-8").startswith("# How was the James Webb")
    assert json_path.stat().st_size > 500


async def test_model_chooses_section_sources_by_constrained_decoding(bundled: TransformersBackend) -> None:
    evidence = collect_evidence(build_trajectory())
    writer = GuidedWriter(bundled, 0.0, GuidedConfig(sections=2, select_sources="model"))
    chosen = await writer.select(QUESTION, evidence)
    assert len(chosen) == 2 and chosen[0] is not chosen[1]
    assert {e.url for e in chosen} <= {e.url for e in evidence}
    assert writer.calls == 2  # one constrained choice per section
