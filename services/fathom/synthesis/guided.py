"""Guided synthesis for weak models (the bundled SmolLM2-135M): the report is assembled section
by section around short generations the model can manage.

We write the layout's headings ourselves and ground every body section on one page the research
read: its lead sentences are the page's own words (verbatim quotes), and the model's few
sentences follow only where the page's words support them (:mod:`fathom.synthesis.grounding`).
We append the citation ``[url]`` after each sentence ourselves, so a model that cannot copy a
URL still produces a report whose every citation is a page that was read. Executive Summary
bullets, Recommendations and Conclusion are short generations over the body, held to the same
rule, each sentence cited to the page that supports it.

What never reaches a report: the extractor's Rationale and Summary (its own unchecked words),
placeholders ("None found on the page."), and canned stand-ins for findings. Where nothing
supported is left to say the writer says nothing: a page without a verbatim sentence grounds no
section, fewer than five supported sentences make fewer bullets, and Recommendations is left out
when no recommendation is supported. The section map is built by code and stored as such
(``Report.guided_plan``), never as the model's plan. Sources used is rebuilt by the citation
check. Total generation stays small (``max_total_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fathom.core.errors import ModelError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams
from fathom.synthesis.evidence import Evidence
from fathom.synthesis.grounding import grounding, support

log = get_logger(__name__)

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]

SECTION_SYSTEM = (
    "You help write a research report. Use only facts stated in the source text you are given. "
    "Write plain, complete sentences without lists, links or headings."
)
_STOPS = ("<|im_end|>", "<|endoftext|>", "\n\n", "\n#", "<|im_start|>")
# A full stop ends a sentence only before a space and a capital (not in "1.5" or "J0723.3").
_SENTENCE_BREAK_RE = re.compile(r"(?<=[.!?。！？])[\"”')]?\s+(?=[A-Z0-9\"“(])|(?<=[。！？])")
_SENTENCE_END_RE = re.compile(r"[.!?。！？][\"”')]?$")
_WORDS_RE = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class GuidedConfig:
    sections: int = 3  # body sections, each grounded on one page that was read
    section_tokens: int = 100
    bullet_tokens: int = 32  # 0: no generation, each bullet is a section's first sentence
    recommendation_tokens: int = 70
    conclusion_tokens: int = 80
    max_total_tokens: int = 600  # hard cap on generated tokens; the per-part budgets scale down
    source_chars: int = 1_200  # the page's own words shown per section prompt
    sentences_per_section: int = 3
    select_sources: Literal["order", "model"] = "order"  # "model": constrained choice over URLs
    repetition_penalty: float = 1.2  # tiny models loop without it
    temperature: float | None = None  # None: the role's temperature
    seed: int | None = None  # a seeded request cannot share a batch with others (slower on CPU)

    def budgets(self, sections: int) -> tuple[int, int, int, int]:
        """(section, bullet, recommendation, conclusion) token budgets that fit the cap."""
        want = sections * (self.section_tokens + self.bullet_tokens)
        want += self.recommendation_tokens + self.conclusion_tokens
        scale = min(1.0, self.max_total_tokens / max(want, 1))
        return (
            max(16, int(self.section_tokens * scale)),
            int(self.bullet_tokens * scale),  # 0: bullets quote the sections instead
            max(12, int(self.recommendation_tokens * scale)),
            max(12, int(self.conclusion_tokens * scale)),
        )


@dataclass
class GuidedSection:
    title: str
    source: Evidence
    sentences: list[str]
    generated: bool  # True when a supported sentence of the model's made it into the section


@dataclass
class GuidedDraft:
    markdown: str
    section_map: str  # built by code from the pages read: not a model's plan
    sections: list[GuidedSection]
    completion_tokens: int
    model_calls: int
    dropped_sentences: int = 0  # generated sentences left out: not supported by any cited page


def clean_generation(text: str, max_sentences: int, allow_fragment: bool = True) -> list[str]:
    """Complete sentences from a short generation, with any URL, bracket or markup removed."""
    t = re.sub(r"^\s*#.*$", "", text, flags=re.M)  # headings are ours to write
    t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)  # a markdown link keeps its words
    t = re.sub(r"\[[^\]]*\]", "", t)  # the model's own citations are never trusted
    t = re.sub(r"https?://\S+?(?=[.,;:!?)]*(?:\s|$))", "", t)
    t = re.sub(r"\(\s*\)", "", t)
    t = re.sub(r"[#*_`>|]+", " ", t)
    t = re.sub(r"^\s*(?:[-+]|\d+[.)])\s+", "", t, flags=re.M)
    t = re.sub(r"\s+(?=[.,;:!?])", "", " ".join(t.split()))
    sentences = [p.strip() for p in _SENTENCE_BREAK_RE.split(t) if _SENTENCE_END_RE.search(p.strip())]
    sentences = [s for s in sentences if len(_WORDS_RE.findall(s)) >= 4]
    if not sentences and allow_fragment and len(_WORDS_RE.findall(t)) >= 8:
        sentences = [t.rstrip(",;: ") + "."]  # cut off by the token budget mid-sentence
    out: list[str] = []
    for s in sentences:
        if s not in out:  # small models repeat themselves verbatim
            out.append(s)
    return out[:max_sentences]


def _section_title(ev: Evidence) -> str:
    # "Page title - Site name": the site name is noise in a section heading
    title = ev.title.strip()
    shorter = re.sub(r"\s+[-|–—]\s+[^-|–—]{1,30}$", "", title)
    if len(shorter.split()) >= 2:
        title = shorter
    title = " ".join(re.sub(r"[\[\]#*|]", " ", title).split())
    if title.lower().startswith(("http://", "https://")) or not title:
        title = "Evidence from " + ev.host
    return title[:90].rstrip(" -:;,") or "Findings"


def _cite(sentences: list[str], url: str) -> str:
    return " ".join(f"{s} [{url}]" for s in sentences)


class GuidedWriter:
    def __init__(self, backend: ModelBackend, temperature: float, config: GuidedConfig) -> None:
        self.backend = backend
        self.temperature = temperature
        self.config = config
        self.tokens = 0
        self.calls = 0
        self.dropped = 0

    def _params(self, max_new_tokens: int, stop: tuple[str, ...] = _STOPS) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=self.temperature if self.config.temperature is None else self.config.temperature,
            repetition_penalty=self.config.repetition_penalty,
            stop=stop,
            seed=self.config.seed,
        )

    def _prompt(self, user: str, prefill: str = "") -> str:
        msgs = [ChatMessage("system", SECTION_SYSTEM), ChatMessage("user", user)]
        return self.backend.render_chat(msgs, add_generation_prompt=True) + prefill

    async def _batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        if not prompts:
            return []
        out = await self.backend.complete_batch(prompts, params)
        self.calls += 1
        for c in out:
            self.tokens += c.usage.completion_tokens or self.backend.count_tokens(c.text)
        return out

    def _keep(self, written: list[str], pages: list[Evidence]) -> list[tuple[str, Evidence]]:
        """Each generated sentence with the page that grounds it best; the rest are dropped."""
        kept: list[tuple[str, Evidence]] = []
        for sentence in written:
            best = max(pages, key=lambda e: support(sentence, e.grounds), default=None)
            if best is not None and grounding(sentence, best.grounds) is not None:
                kept.append((sentence, best))
            else:
                self.dropped += 1
        return kept

    async def select(self, question: str, evidence: list[Evidence]) -> list[Evidence]:
        """The pages the body sections are grounded on: read pages with a verbatim sentence."""
        usable = [e for e in evidence if e.sentences(1)]
        n = min(self.config.sections, len(usable))
        if self.config.select_sources == "order" or n <= 1:
            return usable[:n]
        # Constrained decoding: the model can only answer with one of the remaining URLs.
        chosen: list[Evidence] = []
        pool = usable[: max(n * 3, 6)]
        for _ in range(n):
            remaining = [e for e in pool if e not in chosen]
            listing = "\n".join(f"- {e.url} : {_section_title(e)}" for e in remaining)
            prompt = self._prompt(
                f"Question: {question}\n\nSources:\n{listing}\n\n"
                "Which source should the next section of the report use? Answer with its URL."
            )
            params = SamplingParams(max_new_tokens=64, temperature=0.0,
                                    choices=tuple(e.url for e in remaining))
            c = (await self._batch([prompt], params))[0]
            pick = next((e for e in remaining if e.url == c.text.strip()), remaining[0])
            chosen.append(pick)
        return chosen

    async def write(self, question: str, evidence: list[Evidence], emit: Emit) -> GuidedDraft:
        cfg = self.config
        chosen = await self.select(question, evidence)
        if not chosen:
            raise ModelError(
                f"none of the {len(evidence)} page(s) read gave a sentence of its own words to ground "
                "a report on; the answer stands, but no report is written"
            )
        sec_tok, bullet_tok, rec_tok, concl_tok = cfg.budgets(len(chosen))

        # The model sees the page's own words only: the extractor's Rationale and Summary are
        # unchecked model text, and a small model copies what it is shown.
        prompts = [
            self._prompt(
                f"Question: {question}\n\nSource: {_section_title(ev)}\n"
                f"{' '.join(ev.sentences())[: cfg.source_chars]}\n\n"
                "In two or three sentences, state what this source says that helps answer the question."
            )
            for ev in chosen
        ]
        sections: list[GuidedSection] = []
        for ev, c in zip(chosen, await self._batch(prompts, self._params(sec_tok)), strict=True):
            written = clean_generation(c.text, cfg.sentences_per_section)
            kept = [x for x, page in self._keep(written, [ev]) if page is ev]
            # The page's own sentences lead; generated ones follow only where its words support
            # them, so a weak model cannot put invented facts behind a real citation.
            sents = ev.sentences(2)
            extra = [x for x in kept if x not in sents]
            sents = (sents + extra)[: max(2, cfg.sentences_per_section)]
            generated = any(x in sents for x in extra)
            sections.append(GuidedSection(_section_title(ev), ev, sents, generated))
            await emit("section", {"index": len(sections), "title": sections[-1].title, "url": ev.url,
                                   "generated": generated})

        # Executive summary: one generated sentence per section, if the section's page supports it.
        bullet_prompts = [
            self._prompt(f"Text: {' '.join(s.sentences)}\n\nSummarise the text in one short sentence.")
            for s in sections
        ] if bullet_tok else []
        summaries = await self._batch(bullet_prompts, self._params(bullet_tok)) if bullet_prompts else []
        bullets: list[tuple[str, str]] = []
        for i, s in enumerate(sections):
            got = clean_generation(summaries[i].text, 1, allow_fragment=False) if summaries else []
            fit = [x for x, page in self._keep(got, [s.source]) if x not in s.sentences]
            bullets.append((fit[0] if fit else s.sentences[0], s.source.url))
        # The layout asks for five bullets or more: add the sections' other sentences, then more of
        # their pages' own words, then those of other pages read. Fewer is honest; filler is not.
        spare = [(x, s.source.url) for s in sections for x in s.sentences[1:]]
        spare += [(q, s.source.url) for s in sections for q in s.source.sentences(4)]
        spare += [(q, e.url) for e in evidence if e not in chosen for q in e.sentences(1)]
        for extra_sentence, url in spare:
            if len(bullets) >= 5:
                break
            if all(extra_sentence != b for b, _ in bullets):
                bullets.append((extra_sentence, url))
        await emit("section", {"title": "Executive Summary", "bullets": len(bullets)})

        findings = " ".join(" ".join(s.sentences) for s in sections)[:1_500]
        closing = await self._batch(
            [
                self._prompt(f"Question: {question}\n\nFindings: {findings}\n\n"
                             "Give two practical recommendations based on these findings."),
                self._prompt(f"Question: {question}\n\nFindings: {findings}\n\n"
                             "Write a conclusion of three sentences that answers the question."),
            ],
            self._params(max(rec_tok, concl_tok), stop=_STOPS[:2] + _STOPS[3:]),
        )
        pages = [s.source for s in sections]
        # A closing sentence is cited to the section page whose words support it; advice that
        # goes beyond the pages' words is left out, and so is the whole section if nothing is left.
        recs = [(x, p.url) for x, p in self._keep(clean_generation(closing[0].text, 3), pages)]
        conclusion = [(x, p.url) for x, p in self._keep(clean_generation(closing[1].text, 6), pages)]
        for s in sections:  # a conclusion has at least three sentences: the pages' own lead ones
            if len(conclusion) >= 3:
                break
            if all(s.sentences[0] != c for c, _ in conclusion):
                conclusion.append((s.sentences[0], s.source.url))
        await emit("section", {"title": "Conclusion", "sentences": len(conclusion)})

        lines = [f"# {' '.join(question.split())[:150]}", "", "## Executive Summary", ""]
        lines += [f"- {b} [{u}]" for b, u in bullets]
        for i, s in enumerate(sections, 1):
            lines += ["", f"## S{i}. {s.title}", "", _cite(s.sentences, s.source.url)]
        if recs:
            lines += ["", "## Recommendations", ""]
            lines += [f"{i}. {r} [{u}]" for i, (r, u) in enumerate(recs, 1)]
        lines += ["", "## Conclusion", "", " ".join(f"{c} [{u}]" for c, u in conclusion[:6])]
        log.info("guided report drafted", sections=len(sections), tokens=self.tokens, calls=self.calls,
                 dropped_sentences=self.dropped)
        return GuidedDraft(
            markdown="\n".join(lines) + "\n",
            section_map=section_map(sections, evidence),
            sections=sections,
            completion_tokens=self.tokens,
            model_calls=self.calls,
            dropped_sentences=self.dropped,
        )


SECTION_MAP_TITLE = "Section map built by the guided writer (code, not a model's plan)"


def section_map(sections: list[GuidedSection], evidence: list[Evidence]) -> str:
    """Which page grounds which section, and the page's first verbatim sentence. Written by code:
    a model too small to plan wrote no plan, and none is claimed for it."""
    used = {s.source.url: f"S{i}" for i, s in enumerate(sections, 1)}
    rows = []
    for ev in evidence:
        first = (ev.sentences(1) or ["(no verbatim sentence)"])[0][:120].replace("|", "/")
        rows.append(f"| {used.get(ev.url, '-')} | {ev.url} | {first} |")
    return (
        f"{SECTION_MAP_TITLE}:\n| Section | Page read | First verbatim sentence |\n| --- | --- | --- |\n"
        + "\n".join(rows)
    )
