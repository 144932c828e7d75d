"""``RewardService``: the contract is served now, with health and auth; scoring (format reward,
answer judge, step labels, stage-1/2 rewards) comes with issue 8. Until then ``Score`` answers
UNIMPLEMENTED with a message saying so, after validating the request like the real one will."""

from __future__ import annotations

from typing import Any

import grpc

from fathom.core.errors import InvalidArgument
from fathom.rpc.gen import reward_pb2, reward_pb2_grpc
from fathom.rpc.status import error_status, maps_errors

SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
_STAGES = (reward_pb2.REWARD_STAGE_UNSPECIFIED, reward_pb2.REWARD_STAGE_1, reward_pb2.REWARD_STAGE_2)


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    @maps_errors
    async def Score(self, request: reward_pb2.ScoreRequest, context: Any) -> reward_pb2.RewardBreakdown:
        if request.stage not in _STAGES:
            raise InvalidArgument(f"unknown reward stage enum value {request.stage}",
                                  reason="UNKNOWN_REWARD_STAGE", field="stage")
        await context.abort_with_status(error_status(
            grpc.StatusCode.UNIMPLEMENTED,
            "RewardService.Score is not implemented yet: reward scoring comes with issue 8",
            "NOT_IMPLEMENTED", {"issue": "8"},
        ))
        raise AssertionError("unreachable")  # pragma: no cover


def register(server: grpc.aio.Server, servicer: RewardServicer) -> None:
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)
