"""Client of the PolicyService: the research worker (live lane) and the trainer (train lane).

``run_trajectory`` yields the same objects an in-process ``PolicyService.run`` does (``Step``s, then
one ``TrajectoryDone``), so a caller switches between the two by configuration alone
(``plane.policy_via``). Failed calls raise the typed ``fathom.core.errors`` they stand for.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import grpc

from fathom.agent.policy_service import Event, SamplingOverrides
from fathom.agent.trajectory import Step
from fathom.core.config import Settings
from fathom.core.errors import InvalidArgument
from fathom.rpc.clients import channel
from fathom.rpc.convert import lane_to_proto, mode_to_proto, step_from_proto, step_to_proto
from fathom.rpc.gen import policy_pb2, policy_pb2_grpc
from fathom.rpc.servicers.policy import done_from_proto, sampling_to_proto
from fathom.rpc.status import error_from_rpc


class PolicyClient:
    """Owns its channel: ``async with`` or ``await aclose()``."""

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        self.address = address or settings.plane.policy_address
        self.channel = channel(settings, self.address)
        self.stub = policy_pb2_grpc.PolicyServiceStub(self.channel)

    async def run_trajectory(self, trajectory_id: str, question: str, lane: str = "live",
                             sampling: SamplingOverrides | None = None, resume_steps: Sequence[Step] = (),
                             timeout: float | None = None, *, policy_version: str = "",
                             mode: str = "search", job_id: str = "") -> AsyncGenerator[Event, None]:
        """Steps as they complete, then the ``TrajectoryDone``. ``timeout`` is the gRPC deadline
        of the whole trajectory; leaving the loop early cancels the run on the server."""
        if mode not in ("search", "report"):
            raise InvalidArgument(f"unknown mode {mode!r}: expected 'search' or 'report'", reason="BAD_MODE",
                                  field="mode")
        request = policy_pb2.RunTrajectoryRequest(
            trajectory_id=trajectory_id, question=question, lane=lane_to_proto(lane),
            sampling=sampling_to_proto(sampling), resume_steps=[step_to_proto(s) for s in resume_steps],
            policy_version=policy_version, mode=mode_to_proto(mode), job_id=job_id)
        call = self.stub.RunTrajectory(request, timeout=timeout)
        try:
            async for event in call:
                if event.WhichOneof("event") == "step":
                    yield step_from_proto(event.step)
                else:
                    yield done_from_proto(event.done)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def score_tokens(self, token_ids: Sequence[int], from_position: int,
                           timeout: float | None = 60.0) -> tuple[list[float], str]:
        """(log-probs of ``token_ids[from_position:]``, the policy version that scored them)."""
        request = policy_pb2.ScoreTokensRequest(token_ids=list(token_ids), from_position=from_position)
        try:
            response = await self.stub.ScoreTokens(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return list(response.logprobs), response.policy_version

    async def load_weights(self, path: str, *, version_tag: str = "", expected_policy_version: str = "",
                           timeout: float | None = 600.0) -> tuple[str, int]:
        """Make the server load the safetensors weights at ``path`` (relative to its
        ``plane.weights_dir``); returns (the policy version now served, tensors loaded). With
        ``expected_policy_version`` the load is refused unless that version is the one served."""
        request = policy_pb2.LoadWeightsRequest(path=path, version_tag=version_tag,
                                                expected_policy_version=expected_policy_version)
        try:
            response = await self.stub.LoadWeights(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from None
        return response.policy_version, int(response.tensors)

    async def aclose(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> PolicyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
