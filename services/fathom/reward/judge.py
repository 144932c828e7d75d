"""Answer judges: is a trajectory's final answer correct? (FATHOM.md, "Evaluation protocol", "RAPO").

Three judges behind one seam (``AnswerJudge``):
- ``LlmJudge``: the judge model role at temperature 0 with our own prompt; the reply is read strictly:
  a first line of exactly ``CORRECT`` or ``INCORRECT`` gives that verdict, anything else is
  ``unknown``, which the reward counts as wrong (as the paper's GPT-4.1-mini judge did).
- ``ExactJudge`` and ``F1Judge``: SQuAD-style normalisation, no model; cheap and deterministic, for
  tests, smoke runs and data whose golds are short spans.

A missing or empty answer is ``incorrect`` without asking anyone: there is nothing to judge, and a
model would only add noise. Verdicts of the LLM judge are cached (``reward/cache.py``) by question,
answer, sorted golds, judge model and prompt version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from fathom.core.config import Settings, is_weak_model
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, ModelBackend, SamplingParams
from fathom.reward.answers import exact_match, token_f1
from fathom.reward.cache import RewardCache, cache_key
from fathom.reward.formulas import Verdict

log = get_logger(__name__)

VERDICT_KIND = "verdict"
VERDICT_WORDS: dict[str, Verdict] = {"CORRECT": "correct", "INCORRECT": "incorrect"}

# Prompts by version: a new wording gets a new version, so cached verdicts of the old one are not reused.
JUDGE_PROMPTS: dict[str, tuple[str, str]] = {
    "v1": (
        "You grade answers to factual questions. You are given a question, one or more reference "
        "answers that are known to be right, and a candidate answer. Decide whether the candidate "
        "means the same thing as a reference answer. Ignore differences of wording, letter case, "
        "punctuation, word order and harmless extra detail. Numbers, dates, names and units must agree. "
        "A candidate that hedges between several answers, contradicts a reference, or leaves out the "
        "part the question asks for is wrong.\n"
        "Reply with one word on the first line: CORRECT or INCORRECT. Write nothing else.",
        "Question: {question}\n\nReference answers:\n{golds}\n\nCandidate answer: {answer}\n\n"
        "Is the candidate answer correct?",
    ),
}


def parse_verdict(text: str) -> Verdict:
    """The verdict a judge reply states, read strictly.

    The first non-empty line, without surrounding whitespace, markdown emphasis or a final full
    stop, must be exactly ``CORRECT`` or ``INCORRECT`` (upper case, as the prompt asks). Anything
    else (a sentence, both words, lower case, an empty reply) is ``unknown``: a judge that does not
    follow the format has not given a verdict we can trust.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown"
    word = lines[0].strip().strip("*_`").strip().removesuffix(".").strip()
    return VERDICT_WORDS.get(word, "unknown")


@runtime_checkable
class AnswerJudge(Protocol):
    """Judges one answer against its golds. ``name`` goes into the reward breakdown."""

    name: str

    async def judge(self, question: str, answer: str | None, golds: Sequence[str]) -> Verdict: ...


def _empty(answer: str | None) -> bool:
    return answer is None or not answer.strip()


class ExactJudge:
    """Correct when the normalised answer equals a normalised gold."""

    name = "exact"

    async def judge(self, question: str, answer: str | None, golds: Sequence[str]) -> Verdict:
        if _empty(answer) or not golds:
            return "incorrect"
        assert answer is not None
        return "correct" if exact_match(answer, golds) >= 1.0 else "incorrect"


class F1Judge:
    """Correct when the token F1 against the best gold reaches ``threshold``."""

    def __init__(self, threshold: float = 0.8) -> None:
        self.threshold = threshold
        self.name = f"f1>={threshold:g}"

    async def judge(self, question: str, answer: str | None, golds: Sequence[str]) -> Verdict:
        if _empty(answer) or not golds:
            return "incorrect"
        assert answer is not None
        return "correct" if token_f1(answer, golds) >= self.threshold else "incorrect"


class LlmJudge:
    """The judge model role, temperature 0, our prompt, a strict reading of its reply.

    ``constrained``: decode over the two verdict words only (``SamplingParams.choices``). On by
    default for the bundled 135M model, which cannot follow the reply format unaided (as the guided
    policy and extractor do for it); a capable judge writes freely and is parsed strictly.
    """

    def __init__(
        self,
        backend: ModelBackend,
        settings: Settings,
        cache: RewardCache | None = None,
        *,
        constrained: bool | None = None,
    ) -> None:
        version = settings.reward.judge_prompt_version
        if version not in JUDGE_PROMPTS:
            raise ValueError(f"unknown judge prompt version {version!r}; known: {', '.join(JUDGE_PROMPTS)}")
        self.backend = backend
        self.settings = settings
        self.cache = cache
        self.prompt_version = version
        self.model = settings.judge.model
        self.name = f"llm:{self.model}@{version}"
        self.constrained = is_weak_model(settings.judge) if constrained is None else constrained
        self.model_calls = 0  # completions actually requested (cache misses), for reports

    def messages(self, question: str, answer: str, golds: Sequence[str]) -> list[ChatMessage]:
        system, user = JUDGE_PROMPTS[self.prompt_version]
        gold_lines = "\n".join(f"- {g}" for g in golds)
        return [
            ChatMessage("system", system),
            ChatMessage("user", user.format(question=question.strip(), golds=gold_lines,
                                            answer=answer.strip())),
        ]

    def params(self) -> SamplingParams:
        role = self.settings.judge
        params = SamplingParams(
            max_new_tokens=min(role.max_new_tokens, 16), temperature=0.0, top_p=1.0, repetition_penalty=1.0
        )
        # A verdict is one word; 16 tokens leave room for markdown around it and stop a rambling judge
        # early instead of paying for max_new_tokens of text that parses as unknown anyway.
        return replace(params, choices=tuple(VERDICT_WORDS)) if self.constrained else params

    def key(self, question: str, answer: str, golds: Sequence[str]) -> str:
        return cache_key(question.strip(), answer.strip(), sorted(g.strip() for g in golds), self.model,
                         self.prompt_version, self.constrained)

    async def judge(self, question: str, answer: str | None, golds: Sequence[str]) -> Verdict:
        if _empty(answer) or not golds:
            return "incorrect"
        assert answer is not None
        key = self.key(question, answer, golds)
        if self.cache is not None:
            cached = self.cache.get(VERDICT_KIND, key)
            if cached in ("correct", "incorrect", "unknown"):
                return cached  # type: ignore[no-any-return]
        self.model_calls += 1
        completion = await self.backend.chat(self.messages(question, answer, golds), self.params())
        verdict = parse_verdict(completion.text)
        if verdict == "unknown":
            log.info("judge reply not a verdict", reply=completion.text[:200], model=self.model)
        if self.cache is not None:
            self.cache.put(VERDICT_KIND, key, verdict)
        return verdict


def build_judge(settings: Settings, backend: ModelBackend | None = None) -> AnswerJudge:
    """The judge ``settings.reward.judge`` names; the LLM judge uses the judge model role."""
    kind = settings.reward.judge
    if kind == "exact":
        return ExactJudge()
    if kind == "f1":
        return F1Judge(settings.reward.f1_threshold)
    if backend is None:
        from fathom.models.factory import build_backend

        backend = build_backend("judge", settings)
    cache = RewardCache.for_settings(settings) if settings.reward.cache else None
    return LlmJudge(backend, settings, cache)
