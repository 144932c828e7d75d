"""PolicyService over gRPC: a thin wrapper around ``fathom.agent.policy_service.PolicyService``.

RunTrajectory streams one ``TrajectoryEvent`` per completed step, then one ``done``. The call's
deadline (``context.time_remaining()``) bounds the whole trajectory; when the client goes away
grpc cancels this handler, and closing the service's iterator cancels the model request and the
tool calls in flight. ``mode`` picks the prompt (unspecified: search, as rollouts want); ``job_id``
tags the trajectory's tool calls so the job's Cancel reaches them on the fetch workers.

LoadWeights is the trainer's weight sync: the trainer writes its weights as safetensors into a
directory both processes mount, and this server loads them into its backend (``load_weights``, which
bumps ``policy_version``). Only paths inside ``plane.weights_dir`` are read, symlinks resolved first,
so a client can never make the server open a file elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

import grpc

from fathom.agent.policy_service import PolicyService, SamplingOverrides, TrajectoryDone
from fathom.agent.protocol import Mode
from fathom.core.errors import FailedPrecondition, InvalidArgument, ModelError, NotFound
from fathom.core.logging import get_logger
from fathom.queue.names import lane_from_proto
from fathom.rpc.convert import step_from_proto, step_to_proto
from fathom.rpc.gen import common_pb2, policy_pb2, policy_pb2_grpc
from fathom.rpc.status import error_status, maps_errors

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


def weights_files(root: Path | None, requested: str) -> list[Path]:
    """The safetensors files ``requested`` names: a directory (every ``*.safetensors`` in it: one file
    or the shards of ``save_pretrained``) or one file, relative to ``root`` or absolute inside it.
    Anything that resolves outside ``root`` (``..``, an absolute path elsewhere, a symlink out) is
    refused before a byte is read."""
    if root is None:
        raise FailedPrecondition("this policy service has no weights directory (plane.weights_dir), so it "
                                 "loads no weights", reason="WEIGHTS_DIR_UNSET")
    if not requested.strip() or "\x00" in requested:
        raise InvalidArgument("path must name a directory or .safetensors file in the weights directory",
                              reason="BAD_WEIGHTS_PATH", field="path")
    base = root.resolve()
    given = Path(requested)
    target = (given if given.is_absolute() else base / given).resolve()
    if target == base or not target.is_relative_to(base):
        raise InvalidArgument(f"path {requested!r} is outside the server's weights directory",
                              reason="WEIGHTS_PATH_OUTSIDE_ROOT", field="path")
    if not target.exists():
        raise NotFound(f"no weights at {requested!r}", reason="WEIGHTS_NOT_FOUND", field="path")
    files = [target] if target.is_file() else sorted(target.glob("*.safetensors"))
    files = [f.resolve() for f in files]
    if any(not f.is_relative_to(base) for f in files):
        raise InvalidArgument(f"a file under {requested!r} links outside the server's weights directory",
                              reason="WEIGHTS_PATH_OUTSIDE_ROOT", field="path")
    if not files or any(f.suffix != ".safetensors" or not f.is_file() for f in files):
        raise NotFound(f"no .safetensors weights at {requested!r}", reason="WEIGHTS_NOT_FOUND", field="path")
    return files


def read_weights(files: list[Path]) -> dict[str, Any]:
    """One state dict (CPU tensors) from safetensors files; a tensor named twice is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in files:
        try:
            part = load_file(f, device="cpu")
        except (SafetensorError, OSError) as exc:
            raise InvalidArgument(f"{f.name} is not readable safetensors: {exc}", reason="WEIGHTS_UNREADABLE",
                                  field="path") from None
        if twice := sorted(state.keys() & part.keys()):
            raise InvalidArgument(f"tensor {twice[0]!r} is in more than one file",
                                  reason="WEIGHTS_UNREADABLE", field="path")
        state.update(part)
    if not state:
        raise InvalidArgument("the weights hold no tensors", reason="WEIGHTS_UNREADABLE", field="path")
    return state


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """RunTrajectory, ScoreTokens and LoadWeights of one ``PolicyService``; ``weights_root`` is the
    only directory LoadWeights reads from (``plane.weights_dir``)."""

    def __init__(self, service: PolicyService, weights_root: Path | None = None) -> None:
        self.service = service
        self.weights_root = weights_root
        self._loading = asyncio.Lock()  # one load at a time: expected_policy_version is compare-and-set

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

    @maps_errors
    async def LoadWeights(
        self, request: policy_pb2.LoadWeightsRequest, context: Any,
    ) -> policy_pb2.LoadWeightsResponse:
        backend = self.service.backend
        try:
            load = backend.load_weights  # type: ignore[attr-defined]
        except AttributeError as exc:  # a model server says how its weights are synced instead
            await _no_weight_loading(context, backend.name, str(exc))
        files = await asyncio.to_thread(weights_files, self.weights_root, request.path)
        async with self._loading:
            served = self.service.policy_version
            expected = request.expected_policy_version
            if expected and expected != served:
                raise FailedPrecondition(f"this server runs policy {served!r}, not {expected!r}",
                                         reason="POLICY_VERSION_MISMATCH", expected=expected, actual=served)
            state = await asyncio.to_thread(read_weights, files)
            try:
                version = str(await asyncio.to_thread(load, state))
            except ModelError as exc:  # tensors the model lacks, or of other shapes
                raise InvalidArgument(str(exc), reason="WEIGHTS_MISMATCH", field="path") from None
        log.info("policy.weights_loaded", path=request.path, version_tag=request.version_tag,
                 previous=served, policy_version=version, tensors=len(state))
        return policy_pb2.LoadWeightsResponse(policy_version=version, tensors=len(state))


async def _no_weight_loading(context: Any, backend: str, detail: str) -> NoReturn:
    """UNIMPLEMENTED (no typed error stands for it): this backend takes no weights."""
    await context.abort_with_status(error_status(
        grpc.StatusCode.UNIMPLEMENTED,
        f"the {backend!r} backend cannot load weights (a model server or the replay model): serve the "
        f"policy from the transformers backend to sync a trainer's weights through LoadWeights ({detail})",
        "WEIGHT_SYNC_UNSUPPORTED", {"backend": backend}))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def register(service: PolicyService) -> Any:
    """A ``register`` callback for ``fathom.rpc.server.build_server``; LoadWeights reads from the
    service's ``plane.weights_dir``."""
    def add(server: Any) -> None:
        servicer = PolicyServicer(service, service.settings.plane.weights_dir)
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)

    return add
