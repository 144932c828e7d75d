"""``RewardService``: ``Score`` a trajectory (format reward, answer judge, step labels, the stage-1
or steerable stage-2 reward) with the ``RewardScorer`` the process built once.

The request carries the trajectory itself (steps as ``common.Step``, the final answer), so a caller
needs no store; with ``trajectory_id`` set the breakdown is also stored with that trajectory
(idempotent per stage: a retried call keeps the first stored reward). Requests no reward can be
computed for are INVALID_ARGUMENT: an empty question, no gold answer, an unknown stage. An unknown
``trajectory_id`` is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from fathom.agent.trajectory import Trajectory
from fathom.core.errors import FailedPrecondition, InvalidArgument, NotFound
from fathom.reward.formulas import LabelledCall, RewardBreakdown
from fathom.reward.service import RewardScorer, check_request
from fathom.rpc.convert import step_from_proto
from fathom.rpc.gen import reward_pb2, reward_pb2_grpc
from fathom.rpc.status import maps_errors

SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
# The proto's REWARD_STAGE_UNSPECIFIED is documented as stage 1: a caller that says nothing gets the
# same reward from every server, whatever that server's own ``reward.stage`` setting is.
_STAGES: dict[int, int] = {
    reward_pb2.REWARD_STAGE_UNSPECIFIED: 1, reward_pb2.REWARD_STAGE_1: 1, reward_pb2.REWARD_STAGE_2: 2,
}
_VERDICTS: dict[str, reward_pb2.Verdict] = {
    "correct": reward_pb2.VERDICT_CORRECT, "incorrect": reward_pb2.VERDICT_INCORRECT,
    "unknown": reward_pb2.VERDICT_UNKNOWN,
}
_LABELS: dict[str, reward_pb2.StepLabel] = {
    "UNIQUE_SEARCH": reward_pb2.STEP_LABEL_UNIQUE_SEARCH,
    "REDUNDANT_SEARCH": reward_pb2.STEP_LABEL_REDUNDANT_SEARCH,
    "EXPLORATION": reward_pb2.STEP_LABEL_EXPLORATION,
    "VERIFICATION": reward_pb2.STEP_LABEL_VERIFICATION,
    "REDUNDANT_QUERY": reward_pb2.STEP_LABEL_REDUNDANT_QUERY,
}


def stage_from_proto(value: int) -> int:
    try:
        return _STAGES[value]
    except KeyError:
        raise InvalidArgument(f"unknown reward stage enum value {value}",
                              reason="UNKNOWN_REWARD_STAGE", field="stage") from None


def label_to_proto(call: LabelledCall) -> reward_pb2.LabelledCall:
    return reward_pb2.LabelledCall(step=call.step, index=call.index,
                                   label=_LABELS[call.label], reason=getattr(call, "reason", "") or "")


def breakdown_to_proto(b: RewardBreakdown) -> reward_pb2.RewardBreakdown:
    return reward_pb2.RewardBreakdown(
        reward=b.reward, r_format=b.r_format,
        verdict=_VERDICTS.get(b.verdict, reward_pb2.VERDICT_UNSPECIFIED),
        exact_match=b.exact_match, f1=b.f1, tool_calls=b.tool_calls, rho=b.rho, d_s=b.d_s, d_q=b.d_q,
        labels=[label_to_proto(c) for c in b.labels], judge_model=b.judge_model, labeller=b.labeller,
        stage=reward_pb2.REWARD_STAGE_2 if b.stage == 2 else reward_pb2.REWARD_STAGE_1,
        correct=b.verdict == "correct", terms={k: float(v) for k, v in b.terms.items()},
        counts={str(k): int(v) for k, v in b.counts.items()},
    )


def trajectory_from_request(request: reward_pb2.ScoreRequest) -> Trajectory:
    """The request's trajectory; the prompt is not part of the request and no reward reads it."""
    return Trajectory(question=request.question, prompt="",
                      steps=[step_from_proto(s) for s in request.steps], answer=request.answer or None)


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, scorer: RewardScorer) -> None:
        self.scorer = scorer

    @maps_errors
    async def Score(self, request: reward_pb2.ScoreRequest, context: Any) -> reward_pb2.RewardBreakdown:
        stage = stage_from_proto(request.stage)
        golds = list(request.gold_answers)
        check_request(request.question, golds, stage)  # before converting a possibly large trajectory
        if request.trajectory_id:
            await self._check_storable(request.trajectory_id)
        traj = trajectory_from_request(request)
        breakdown = await self.scorer.score(request.question, golds, traj, stage=stage,
                                            trajectory_id=request.trajectory_id or None)
        return breakdown_to_proto(breakdown)

    async def _check_storable(self, trajectory_id: str) -> None:
        """Refuse before judging (a judge call costs money) what could not be stored after it."""
        store = self.scorer.store
        if store is None:
            raise FailedPrecondition("this reward server has no store: leave trajectory_id empty",
                                     reason="NO_STORE", field="trajectory_id")
        if not await asyncio.to_thread(store.trajectory_exists, trajectory_id):
            raise NotFound(f"no trajectory with id {trajectory_id}", reason="TRAJECTORY_NOT_FOUND",
                           trajectory_id=trajectory_id)


def register(server: grpc.aio.Server, servicer: RewardServicer) -> None:
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
