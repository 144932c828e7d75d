"""The extractor's flow around the model: retries, compression and truncation fallbacks, quote
checking, chat path, context fitting and the cache. The model here is a scripted ``ModelBackend``
(our own seam) so that each failure mode can be produced on demand; the real model is exercised in
``test_extract_model.py``."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from fathom.core.config import BUNDLED_MODEL, ExtractSettings, ModelRole
from fathom.core.errors import ModelError
from fathom.models.base import ChatMessage, Completion, SamplingParams, Usage
from fathom.tools.extract import EvidenceExtractor, ExtractionCache, format_query_url_result
from fathom.tools.extract.choose import fuse_rankings
from fathom.tools.extract.prompt import COMPRESS_SYSTEM

PAGE = (
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering "
    "research on radioactivity. She was the first woman to win a Nobel Prize. She won the Nobel Prize "
    "in Physics in 1903 and the Nobel Prize in Chemistry in 1911. Her husband Pierre Curie shared the "
    "first prize. She founded the Curie Institutes in Paris and in Warsaw.\n"
    "She died in 1934 at the sanatorium of Sancellemoz in Passy, France."
)
PRIZES = "She won the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911."
GOAL = "When did Marie Curie win her Nobel Prizes?"
URL = "http://127.0.0.1:9/wiki/Marie_Curie"

Stage = str  # "rationale" | "evidence" | "summary" | "compress" | "chat"


class ScriptedBackend:
    """A ``ModelBackend`` whose answer for each stage comes from a script; tokens are words."""

    def __init__(self, script: Callable[[Stage, int], str], name: str = "scripted") -> None:
        self.name = name
        self.script = script
        self.calls: dict[Stage, int] = {}

    def _stage(self, prompt: str) -> Stage:
        if COMPRESS_SYSTEM in prompt:
            return "compress"
        for stage, tail in (
            ("rationale", "Rationale:"),
            ("evidence", "Evidence:\n"),
            ("summary", "Summary:"),
        ):
            if prompt.endswith(tail):
                return stage
        raise AssertionError(f"unexpected prompt tail: {prompt[-40:]!r}")

    def _reply(self, stage: Stage, params: SamplingParams) -> Completion:
        n = self.calls.get(stage, 0) + 1
        self.calls[stage] = n
        text = self.script(stage, n)
        words = text.split(" ")
        if len(words) > params.max_new_tokens:
            return Completion(text=" ".join(words[: params.max_new_tokens]), finish_reason="length")
        return Completion(text=text, finish_reason="stop", usage=Usage(completion_tokens=len(words)))

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        return self._reply(self._stage(prompt), params)

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return [await self.complete(p, params) for p in prompts]

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        stage = "compress" if messages[0].content == COMPRESS_SYSTEM else "chat"
        return self._reply(stage, params)

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"\S+", text))

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        body = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
        return body + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    async def aclose(self) -> None:
        return None


def _good(stage: Stage, n: int) -> str:
    return {
        "rationale": " The page gives the years of both prizes.\n",
        "evidence": f'- "{PRIZES}"\n',
        "summary": " Physics in 1903 and Chemistry in 1911.",
    }[stage]


def _extractor(
    backend: ScriptedBackend,
    cache: ExtractionCache | None = None,
    *,
    max_new_tokens: int = 1024,
    context_tokens: int = 8192,
    api: Literal["completions", "chat"] = "completions",
    **settings: Any,
) -> EvidenceExtractor:
    role = ModelRole(
        model="scripted-model",
        temperature=0.0,
        max_new_tokens=max_new_tokens,
        context_tokens=context_tokens,
        api=api,
    )
    return EvidenceExtractor(backend, role, ExtractSettings(**settings), cache)


async def test_well_formed_answer_in_one_attempt() -> None:
    ev = await _extractor(ScriptedBackend(_good)).extract(URL, GOAL, PAGE)
    assert ev.method == "extract" and ev.attempts == 1 and ev.evidence_source == "model"
    assert ev.rationale == "The page gives the years of both prizes."
    assert ev.evidence == [
        "She won the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911."
    ]
    assert ev.summary == "Physics in 1903 and Chemistry in 1911."
    assert ev.dropped_quotes == 0


async def test_fabricated_quotes_are_dropped_and_replaced_by_page_sentences() -> None:
    def script(stage: Stage, n: int) -> str:
        if stage == "evidence":
            return '"Curie won three Nobel Prizes in 1920."\n"She was awarded in 1905 by the King."\n'
        return _good(stage, n)

    ev = await _extractor(ScriptedBackend(script)).extract(URL, GOAL, PAGE)
    assert ev.dropped_quotes == 2
    assert ev.evidence_source == "lexical"
    assert ev.evidence and all(q in PAGE for q in ev.evidence)
    assert any("1903" in q for q in ev.evidence)
    assert "word overlap" in format_query_url_result(URL, GOAL, ev)


async def test_some_quotes_kept_some_dropped() -> None:
    def script(stage: Stage, n: int) -> str:
        if stage == "evidence":
            return "She was the first woman to win a Nobel Prize.\nShe invented the telephone.\n"
        return _good(stage, n)

    ev = await _extractor(ScriptedBackend(script)).extract(URL, GOAL, PAGE)
    assert ev.evidence == ["She was the first woman to win a Nobel Prize."]
    assert ev.dropped_quotes == 1 and ev.evidence_source == "model"


async def test_explicit_none_is_respected() -> None:
    def script(stage: Stage, n: int) -> str:
        return {"rationale": " Not relevant.", "evidence": "None", "summary": " The page does not say."}[
            stage
        ]

    ev = await _extractor(ScriptedBackend(script)).extract(URL, GOAL, PAGE)
    assert ev.evidence == [] and ev.evidence_source == "none" and ev.dropped_quotes == 0


async def test_retry_then_success() -> None:
    def script(stage: Stage, n: int) -> str:
        if stage == "summary" and n == 1:
            return "### ***"  # no words: the first attempt has no usable summary
        return _good(stage, n)

    backend = ScriptedBackend(script)
    ev = await _extractor(backend).extract(URL, GOAL, PAGE)
    assert ev.method == "extract" and ev.attempts == 2
    assert ev.summary == "Physics in 1903 and Chemistry in 1911."


async def test_unparseable_answers_fall_back_to_compression() -> None:
    def script(stage: Stage, n: int) -> str:
        if stage == "compress":
            return "Marie Curie: Nobel Physics 1903, Chemistry 1911; died 1934."
        return "<<>> ## --"

    backend = ScriptedBackend(script)
    ev = await _extractor(backend, attempts=3).extract(URL, GOAL, PAGE)
    assert ev.method == "compress" and ev.attempts == 3
    assert backend.calls["summary"] == 3 and backend.calls["compress"] == 1
    assert ev.summary == "Marie Curie: Nobel Physics 1903, Chemistry 1911; died 1934."
    assert "compression" in ev.rationale
    assert all(q in PAGE for q in ev.evidence)


async def test_compression_failure_falls_back_to_truncation() -> None:
    backend = ScriptedBackend(lambda stage, n: "")
    ev = await _extractor(backend, attempts=2, fallback_tokens=20).extract(URL, GOAL, PAGE)
    assert ev.method == "truncate" and ev.attempts == 2
    assert PAGE.startswith(ev.summary)
    assert 10 <= backend.count_tokens(ev.summary) <= 20
    assert "20 tokens" in ev.rationale


async def test_truncation_keeps_a_short_page_whole() -> None:
    ev = await _extractor(ScriptedBackend(lambda s, n: ""), attempts=1).extract(URL, GOAL, PAGE)
    assert ev.method == "truncate" and ev.summary == PAGE


# A long page: 5,000 numbered words, about 39,000 characters, far past the 15,000 the model reads.
LONG_PAGE = " ".join(f"fact{i:04d}" for i in range(5_000))


async def test_truncation_fallback_cuts_the_whole_page_not_the_first_page_chars() -> None:
    """The original: extraction on the first 15k characters; when it fails, plain truncation of the
    page text to about 6,000 tokens. Cutting an already cut text would never truncate at all."""
    backend = ScriptedBackend(lambda stage, n: "")
    ex = _extractor(backend, attempts=1, context_tokens=100_000, fallback_tokens=4_000)
    ev = await ex.extract(URL, "Which facts are listed?", LONG_PAGE)
    assert ev.method == "truncate"
    assert LONG_PAGE.startswith(ev.summary)
    assert len(ev.summary) > ex.settings.page_chars  # reaches past what the model was shown
    assert 3_990 <= backend.count_tokens(ev.summary) <= 4_000


async def test_compression_fallback_reads_past_the_first_page_chars() -> None:
    prompts: list[str] = []

    class Recording(ScriptedBackend):
        async def complete(self, prompt: str, params: SamplingParams) -> Completion:
            prompts.append(prompt)
            return await super().complete(prompt, params)

    backend = Recording(lambda stage, n: "the page lists numbered facts" if stage == "compress" else "")
    ev = await _extractor(backend, attempts=1, context_tokens=100_000).extract(URL, "Which facts?", LONG_PAGE)
    assert ev.method == "compress"
    answer_prompt, compress_prompt = prompts[0], prompts[-1]
    assert COMPRESS_SYSTEM in compress_prompt
    assert "fact4999" in compress_prompt and "fact4999" not in answer_prompt


async def test_compression_fallback_is_cut_to_the_models_window() -> None:
    prompts: list[str] = []

    class Recording(ScriptedBackend):
        async def complete(self, prompt: str, params: SamplingParams) -> Completion:
            prompts.append(prompt)
            return await super().complete(prompt, params)

    backend = Recording(lambda stage, n: "the page lists numbered facts" if stage == "compress" else "")
    ev = await _extractor(backend, attempts=1, context_tokens=3_000, max_new_tokens=200).extract(
        URL, "Which facts?", LONG_PAGE
    )
    assert ev.method == "compress"
    assert backend.count_tokens(prompts[-1]) <= 3_000 - 200


async def _temperatures_of_failing_attempts(**settings: Any) -> list[float]:
    seen: list[float] = []

    class Recording(ScriptedBackend):
        async def complete(self, prompt: str, params: SamplingParams) -> Completion:
            if self._stage(prompt) == "rationale":
                seen.append(params.temperature)
            return await super().complete(prompt, params)

    def script(stage: Stage, n: int) -> str:
        if stage in ("summary", "compress"):
            return "### ***"  # never a usable summary, so every attempt is spent
        return _good(stage, n)

    ev = await _extractor(Recording(script), attempts=3, **settings).extract(URL, GOAL, PAGE)
    assert ev.attempts == 3 and ev.method == "truncate"
    return seen


async def test_retries_sample_at_the_roles_temperature_by_default() -> None:
    # The original: GPT-4.1-mini at temperature 0, three attempts.
    assert await _temperatures_of_failing_attempts() == [0.0, 0.0, 0.0]


async def test_retries_sample_at_the_configured_retry_temperature() -> None:
    assert await _temperatures_of_failing_attempts(retry_temperature=0.3) == [0.0, 0.3, 0.3]


def test_bad_extract_settings_are_refused() -> None:
    from pydantic import ValidationError

    for bad in (
        {"attempts": 0}, {"retry_temperature": -1.0}, {"fallback_tokens": 0}, {"choice_shortlist": 0}
    ):
        with pytest.raises(ValidationError):
            ExtractSettings(**bad)


class FailingBackend(ScriptedBackend):
    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        raise ModelError("extractor server unreachable")


async def test_model_error_falls_back_to_truncation_and_is_not_cached(tmp_path: Path) -> None:
    cache = ExtractionCache.in_dir(tmp_path)
    ev = await _extractor(FailingBackend(_good), cache).extract(URL, GOAL, PAGE)
    assert ev.method == "truncate" and ev.attempts == 1
    assert "backend failed" in ev.rationale
    assert len(cache) == 0


async def test_chat_api_single_call_parsed_tolerantly() -> None:
    def script(stage: Stage, n: int) -> str:
        assert stage == "chat"
        return (
            '**Rationale**: relevant.\n\n**Evidence**:\n- "Her husband Pierre Curie shared the first '
            'prize."\n\n**Summary**: 1903 and 1911.'
        )

    ev = await _extractor(ScriptedBackend(script), api="chat").extract(URL, GOAL, PAGE)
    assert ev.evidence == ["Her husband Pierre Curie shared the first prize."]
    assert ev.summary == "1903 and 1911." and ev.rationale == "relevant."


async def test_only_the_first_page_chars_are_read() -> None:
    seen: list[str] = []

    class Recording(ScriptedBackend):
        async def complete(self, prompt: str, params: SamplingParams) -> Completion:
            seen.append(prompt)
            return await super().complete(prompt, params)

    await _extractor(Recording(_good), page_chars=100).extract(URL, GOAL, PAGE)
    assert PAGE[:100] in seen[0] and PAGE[:101] not in seen[0]


async def test_page_is_shortened_to_fit_a_small_context() -> None:
    long_page = " ".join(f"word{i}" for i in range(3000))
    prompts: list[str] = []

    class Recording(ScriptedBackend):
        async def complete(self, prompt: str, params: SamplingParams) -> Completion:
            prompts.append(prompt)
            return await super().complete(prompt, params)

    backend = Recording(lambda s, n: {"rationale": " r.", "evidence": "word10 word11", "summary": " s."}[s])
    ev = await _extractor(backend, context_tokens=600, max_new_tokens=100).extract(URL, GOAL, long_page)
    assert ev.evidence == ["word10 word11"] and ev.method == "extract"
    assert 300 < backend.count_tokens(prompts[0]) <= 600 - 100


async def test_empty_page_needs_no_model() -> None:
    backend = ScriptedBackend(_good)
    ev = await _extractor(backend).extract(URL, GOAL, "   \n ")
    assert ev.evidence == [] and ev.attempts == 0 and backend.calls == {}


async def test_cache_hit_returns_same_evidence_without_generation(tmp_path: Path) -> None:
    cache = ExtractionCache.in_dir(tmp_path)
    backend = ScriptedBackend(_good)
    ex = _extractor(backend, cache)
    first = await ex.extract(URL, GOAL, PAGE, page_sha256="ab" * 32)
    calls_after_first = dict(backend.calls)
    second = await ex.extract(URL, "  " + GOAL + " ", PAGE, page_sha256="ab" * 32)
    assert second.cached and not first.cached
    assert (second.rationale, second.evidence, second.summary) == (
        first.rationale,
        first.evidence,
        first.summary,
    )
    assert backend.calls == calls_after_first
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    # Another goal, another prompt version or another model is another entry.
    await ex.extract(URL, "Where did she die?", PAGE)
    await _extractor(backend, cache, prompt_version="another").extract(URL, GOAL, PAGE)
    assert len(cache) == 3


async def test_cache_survives_reopening(tmp_path: Path) -> None:
    ex = _extractor(ScriptedBackend(_good), ExtractionCache.in_dir(tmp_path))
    first = await ex.extract(URL, GOAL, PAGE)
    reopened = ExtractionCache.in_dir(tmp_path)
    backend = ScriptedBackend(lambda s, n: pytest.fail("the model must not be called on a cache hit"))
    again = await _extractor(backend, reopened).extract(URL, GOAL, PAGE)
    assert again.cached and again.evidence == first.evidence


async def test_cache_disabled_by_settings(tmp_path: Path) -> None:
    cache = ExtractionCache.in_dir(tmp_path)
    role = ModelRole(model="scripted-model", temperature=0.0)
    ex = EvidenceExtractor(ScriptedBackend(_good), role, ExtractSettings(cache=False), cache)
    await ex.extract(URL, GOAL, PAGE)
    assert len(cache) == 0


def test_weak_models_rank_page_sentences_strong_ones_write_the_three_parts() -> None:
    def protocol(role: ModelRole, **settings: Any) -> str:
        return EvidenceExtractor(ScriptedBackend(_good), role, ExtractSettings(**settings)).protocol

    assert protocol(ModelRole(model=BUNDLED_MODEL)) == "sentence_choice"
    assert protocol(ModelRole(backend="openai", model="gpt-4.1-mini")) == "free_text"
    assert protocol(ModelRole(model="FractalAIResearch/Fathom-Search-4B")) == "free_text"
    assert protocol(ModelRole(model=BUNDLED_MODEL), quote_protocol="free_text") == "free_text"
    assert protocol(ModelRole(model="scripted-model"), quote_protocol="sentence_choice") == "sentence_choice"


async def test_sentence_choice_with_a_failing_backend_falls_back_and_is_not_cached(tmp_path: Path) -> None:
    cache = ExtractionCache.in_dir(tmp_path)
    role = ModelRole(model="scripted-model", temperature=0.0)
    settings = ExtractSettings(quote_protocol="sentence_choice")
    ex = EvidenceExtractor(FailingBackend(_good), role, settings, cache)
    ev = await ex.extract(URL, GOAL, PAGE)
    assert ev.method == "truncate" and "backend failed" in ev.rationale
    assert ev.evidence_source == "lexical" and all(q in PAGE for q in ev.evidence)
    assert len(cache) == 0


def test_rankings_are_fused_by_reciprocal_rank() -> None:
    assert fuse_rankings([0, 1, 2, 3], [0, 1, 2, 3]) == [0, 1, 2, 3]
    # Second by overlap and first by the model beats first by overlap and last by the model.
    assert fuse_rankings([0, 1, 2, 3], [1, 2, 3, 0])[0] == 1
    # A tie keeps the overlap order.
    assert fuse_rankings([0, 1], [1, 0]) == [0, 1]
