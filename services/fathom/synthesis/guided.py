"""Guided synthesis for weak models (the bundled SmolLM2-135M): the report is assembled section
by section around short generations the model can manage.

We prefill the layout's headings ourselves, ground every body section on one source from the
trace (its tool-response text goes into the prompt), let the model write a few sentences, and
append the citation ``[url]`` after each sentence ourselves — so a model that cannot copy a URL
still produces a report whose every citation is a trace URL. Executive Summary bullets,
Recommendations and Conclusion are short generations over the body already written. Sources
used is rebuilt by the citation check. Total generation stays small (``max_total_tokens``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams
from fathom.synthesis.evidence import Evidence, relevance

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
    sections: int = 3  # body sections, each grounded on one source
    section_tokens: int = 100
    bullet_tokens: int = 32  # 0: no generation, each bullet is a section's first sentence
    recommendation_tokens: int = 70
    conclusion_tokens: int = 80
    max_total_tokens: int = 600  # hard cap on generated tokens; the per-part budgets scale down
    source_chars: int = 1_200  # grounding text per section prompt
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
    generated: bool  # False: the model gave nothing usable and we quoted the source instead


@dataclass
class GuidedDraft:
    markdown: str
    plan: str
    sections: list[GuidedSection]
    completion_tokens: int
    model_calls: int


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


_QUOTE_LINE_RE = re.compile(r'^\s*[-*]?\s*["“](.+?)["”]\s*$', re.M)
_LABEL_RE = re.compile(r"^\s*(\*\*)?(rationale|evidence|summary)(\*\*)?\s*:\s*", re.I | re.M)


def source_sentences(ev: Evidence, limit: int) -> list[str]:
    """Verbatim sentences from the source: the extractor's evidence quotes when there are any,
    else its text without the rationale. Used where the model gives nothing usable."""
    quotes = _QUOTE_LINE_RE.findall(ev.text)
    if quotes:
        return clean_generation(" ".join(quotes), limit, allow_fragment=False)
    body = "\n".join(ln for ln in ev.text.splitlines() if not ln.lower().lstrip("* ").startswith("rationale"))
    return clean_generation(_LABEL_RE.sub("", body).replace("\n", " "), limit, allow_fragment=False)


def _section_title(ev: Evidence) -> str:
    # "Page title - Site name": the site name is noise in a section heading
    title = ev.title.strip()
    shorter = re.sub(r"\s+[-|–—]\s+[^-|–—]{1,30}$", "", title)
    if len(shorter.split()) >= 2:
        title = shorter
    title = " ".join(re.sub(r"[\[\]#*|]", " ", title).split())
    if title.lower().startswith(("http://", "https://")) or not title:
        title = "Evidence from " + re.sub(r"^https?://(www\.)?", "", ev.url).split("/")[0]
    return title[:90].rstrip(" -:;,") or "Findings"


def _cite(sentences: list[str], url: str) -> str:
    return " ".join(f"{s} [{url}]" for s in sentences)


def _overlap(a: str, b: str) -> float:
    wa = {w.lower() for w in _WORDS_RE.findall(a) if len(w) > 3}
    wb = {w.lower() for w in _WORDS_RE.findall(b) if len(w) > 3}
    return len(wa & wb) / len(wa) if wa else 0.0


# A generated sentence stays only if most of its content words occur in the text it was written
# from: a small model's fluent inventions (names, dates, places) fail this test, paraphrases pass.
SUPPORT_THRESHOLD = 0.6


def supported(sentence: str, source_text: str, threshold: float = SUPPORT_THRESHOLD) -> bool:
    return _overlap(sentence, source_text) >= threshold


class GuidedWriter:
    def __init__(self, backend: ModelBackend, temperature: float, config: GuidedConfig) -> None:
        self.backend = backend
        self.temperature = temperature
        self.config = config
        self.tokens = 0
        self.calls = 0

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

    async def select(self, question: str, evidence: list[Evidence]) -> list[Evidence]:
        """The sources the body sections are grounded on."""
        n = min(self.config.sections, len(evidence))
        pages = [e for e in evidence if e.kind == "page"]
        hits = sorted((e for e in evidence if e.kind == "search"),
                      key=lambda e: -relevance(question, e.title + " " + e.text))
        ranked = pages + hits
        if self.config.select_sources == "order" or n <= 1:
            return ranked[:n]
        # Constrained decoding: the model can only answer with one of the remaining URLs.
        chosen: list[Evidence] = []
        pool = ranked[: max(n * 3, 6)]
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
        sec_tok, bullet_tok, rec_tok, concl_tok = cfg.budgets(len(chosen))

        prompts = [
            self._prompt(
                f"Question: {question}\n\nSource: {_section_title(ev)}\n"
                f"{ev.text[: cfg.source_chars]}\n\n"
                "In two or three sentences, state what this source says that helps answer the question."
            )
            for ev in chosen
        ]
        sections: list[GuidedSection] = []
        for ev, c in zip(chosen, await self._batch(prompts, self._params(sec_tok)), strict=True):
            written = clean_generation(c.text, cfg.sentences_per_section)
            kept = [x for x in written if supported(x, ev.text)]
            generated = bool(kept)
            # The source's own verbatim sentences lead; generated ones follow only where the source
            # supports them, so a weak model cannot put invented facts behind a real citation.
            sents = source_sentences(ev, 2)
            sents += [x for x in kept if x not in sents]
            sents = sents[: max(2, cfg.sentences_per_section)]
            sents = sents or [f"{_section_title(ev)} is among the sources found."]
            sections.append(GuidedSection(_section_title(ev), ev, sents, generated))
            await emit("section", {"index": len(sections), "title": sections[-1].title, "url": ev.url,
                                   "generated": generated})

        # Executive summary: one generated sentence per section, cited to that section's source.
        bullet_prompts = [
            self._prompt(f"Text: {' '.join(s.sentences)}\n\nSummarise the text in one short sentence.")
            for s in sections
        ] if bullet_tok else []
        summaries = await self._batch(bullet_prompts, self._params(bullet_tok)) if bullet_prompts else []
        bullets: list[tuple[str, str]] = []
        for i, s in enumerate(sections):
            got = clean_generation(summaries[i].text, 1, allow_fragment=False) if summaries else []
            got = [x for x in got if supported(x, " ".join(s.sentences) + " " + s.source.text)]
            bullets.append((got[0] if got else s.sentences[0], s.source.url))
        # the layout asks for at least five bullets: add the sections' other sentences, then
        # verbatim evidence from the sources, then from other pages the research read
        spare = [(x, s.source.url) for s in sections for x in s.sentences[1:]]
        spare += [(q, s.source.url) for s in sections for q in source_sentences(s.source, 3)]
        spare += [(q, e.url) for e in evidence if e.kind == "page" and e not in chosen
                  for q in source_sentences(e, 1)]
        for extra, url in spare:
            if len(bullets) >= 5:
                break
            if all(extra != b for b, _ in bullets):
                bullets.append((extra, url))
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
        # Advice may go beyond the sources' words, but not invent facts: half its words must be found.
        recs = [x for x in clean_generation(closing[0].text, 3) if supported(x, findings, threshold=0.5)]
        conclusion = [x for x in clean_generation(closing[1].text, 6) if supported(x, findings)]
        for s in sections:  # a conclusion has at least three sentences
            if len(conclusion) >= 3:
                break
            if s.sentences[0] not in conclusion:
                conclusion.append(s.sentences[0])
        await emit("section", {"title": "Conclusion", "sentences": len(conclusion)})

        def attributed(sentence: str) -> str:
            """A closing sentence is cited to the section it draws most of its words from."""
            best = max(sections, key=lambda s: _overlap(sentence, " ".join(s.sentences)), default=None)
            if best is not None and _overlap(sentence, " ".join(best.sentences)) >= 0.3:
                return f"{sentence} [{best.source.url}]"
            return sentence

        lines = [f"# {' '.join(question.split())[:150]}", "", "## Executive Summary", ""]
        lines += [f"- {b} [{u}]" for b, u in bullets]
        for i, s in enumerate(sections, 1):
            lines += ["", f"## S{i}. {s.title}", "", _cite(s.sentences, s.source.url)]
        lines += ["", "## Recommendations", ""]
        lines += [f"{i}. {attributed(r)}" for i, r in enumerate(recs, 1)] or [
            "1. Read the cited sources in full before acting on this summary."
        ]
        lines += ["", "## Conclusion", "", " ".join(attributed(c) for c in conclusion[:6])]
        log.info("guided report drafted", sections=len(sections), tokens=self.tokens, calls=self.calls)
        return GuidedDraft(
            markdown="\n".join(lines) + "\n",
            plan=guided_plan(question, sections, evidence),
            sections=sections,
            completion_tokens=self.tokens,
            model_calls=self.calls,
        )


def guided_plan(question: str, sections: list[GuidedSection], evidence: list[Evidence]) -> str:
    """The plan, written by us from the evidence map rather than by a model too small to plan."""
    used = {s.source.url: f"S{i}" for i, s in enumerate(sections, 1)}
    rows = []
    for ev in evidence:
        content = " ".join(ev.text.split())[:100].replace("|", "/")
        confidence = "high" if ev.kind == "page" else "medium"
        rows.append(f"| {used.get(ev.url, '-')} | {ev.url} | {content} | {confidence} |")
    subs = "\n".join(f"{i}. What does {s.title} tell us about: {question}?"
                     for i, s in enumerate(sections, 1))
    return (
        f"Sub-questions:\n{subs or '1. ' + question}\n\n"
        "Evidence map:\n| Section | Item | Content | Confidence |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n\nInsight strategies:\n"
        "1. Put the sources side by side and note where they agree.\n"
        "2. Flag claims that rest on a single source.\n"
        "3. Prefer pages that were read over search snippets.\n"
        "4. Turn the findings into concrete next steps."
    )
