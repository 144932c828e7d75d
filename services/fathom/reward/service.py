"""``RewardScorer``: one trajectory in, its ``RewardBreakdown`` out, stored with the trajectory.

The one place where the pieces of the reward meet: the format reward and the stage formulas
(``formulas.py``), the answer judge (``judge.py``), the step labeller (``labels.py``) and the
store. The gRPC ``RewardService``, the ``fathom.reward.score`` queue task and the RAPO trainer all
score through it, so a reward means the same thing whichever way it was asked for.

Decisions kept here rather than in the formulas:
- Step labels are computed only at stage 2: stage 1 does not use them, and an LLM labeller would
  cost one judge call per tool call for nothing.
- Exact match and token F1 are always reported next to the verdict (they cost nothing), so a run
  judged by an LLM still shows how far a string match would have agreed.
- Storing is idempotent on (trajectory, stage): a second score of a stored trajectory keeps the
  first stored breakdown (``score_stored`` returns that one without scoring again).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fathom.agent.trajectory import Trajectory
from fathom.core.config import Settings
from fathom.core.errors import InvalidArgument
from fathom.core.logging import get_logger
from fathom.reward.answers import exact_match, token_f1
from fathom.reward.formulas import RewardBreakdown, format_reward, stage1_reward, stage2_reward

if TYPE_CHECKING:
    from fathom.reward.judge import AnswerJudge
    from fathom.reward.labels import StepLabeller
    from fathom.store.repository import JobStore

log = get_logger(__name__)

STAGES = (1, 2)


def check_request(question: str, golds: Sequence[str], stage: int | None) -> list[str]:
    """The golds worth judging against (blank ones dropped); ``InvalidArgument`` for a request no
    reward can be computed for, so callers on every path refuse the same things."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidArgument("the question is empty", reason="EMPTY_QUESTION", field="question")
    kept = [g for g in golds if isinstance(g, str) and g.strip()]
    if not kept:
        raise InvalidArgument("no gold answers: a reward needs at least one non-empty gold answer",
                              reason="NO_GOLD_ANSWERS", field="gold_answers")
    if stage is not None and (isinstance(stage, bool) or stage not in STAGES):
        raise InvalidArgument(f"unknown reward stage {stage!r}: expected 1 or 2",
                              reason="UNKNOWN_REWARD_STAGE", field="stage")
    return kept


class RewardScorer:
    """Scores trajectories with one judge and one labeller, built once by the owner (the reward
    server, a worker process, the trainer) and shared by every call."""

    def __init__(self, judge: AnswerJudge, labeller: StepLabeller, settings: Settings,
                 store: JobStore | None = None) -> None:
        self.judge = judge
        self.labeller = labeller
        self.settings = settings
        self.store = store

    def stage_of(self, stage: int | None) -> int:
        return int(self.settings.reward.stage if stage is None else stage)

    async def evaluate(self, question: str, golds: Sequence[str], traj: Trajectory, *,
                       stage: int | None = None) -> RewardBreakdown:
        """The trajectory's reward at ``stage`` (default: ``settings.reward.stage``), not stored."""
        kept = check_request(question, golds, stage)
        which = self.stage_of(stage)
        answer = traj.answer or ""
        r_format = format_reward(traj)
        verdict = await self.judge.judge(question, answer, kept)
        if which == 2:
            labels = await self.labeller.label(question, traj)
            breakdown = stage2_reward(r_format, verdict, labels, self.settings.reward)
        else:
            breakdown = stage1_reward(r_format, verdict, self.settings.reward)
        return dataclasses.replace(
            breakdown, exact_match=exact_match(answer, kept), f1=token_f1(answer, kept),
            judge_model=self.judge.name, labeller=self.labeller.name if which == 2 else "",
        )

    async def _save(self, trajectory_id: str, breakdown: RewardBreakdown) -> bool:
        assert self.store is not None
        stored = await asyncio.to_thread(self.store.save_reward, trajectory_id, breakdown.to_dict())
        log.info("reward_scored", trajectory_id=trajectory_id, stage=breakdown.stage,
                 reward=breakdown.reward, verdict=breakdown.verdict, stored=stored)
        return stored

    async def score(self, question: str, golds: Sequence[str], traj: Trajectory, *,
                    stage: int | None = None, trajectory_id: str | None = None) -> RewardBreakdown:
        """``evaluate``, then stored with the trajectory when ``trajectory_id`` is given and this
        scorer has a store (a reward already stored for that stage is kept, not replaced)."""
        breakdown = await self.evaluate(question, golds, traj, stage=stage)
        if trajectory_id and self.store is not None:
            await self._save(trajectory_id, breakdown)
        return breakdown

    async def score_stored(self, trajectory_id: str, golds: Sequence[str],
                           stage: int | None = None) -> dict[str, Any]:
        """Score a trajectory already in the store and store its reward; the body of the
        ``fathom.reward.score`` task. A reward already stored for (trajectory, stage) is returned as
        it is, with nothing judged or stored again (a redelivered message costs no judge call).

        Returns ``{"trajectory_id", "stage", "reward", "stored", "breakdown"}``; ``stored`` is False
        when the reward was there already (the stored one is returned, even when a concurrent
        scorer stored it between our check and our insert)."""
        if self.store is None:
            raise RuntimeError("score_stored needs a RewardScorer with a store")
        which = self.stage_of(stage)
        check_request("-", golds, which)  # the question comes from the store
        stored = False
        existing = await asyncio.to_thread(self.store.get_reward, trajectory_id, which)
        if existing is None:
            traj = await asyncio.to_thread(self.store.load_trajectory_by_id, trajectory_id)
            breakdown = await self.evaluate(traj.question, golds, traj, stage=which)
            stored = await self._save(trajectory_id, breakdown)
            existing = await asyncio.to_thread(self.store.get_reward, trajectory_id, which)
        else:
            log.info("reward_already_stored", trajectory_id=trajectory_id, stage=which)
        if existing is None:  # pragma: no cover - save_reward raises rather than store nothing
            raise RuntimeError(f"the reward of trajectory {trajectory_id} was not stored")
        return {"trajectory_id": trajectory_id, "stage": which, "reward": existing.reward,
                "stored": stored, "breakdown": existing.breakdown}


def build_scorer(settings: Settings, store: JobStore | None = None) -> RewardScorer:
    """The judge and the labeller the settings name (``reward.judge``, ``reward.labeller``)."""
    from fathom.reward.judge import build_judge
    from fathom.reward.labels import build_labeller

    return RewardScorer(build_judge(settings), build_labeller(settings), settings, store)
