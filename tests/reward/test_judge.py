"""Answer judges: strict verdict parsing, exact/F1 judges, the LLM judge on the bundled model, its cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from fathom.core.config import Settings
from fathom.models.base import ChatMessage, Completion, ModelBackend, SamplingParams
from fathom.models.factory import build_backend
from fathom.reward.cache import RewardCache
from fathom.reward.formulas import VERDICTS
from fathom.reward.judge import AnswerJudge, ExactJudge, F1Judge, LlmJudge, build_judge, parse_verdict


class CountingBackend:
    """A real backend that counts the completions it is asked for (all calls go to the real model)."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        self.calls += 1
        return await self.inner.complete(prompt, params)

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        self.calls += len(prompts)
        return await self.inner.complete_batch(prompts, params)

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        self.calls += 1
        return await self.inner.chat(messages, params)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        return self.inner.render_chat(messages, add_generation_prompt)

    async def aclose(self) -> None:
        return None  # the shared bundled backend belongs to the factory


@pytest.fixture(scope="module")
def bundled() -> ModelBackend:
    return build_backend("judge", Settings())


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("CORRECT", "correct"),
        ("INCORRECT", "incorrect"),
        ("  CORRECT.\n", "correct"),
        ("**INCORRECT**", "incorrect"),
        ("\n\nCORRECT\nThe candidate names the same person.", "correct"),
        ("correct", "unknown"),  # the prompt asks for upper case
        ("The answer is CORRECT", "unknown"),
        ("CORRECT or INCORRECT", "unknown"),
        ("INCORRECT!", "unknown"),
        ("", "unknown"),
        ("   \n ", "unknown"),
        ("UNKNOWN", "unknown"),
    ],
)
def test_parse_verdict_is_strict(reply: str, verdict: str) -> None:
    assert parse_verdict(reply) == verdict


async def test_exact_judge_normalises() -> None:
    judge = ExactJudge()
    assert isinstance(judge, AnswerJudge)
    assert await judge.judge("q", "The Gustave Eiffel.", ["gustave eiffel"]) == "correct"
    assert await judge.judge("q", "Gustave", ["Gustave Eiffel"]) == "incorrect"
    assert await judge.judge("q", "Paris", ["Lyon", "paris"]) == "correct"  # any gold
    assert await judge.judge("q", None, ["Paris"]) == "incorrect"
    assert await judge.judge("q", "  ", ["Paris"]) == "incorrect"
    assert await judge.judge("q", "Paris", []) == "incorrect"


async def test_f1_judge_threshold() -> None:
    judge = F1Judge(0.8)
    # "gustave eiffel" vs "alexandre gustave eiffel": P=1, R=2/3, F1=0.8 -> correct at 0.8
    assert await judge.judge("q", "Gustave Eiffel", ["Alexandre Gustave Eiffel"]) == "correct"
    # "eiffel" vs the same gold: P=1, R=1/3, F1=0.5
    assert await judge.judge("q", "Eiffel", ["Alexandre Gustave Eiffel"]) == "incorrect"
    assert await F1Judge(0.5).judge("q", "Eiffel", ["Alexandre Gustave Eiffel"]) == "correct"


def test_build_judge_by_settings(bundled: ModelBackend) -> None:
    assert isinstance(build_judge(Settings(reward={"judge": "exact"})), ExactJudge)
    f1 = build_judge(Settings(reward={"judge": "f1", "f1_threshold": 0.6}))
    assert isinstance(f1, F1Judge) and f1.threshold == 0.6
    llm = build_judge(Settings(reward={"judge": "llm", "cache": False}), backend=bundled)
    assert isinstance(llm, LlmJudge) and llm.cache is None and llm.constrained  # bundled: constrained
    with pytest.raises(ValueError, match="prompt version"):
        LlmJudge(bundled, Settings(reward={"judge_prompt_version": "v9"}))


def test_cache_key_covers_every_input(tmp_path: Path, bundled: ModelBackend) -> None:
    judge = LlmJudge(bundled, Settings(), RewardCache(tmp_path / "c.sqlite"))
    base = judge.key("Q?", "A", ["x", "y"])
    assert judge.key("Q?", "A", ["y", "x"]) == base  # golds are a set
    assert judge.key("Q? ", " A", ["x", "y"]) == base  # surrounding whitespace is not an input
    assert judge.key("Q!", "A", ["x", "y"]) != base
    assert judge.key("Q?", "B", ["x", "y"]) != base
    assert judge.key("Q?", "A", ["x"]) != base
    other_model = LlmJudge(bundled, Settings(judge={"model": "gpt-4.1-mini", "backend": "openai"}))
    assert other_model.key("Q?", "A", ["x", "y"]) != base


async def test_second_verdict_comes_from_the_cache(tmp_path: Path, bundled: ModelBackend) -> None:
    counted = CountingBackend(bundled)
    cache = RewardCache(tmp_path / "verdicts.sqlite")
    judge = LlmJudge(counted, Settings(), cache)
    q, golds = "Who designed the Eiffel Tower?", ["Gustave Eiffel"]
    first = await judge.judge(q, "Gustave Eiffel", golds)
    assert first in ("correct", "incorrect")  # constrained decoding: never unknown
    assert counted.calls == 1
    assert await judge.judge(q, "Gustave Eiffel", golds) == first
    assert counted.calls == 1  # served from SQLite
    # A new judge over the same file (another process, a restart) reuses the verdict too.
    again = LlmJudge(counted, Settings(), RewardCache(tmp_path / "verdicts.sqlite"))
    assert await again.judge(q, "Gustave Eiffel", list(reversed(golds))) == first
    assert counted.calls == 1
    # A different answer is a miss; an empty one is judged without the model.
    await judge.judge(q, "Thomas Edison", golds)
    assert counted.calls == 2
    assert await judge.judge(q, "", golds) == "incorrect"
    assert counted.calls == 2 and len(cache) == 2


@pytest.mark.slow
async def test_llm_judge_end_to_end_with_the_bundled_model(tmp_path: Path, bundled: ModelBackend) -> None:
    """Free-form replies from the 135M model, parsed strictly: whatever it writes maps to a verdict,
    and a reply that is not exactly a verdict word is unknown (which the reward counts as wrong)."""
    counted = CountingBackend(bundled)
    free = LlmJudge(counted, Settings(), RewardCache(tmp_path / "v.sqlite"), constrained=False)
    verdict = await free.judge("What is the capital of France?", "Paris", ["Paris"])
    assert verdict in VERDICTS and counted.calls == 1
    reply = await bundled.chat(free.messages("What is the capital of France?", "Paris", ["Paris"]),
                               free.params())
    assert parse_verdict(reply.text) == verdict  # temperature 0: the same reply again
    guided = LlmJudge(counted, Settings(), None)
    q = "What is the capital of France?"
    verdicts = {await guided.judge(q, a, ["Paris"]) for a in ("Paris", "Berlin")}
    assert verdicts <= {"correct", "incorrect"}
