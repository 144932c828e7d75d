"""The guided writer against the worst a weak model writes: placeholders, invented facts, canned
advice. The scripted model below answers each kind of prompt the guided writer sends the way the
bundled 135M model does on a bad day; the bundled model itself runs in test_guided_bundled."""

from __future__ import annotations

from fathom.core.config import Settings
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams, Usage
from fathom.models.chatml import render_chatml
from fathom.synthesis import Synthesizer
from fathom.synthesis.evidence import collect_evidence
from fathom.synthesis.grounding import grounding, is_placeholder
from fathom.synthesis.guided import SECTION_MAP_TITLE, GuidedConfig

from .claims import LIST_MARK_RE, cited_claims
from .traces import (
    ECHO,
    FAQ,
    MIRROR,
    MISSING,
    QUESTION,
    STSCI,
    WIKI,
    snapshot_texts,
    trajectory_with_failed_and_empty_reads,
)

# Answers by the instruction that ends each guided prompt.
ANSWERS = {
    "In two or three sentences": (
        "None found on the page. JWST launched on 25 December 2021 on an Ariane 5 rocket from Kourou. "
        "It was designed by SpaceX engineers in Florida during 2019 and 2020."
    ),
    "Summarise the text": "None found on the page.",
    "Give two practical recommendations": (
        "Read the cited sources in full before acting on this summary. "
        "Book a guided visit to the launch site in Florida next summer."
    ),
    "Write a conclusion": (
        "James Webb Space Telescope is among the sources found. "
        "The first deep field showed the galaxy cluster SMACS 0723 as it appeared 4.6 billion years ago. "
        "No relevant information was found about launch delays."
    ),
}


class WorstCaseWeakModel:
    name = "scripted-weak-model"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(text) // 4

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        self.prompts.append(prompt)
        text = next(a for key, a in ANSWERS.items() if key in prompt)
        return Completion(text=text, finish_reason="stop", stop=None, model=self.name,
                          usage=Usage(self.count_tokens(prompt), self.count_tokens(text)))

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return [await self.complete(p, params) for p in prompts]

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        return await self.complete(self.render_chat(messages), params)

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        return render_chatml(messages, add_generation_prompt)

    async def aclose(self) -> None:
        return None


async def test_only_page_words_and_supported_sentences_reach_a_guided_report() -> None:
    model = WorstCaseWeakModel()
    assert isinstance(model, ModelBackend)
    traj = trajectory_with_failed_and_empty_reads()
    report = await Synthesizer(model, Settings().synthesizer, guided=True,
                               page_texts=snapshot_texts).synthesize(QUESTION, traj)
    md = report.markdown
    pages = {e.url: e for e in collect_evidence(traj, snapshot_texts)}

    claims, uncited = cited_claims(md)
    assert uncited == [] and report.sentences_without_citation == 0
    for claim, urls in claims:
        assert any(grounding(claim, pages[u].grounds) for u in urls), (claim, urls)
    # the supported sentence of the model's survives, cited to the page that supports it ...
    s1 = md.split("## S1. ", 1)[1].split("\n## ", 1)[0]
    assert f"JWST launched on 25 December 2021 on an Ariane 5 rocket from Kourou. [{WIKI}]" in s1
    conclusion = md.split("## Conclusion", 1)[1]
    assert f"as it appeared 4.6 billion years ago. [{STSCI}]" in conclusion
    # ... and nothing else it wrote: no placeholder, invention or canned advice anywhere
    for line in md.splitlines():
        assert not is_placeholder(LIST_MARK_RE.sub("", line)), line
    for text in ("None found", "SpaceX", "among the sources found", "Read the cited sources", "Florida",
                 "No relevant information"):
        assert text not in md, text
    assert "## Recommendations" not in md  # no recommendation was supported: the section is left out
    assert report.meta["generated_sentences_dropped"] >= 6

    # never cited: the invented URL that gave a 404, the URL in its error text, the page where
    # the extractor found nothing; the extractor's Rationale and Summary never reach the prompt
    assert not {MISSING, MIRROR, FAQ} & set(report.sources)
    assert all("not instructions" not in p and "Cape Canaveral" not in p for p in model.prompts)
    assert report.invalid_citations_removed == 0

    # the section map is code's work and says so; it is not stored as the model's plan
    assert report.plan == ""
    assert report.guided_plan.startswith(SECTION_MAP_TITLE)
    assert f"| S1 | {WIKI} |" in report.guided_plan


async def test_five_bullets_only_from_supported_sentences() -> None:
    synth = Synthesizer(WorstCaseWeakModel(), Settings().synthesizer, guided=True, page_texts=snapshot_texts)
    report = await synth.synthesize(QUESTION, trajectory_with_failed_and_empty_reads())
    summary = report.markdown.split("## Executive Summary\n\n", 1)[1].split("\n\n", 1)[0]
    bullets = summary.splitlines()
    assert len(bullets) >= 5 and all(b.startswith("- ") for b in bullets)
    assert len(set(bullets)) == len(bullets)


async def test_a_page_where_the_extractor_found_nothing_grounds_no_section() -> None:
    """Room for a section per page read: the page whose extraction found nothing gets none (its
    placeholder was once a cited lead sentence), the page whose quotes are checked gets its one
    real sentence and not the quote the extractor's rationale made up."""
    traj = trajectory_with_failed_and_empty_reads()
    synth = Synthesizer(WorstCaseWeakModel(), Settings().synthesizer, guided=True,
                        guided_config=GuidedConfig(sections=5), page_texts=snapshot_texts)
    report = await synth.synthesize(QUESTION, traj)
    md = report.markdown
    assert "## S4. Evidence from space.com" in md and "## S5." not in md
    s4 = md.split("## S4. ", 1)[1].split("\n## ", 1)[0]
    assert ("The telescope lifted off from Europe's Spaceport in Kourou at 12:20 GMT on 25 December 2021. "
            f"[{ECHO}]") in s4
    assert FAQ not in md and "None found" not in md and "(none given)" not in md
    assert "Falcon 9" not in md and "Cape Canaveral" not in md
