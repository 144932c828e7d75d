"""Quotes for models too weak to quote: the model ranks the page's own sentences; it writes nothing.

Asked to copy passages, the bundled 135M model rewrites them (no verified quote on 39 real pages),
and asked for a rationale it recites its instructions. Here the page's sentences are ranked by the
words they share with the goal, and the model scores the best few: for each, how likely the goal
is as the question that sentence answers (query likelihood, one batched scoring pass through the
backend's constrained-choice seam, with the goal as the only allowed continuation). The two
rankings are fused and the best ``max_picks`` sentences are the quotes. Every quote is a sentence of
the page by construction, and the Rationale and Summary are written here from the picks, so no text
of the prompt can reach them.

Why not a numbered multiple choice: on 19 HotpotQA / Natural Questions pages the model's pick among
8 numbered sentences held the supporting sentence 7 times, word overlap alone 15 times; the model
cannot read a list, but its likelihoods still carry signal on top of the overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

from fathom.core.errors import ModelError
from fathom.models.base import ModelBackend, SamplingParams
from fathom.tools.extract import prompt as P
from fathom.tools.extract.verify import goal_terms_in, ranked_sentences

# Reciprocal-rank fusion constant: 1 / (FUSION_K + rank). Small: the top of each ranking counts most.
FUSION_K = 1
MAX_TERMS_SHOWN = 8


@dataclass(frozen=True)
class SentenceChoice:
    goal: str
    shortlist: list[str]  # page sentences offered, best word overlap first
    picks: list[str]  # the quotes, best first (all from the shortlist)

    @property
    def rationale(self) -> str:
        if not self.shortlist:
            return "No sentence of the page contains a content word of the goal."
        terms = goal_terms_in(" ".join(self.picks), self.goal)[:MAX_TERMS_SHOWN]
        shared = f"The quoted sentences contain the goal's words {', '.join(terms)}." if terms else ""
        picked = (
            f"Of the page's {len(self.shortlist)} sentences with the most goal words, these "
            f"{len(self.picks)} rank highest by word overlap and by the extractor model's likelihood "
            "of the goal given each; the summary is the first."
        )
        return f"{shared} {picked}".strip()

    @property
    def summary(self) -> str:
        return self.picks[0] if self.picks else ""


def fuse_rankings(*rankings: list[int]) -> list[int]:
    """Reciprocal-rank fusion of rankings of the same items (ids); ties keep the first ranking's order."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            score[item] = score.get(item, 0.0) + 1.0 / (FUSION_K + rank)
    first = {item: i for i, item in enumerate(rankings[0])}
    return sorted(score, key=lambda item: (-score[item], first.get(item, len(first))))


async def goal_likelihoods(backend: ModelBackend, goal: str, sentences: list[str]) -> list[float]:
    """log P(goal | "write the question this sentence answers"), one value per sentence."""
    prompts = [backend.render_chat(P.question_messages(s), add_generation_prompt=True) for s in sentences]
    params = SamplingParams(max_new_tokens=1, temperature=0.0, choices=(goal,), logprobs=True)
    completions = await backend.complete_batch(prompts, params)
    scores: list[float] = []
    for c in completions:
        if c.text != goal or not c.logprobs:
            raise ModelError("the extractor backend gave no log-likelihood for the goal")
        scores.append(float(sum(c.logprobs)))
    return scores


async def choose_sentences(
    backend: ModelBackend, goal: str, page_text: str, shortlist_size: int, max_picks: int
) -> SentenceChoice:
    """Shortlist the page's sentences for ``goal`` and keep the ``max_picks`` the model ranks best
    together with the word overlap. Raises ``ModelError`` when the backend fails."""
    goal = " ".join(goal.split())
    shortlist = ranked_sentences(page_text, goal, shortlist_size)
    if not shortlist:
        return SentenceChoice(goal, [], [])
    by_overlap = list(range(len(shortlist)))
    if len(shortlist) > 1:
        likelihood = await goal_likelihoods(backend, goal, shortlist)
        by_model = sorted(by_overlap, key=lambda i: -likelihood[i])
        order = fuse_rankings(by_overlap, by_model)
    else:
        order = by_overlap
    return SentenceChoice(goal, shortlist, [shortlist[i] for i in order[:max_picks]])
