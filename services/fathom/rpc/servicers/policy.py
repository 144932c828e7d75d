"""PolicyService over gRPC: a thin wrapper around ``fathom.agent.policy_service.PolicyService``.

RunTrajectory streams one ``TrajectoryEvent`` per completed step, then one ``done``. The call's
deadline (``context.time_remaining()``) bounds the whole trajectory; when the client goes away
grpc cancels this handler, and closing the service's iterator cancels the model request and the
tool calls in flight. ``mode`` picks the prompt (unspecified: search, as rollouts want); ``job_id``
tags the trajectory's tool calls so the job's Cancel reaches them on the fetch workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fathom.agent.policy_service import PolicyService, SamplingOverrides, TrajectoryDone
from fathom.agent.protocol import Mode
from fathom.core.errors import InvalidArgument
from fathom.core.logging import get_logger
from fathom.queue.names import lane_from_proto
from fathom.rpc.convert import step_from_proto, step_to_proto
from fathom.rpc.gen import common_pb2, policy_pb2, policy_pb2_grpc
from fathom.rpc.status import maps_errors

log = get_logger(__name__)

SERVICE_NAME = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name
_OPTIONAL_SAMPLING = ("temperature", "top_p", "repetition_penalty", "seed", "max_turns",
                      "max_new_tokens_per_turn", "max_tool_calls")


def sampling_from_proto(msg: common_pb2.Sampling) -> SamplingOverrides:
    """Unset optional fields keep the server's settings."""
    values: dict[str, Any] = {name: getattr(msg, name) for name in _OPTIONAL_SAMPLING if msg.HasField(name)}
    return SamplingOverrides(logprobs=msg.logprobs, **values)


def sampling_to_proto(s: SamplingOverrides | None) -> common_pb2.Sampling:
    if s is None:
        return common_pb2.Sampling()
    values = {name: getattr(s, name) for name in _OPTIONAL_SAMPLING if getattr(s, name) is not None}
    return common_pb2.Sampling(logprobs=s.logprobs, **values)


def done_to_proto(done: TrajectoryDone) -> policy_pb2.TrajectoryDone:
    return policy_pb2.TrajectoryDone(
        answer=done.answer, stop_reason=done.stop_reason, total_tokens=done.total_tokens,
        prompt=done.prompt, prompt_token_ids=done.prompt_token_ids, policy_version=done.policy_version)


def done_from_proto(msg: policy_pb2.TrajectoryDone) -> TrajectoryDone:
    return TrajectoryDone(
        answer=msg.answer, stop_reason=msg.stop_reason, total_tokens=msg.total_tokens, prompt=msg.prompt,
        prompt_token_ids=list(msg.prompt_token_ids), policy_version=msg.policy_version)


def _mode(value: int) -> Mode:
    if value in (common_pb2.MODE_UNSPECIFIED, common_pb2.MODE_SEARCH):
        return "search"
    if value == common_pb2.MODE_REPORT:
        return "report"
    raise InvalidArgument(f"unknown mode enum value {value}", reason="BAD_MODE", field="mode")


def _lane(value: int) -> str:
    try:
        return lane_from_proto(value)
    except ValueError as e:
        raise InvalidArgument(str(e), reason="BAD_LANE", field="lane") from None


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """RunTrajectory and ScoreTokens of one ``PolicyService``."""

    def __init__(self, service: PolicyService) -> None:
        self.service = service

    @maps_errors
    async def RunTrajectory(
        self, request: policy_pb2.RunTrajectoryRequest, context: Any,
    ) -> AsyncIterator[policy_pb2.TrajectoryEvent]:
        events = self.service.run(
            request.trajectory_id, request.question, _lane(request.lane),
            sampling_from_proto(request.sampling),
            [step_from_proto(s) for s in request.resume_steps],
            deadline_s=context.time_remaining(), policy_version=request.policy_version,
            mode=_mode(request.mode), job_id=request.job_id or None,
        )
        try:
            async for event in events:
                if isinstance(event, TrajectoryDone):
                    if event.error:
                        log.warning("policy.trajectory_error", trajectory_id=request.trajectory_id,
                                    error=event.error)
                    yield policy_pb2.TrajectoryEvent(done=done_to_proto(event))
                else:
                    yield policy_pb2.TrajectoryEvent(step=step_to_proto(event))
        finally:
            await events.aclose()  # the client went away or the deadline passed: stop the run

    @maps_errors
    async def ScoreTokens(
        self, request: policy_pb2.ScoreTokensRequest, context: Any,
    ) -> policy_pb2.ScoreTokensResponse:
        logprobs = await self.service.score_tokens(list(request.token_ids), request.from_position)
        return policy_pb2.ScoreTokensResponse(logprobs=logprobs, policy_version=self.service.policy_version)


def register(service: PolicyService) -> Any:
    """A ``register`` callback for ``fathom.rpc.server.build_server``."""
    def add(server: Any) -> None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(PolicyServicer(service), server)

    return add
