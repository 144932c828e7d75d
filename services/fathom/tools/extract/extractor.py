"""``EvidenceExtractor``: page text + goal -> ``Evidence`` through the extractor model.

Flow, as in the original: the first ``page_chars`` characters of the page go to the model, which
has up to ``attempts`` tries to answer in three parts, Rationale / Evidence / Summary; if none
parses, a model compression of the whole page to about 30%; if that fails too, the start of the
whole page cut to about ``fallback_tokens`` tokens. On top of the original: the answer is written
in three prefilled stages (so a small model cannot skip a part), every quote is checked against the
page, and results are cached. Models too weak to quote at all (the bundled one) do not write the
answer: their quotes are page sentences they rank (``choose.py``, protocol ``sentence_choice``).

Deviations, each with its setting: retries sample at ``retry_temperature`` when one is set (the
original retried at 0); the compression reads as much of the page as the model's window holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from fathom.core.config import ExtractSettings, ModelRole, extractor_budget, is_weak_model
from fathom.core.errors import ModelError
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams
from fathom.tools.extract import prompt as P
from fathom.tools.extract.answer import ParsedAnswer, assemble_answer, parse_answer
from fathom.tools.extract.cache import ExtractionCache, cache_key, text_sha256
from fathom.tools.extract.choose import choose_sentences
from fathom.tools.extract.evidence import Evidence
from fathom.tools.extract.verify import PageMatcher, check_quotes, relevant_sentences

log = get_logger(__name__)

PromptBuilder = Callable[[str, str, str], list[ChatMessage]]  # (url, goal, page text) -> messages

MIN_COMPRESSION_CHARS = 20
LEXICAL_QUOTES = 3
# A rationale is a sentence or two; a cap keeps a looping small model from spending the answer on it.
RATIONALE_MAX_TOKENS = 128


def cut_at_stops(text: str, stops: tuple[str, ...]) -> str:
    """Text up to the earliest stop string (servers may ignore some of a long stop list)."""
    cut = len(text)
    for s in stops:
        pos = text.find(s)
        if 0 <= pos < cut:
            cut = pos
    return text[:cut]


def _drop_partial_line(text: str, completion: Completion) -> str:
    # A stage that ran out of tokens ends mid-line; a half quote would only be dropped later anyway.
    if completion.finish_reason == "length" and "\n" in text.strip():
        return text.rstrip().rsplit("\n", 1)[0]
    return text


def _drop_partial_sentence(text: str, completion: Completion) -> str:
    if completion.finish_reason != "length":
        return text
    # Keep whole sentences when at least a third of the text survives; otherwise keep it all.
    end = max(text.rfind(". "), text.rfind(".\n"))
    return text[: end + 1] if end > len(text) // 3 else text


class EvidenceExtractor:
    def __init__(
        self,
        backend: ModelBackend,
        role: ModelRole,
        settings: ExtractSettings,
        cache: ExtractionCache | None = None,
    ) -> None:
        self.backend = backend
        self.role = role
        self.settings = settings
        self.cache = cache if settings.cache else None
        self.max_new_tokens = extractor_budget(role)
        protocol = settings.quote_protocol
        if protocol == "auto":
            protocol = "sentence_choice" if is_weak_model(role) else "free_text"
        self.protocol = protocol

    @property
    def model_name(self) -> str:
        return self.role.model or self.backend.name

    # -- public -------------------------------------------------------------------------------

    @property
    def prompt_version(self) -> str:
        """What the cache keys on besides page, goal and model: the prompts and the protocol."""
        return f"{self.settings.prompt_version}/{self.protocol}"

    async def extract(self, url: str, goal: str, page_text: str, page_sha256: str | None = None) -> Evidence:
        """Evidence for ``goal`` from the whole main text of a page: the model reads its first
        ``page_chars`` characters; the fallbacks work on all of it."""
        text = page_text[: self.settings.page_chars]
        if not text.strip():
            return Evidence(
                rationale="The page has no readable text.",
                evidence=[],
                summary="",
                dropped_quotes=0,
                method="extract",
                attempts=0,
                evidence_source="none",
                model=self.model_name,
            )
        text_sha = text_sha256(page_text)  # the fallbacks read past page_chars
        key = cache_key(text_sha, goal, self.model_name, self.prompt_version)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                log.debug("extract.cache_hit", url=url)
                return replace(hit, cached=True)

        if self.protocol == "sentence_choice":
            evidence, cacheable = await self._choose(url, goal, text, page_text)
        else:
            evidence, cacheable = await self._extract_uncached(url, goal, text, page_text)
        if self.cache is not None and cacheable:
            self.cache.put(
                key,
                evidence,
                text_sha=text_sha,
                page_sha256=page_sha256,
                goal=goal,
                model=self.model_name,
                prompt_version=self.prompt_version,
            )
        return evidence

    # -- flow ---------------------------------------------------------------------------------

    async def _choose(self, url: str, goal: str, text: str, page_text: str) -> tuple[Evidence, bool]:
        try:
            choice = await choose_sentences(
                self.backend, goal, text, self.settings.choice_shortlist, self.settings.choice_quotes
            )
        except ModelError as exc:
            log.warning("extract.model_error", url=url, attempt=1, error=str(exc))
            return self._truncated(page_text, goal, 1, "the model backend failed"), False
        evidence = Evidence(
            rationale=choice.rationale,
            evidence=choice.picks,
            summary=choice.summary,
            dropped_quotes=0,
            method="extract",
            attempts=1,
            evidence_source="choice" if choice.picks else "none",
            model=self.model_name,
        )
        return evidence, True

    async def _extract_uncached(
        self, url: str, goal: str, text: str, page_text: str
    ) -> tuple[Evidence, bool]:
        """The evidence, and whether it may be cached (not when the model backend failed)."""
        text = self._fit_context(P.extraction_messages, text, url, goal)
        matcher = PageMatcher(text)
        attempts = 0
        model_failed = False
        for attempt in range(1, self.settings.attempts + 1):
            attempts = attempt
            try:
                parsed = await self._answer(url, goal, text, attempt)
            except ModelError as exc:
                log.warning("extract.model_error", url=url, attempt=attempt, error=str(exc))
                model_failed = True
                break
            if parsed.complete:
                return self._grounded(parsed, text, goal, matcher, attempts), True
            log.info("extract.unparsed", url=url, attempt=attempt)

        if not model_failed:
            try:
                compressed = await self._compress(url, goal, page_text)
            except ModelError as exc:
                log.warning("extract.compress_model_error", url=url, error=str(exc))
                model_failed = True
                compressed = ""
            if compressed:
                return self._fallback(
                    page_text, goal, attempts, "compress", compressed,
                    f"The extractor did not give the three parts in {attempts} attempt(s); the summary "
                    "is the model's compression of the page to about 30% of its length.",
                ), True

        why = "the model backend failed" if model_failed else f"no usable answer in {attempts} attempt(s)"
        return self._truncated(page_text, goal, attempts, why), not model_failed

    def _truncated(self, page_text: str, goal: str, attempts: int, why: str) -> Evidence:
        return self._fallback(
            page_text, goal, attempts, "truncate", self._truncate(page_text, self.settings.fallback_tokens),
            f"Extraction was not possible ({why}); the summary is the start of the page text, "
            f"cut to about {self.settings.fallback_tokens} tokens.",
        )

    def _grounded(
        self, parsed: ParsedAnswer, text: str, goal: str, matcher: PageMatcher, attempts: int
    ) -> Evidence:
        check = check_quotes(parsed.evidence, text, matcher)
        quotes, source = check.kept, "model"
        # The model tried to quote but nothing it gave is on the page (or it skipped the part):
        # show the page's own most goal-related sentences instead, labelled as such. An explicit
        # "None" from the model is respected.
        if not quotes and (check.dropped or not parsed.has_evidence_section):
            quotes, source = relevant_sentences(text, goal, LEXICAL_QUOTES), "lexical"
        if not quotes:
            source = "none"
        if check.dropped:
            log.info("extract.dropped_quotes", dropped=len(check.dropped), kept=len(check.kept))
        return Evidence(
            rationale=parsed.rationale or "",
            evidence=quotes,
            summary=parsed.summary or "",
            dropped_quotes=len(check.dropped),
            method="extract",
            attempts=attempts,
            evidence_source=source,  # type: ignore[arg-type]
            model=self.model_name,
        )

    def _fallback(
        self, text: str, goal: str, attempts: int, method: str, summary: str, rationale: str
    ) -> Evidence:
        quotes = relevant_sentences(text, goal, LEXICAL_QUOTES)
        return Evidence(
            rationale=rationale,
            evidence=quotes,
            summary=summary,
            dropped_quotes=0,
            method=method,  # type: ignore[arg-type]
            attempts=attempts,
            evidence_source="lexical" if quotes else "none",
            model=self.model_name,
        )

    # -- model calls --------------------------------------------------------------------------

    def _params(self, attempt: int, max_new_tokens: int, stop: tuple[str, ...]) -> SamplingParams:
        retry = self.settings.retry_temperature
        temperature = self.role.temperature if attempt == 1 or retry is None else retry
        return SamplingParams(
            max_new_tokens=max(16, max_new_tokens),
            temperature=temperature,
            top_p=self.role.top_p,
            repetition_penalty=self.role.repetition_penalty,
            stop=stop,
            seed=attempt,
        )

    async def _answer(self, url: str, goal: str, text: str, attempt: int) -> ParsedAnswer:
        messages = P.extraction_messages(url, goal, text)
        budget = self.max_new_tokens
        if self.role.api == "chat":
            # Chat APIs cannot be prefilled: one call, and the tolerant parser does the rest.
            c = await self.backend.chat(messages, self._params(attempt, budget, ()))
            return parse_answer(c.text)

        base = self.backend.render_chat(messages, add_generation_prompt=True)
        answer = P.RATIONALE_PREFILL
        r_budget = min(budget // 4, RATIONALE_MAX_TOKENS)
        c = await self.backend.complete(base + answer, self._params(attempt, r_budget, P.RATIONALE_STOPS))
        rationale = _drop_partial_sentence(cut_at_stops(c.text, P.RATIONALE_STOPS), c).strip()
        answer += " " + rationale + P.EVIDENCE_PREFILL

        c = await self.backend.complete(base + answer, self._params(attempt, budget // 2, P.EVIDENCE_STOPS))
        quotes = _drop_partial_line(cut_at_stops(c.text, P.EVIDENCE_STOPS), c).strip("\n").rstrip()
        answer += quotes + P.SUMMARY_PREFILL

        c = await self.backend.complete(base + answer, self._params(attempt, budget // 4, P.SUMMARY_STOPS))
        summary = _drop_partial_sentence(cut_at_stops(c.text, P.SUMMARY_STOPS), c).strip()
        return assemble_answer(rationale, quotes, summary)

    async def _compress(self, url: str, goal: str, page_text: str) -> str:
        text = self._fit_context(P.compression_messages, page_text, url, goal)
        messages = P.compression_messages(url, goal, text)
        target = max(64, int(0.3 * self.backend.count_tokens(text)))
        params = self._params(1, min(self.max_new_tokens, target), P.END_OF_TURN)
        if self.role.api == "chat":
            c = await self.backend.chat(messages, params)
        else:
            c = await self.backend.complete(self.backend.render_chat(messages), params)
        out = cut_at_stops(c.text, P.END_OF_TURN).strip()
        if len(out) < MIN_COMPRESSION_CHARS or not any(ch.isalnum() for ch in out):
            return ""
        return out

    # -- token budgets ------------------------------------------------------------------------

    def _prompt_tokens(self, messages: list[ChatMessage]) -> int:
        return self.backend.count_tokens(self.backend.render_chat(messages, add_generation_prompt=True))

    def context_tokens(self) -> int:
        """The configured window, or the model's own limit where the backend knows a smaller one."""
        own = getattr(self.backend, "context_tokens", None)
        if isinstance(own, int) and own > 0:
            return min(self.role.context_tokens, own)
        return self.role.context_tokens

    def _fit_context(self, build: PromptBuilder, text: str, url: str, goal: str) -> str:
        """Shorten the page text until prompt + answer fit the extractor's context window."""
        available = self.context_tokens() - self.max_new_tokens - 16
        messages = build(url, goal, text)
        for _ in range(4):
            used = self._prompt_tokens(messages)
            if used <= available or len(text) < 200:
                return text
            text = text[: max(100, int(len(text) * available / used * 0.95))]
            messages = build(url, goal, text)
        return text

    def _truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` (cut at a word boundary) within ``max_tokens`` tokens."""
        if self.backend.count_tokens(text) <= max_tokens:
            return text
        lo, hi = 0, len(text)
        while hi - lo > 32:  # binary search on characters; a few dozen tokenizer calls at most
            mid = (lo + hi) // 2
            if self.backend.count_tokens(text[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid
        cut = text.rfind(" ", 0, lo)
        return text[: cut if cut > lo // 2 else lo].rstrip()
