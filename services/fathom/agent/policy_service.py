"""The search policy as a service: many trajectories at once in one process, streamed step by step.

Transport-free: the gRPC servicer (``fathom.rpc.servicers.policy``) and in-process callers use the
same object. Each ``run`` builds its own ``AgentLoop`` (cheap: no model, no connection) around the
one shared model backend and a tool runner made for the call's lane and trajectory; in the plane
that runner sends every call to the ``search``/``fetch`` queues and awaits the result without
blocking the event loop, so one process holds as many trajectories as ``plane.policy_trajectories``
allows while they wait on the model and the tools.

Tool call ids are ``"<trajectory_id>:<step>:<call>"``: a trajectory resumed or redelivered after a
crash asks for the same ids again and the queue plane answers a known id with its recorded result.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from fathom.agent.guided import GuidedPolicy
from fathom.agent.loop import FINISHED, AgentLoop
from fathom.agent.protocol import MODES, Mode
from fathom.agent.trajectory import Step, Trajectory
from fathom.core.config import AgentSettings, Settings, is_weak_model
from fathom.core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from fathom.core.logging import get_logger
from fathom.core.metrics import count_tokens
from fathom.models.base import ModelBackend, SamplingParams
from fathom.tools.base import ToolRunner

log = get_logger(__name__)

ToolsFactory = Callable[[str, str, str | None], ToolRunner]  # (lane, trajectory_id, job_id) -> a runner


@dataclass(frozen=True)
class SamplingOverrides:
    """Per-call sampling; ``None`` keeps the server's settings (proto ``Sampling``)."""

    temperature: float | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    max_turns: int | None = None
    max_new_tokens_per_turn: int | None = None
    max_tool_calls: int | None = None
    # Return log-probs of the sampled tokens (token ids come whenever the backend has them).
    logprobs: bool = False


@dataclass(frozen=True)
class TrajectoryDone:
    """The end of a streamed trajectory (proto ``TrajectoryDone``). ``error`` is local only: the
    message of a failed run (stop_reason "error"); it does not travel over gRPC."""

    answer: str
    stop_reason: str
    total_tokens: int
    prompt: str
    prompt_token_ids: list[int]
    policy_version: str
    error: str = ""


Event = Step | TrajectoryDone
_END = object()


class PolicyService:
    """Runs trajectories of the search policy over one shared backend (see the module docstring)."""

    def __init__(self, backend: ModelBackend, tools_factory: ToolsFactory, settings: Settings, *,
                 policy_version: str | None = None) -> None:
        self.backend = backend
        self.tools_factory = tools_factory
        self.settings = settings
        self._fixed_version = policy_version
        self.agent_settings = _capped_agent_settings(backend, settings.agent)
        self.guided = _uses_guided(settings)
        self._gate = asyncio.Semaphore(max(1, settings.plane.policy_trajectories))
        self.active = 0  # trajectories running now (for metrics and tests)

    @property
    def policy_version(self) -> str:
        """The weights now served: the backend's own version after a weight push (``load_weights``)
        when it has one, else the fixed name this service was built with (or the backend's name)."""
        live = getattr(self.backend, "policy_version", None)
        if isinstance(live, str) and live:
            return live
        return self._fixed_version or self.backend.name

    # ----------------------------------------------------------------- running a trajectory

    async def run(self, trajectory_id: str, question: str, lane: str = "live",
                  sampling: SamplingOverrides | None = None, resume_steps: Sequence[Step] = (), *,
                  deadline_s: float | None = None, policy_version: str = "",
                  mode: Mode = "search", job_id: str | None = None) -> AsyncGenerator[Event, None]:
        """Stream the new steps of a trajectory as they complete, then one ``TrajectoryDone``.

        ``resume_steps`` are recorded steps to continue from (they are not streamed again and their
        tool calls are not run again). ``deadline_s`` bounds the whole call, waiting for a slot
        included: past it the run is cancelled and ``DeadlineExceeded`` raised. Closing or
        cancelling the iterator cancels the model request and the tool calls in flight.
        """
        sampling = sampling or SamplingOverrides()
        self._check(trajectory_id, question, lane, sampling, resume_steps, policy_version, mode,
                    deadline_s)
        deadline = None if deadline_s is None else asyncio.get_running_loop().time() + deadline_s
        queue: asyncio.Queue[object] = asyncio.Queue()
        # The run lives in its own task, so the deadline and the concurrency slot never straddle a
        # yield of this generator (a timeout set here would fire in the consumer's code instead).
        task = asyncio.create_task(
            self._drive(queue, trajectory_id, question, lane, sampling, resume_steps, mode, deadline,
                        deadline_s, job_id), name=f"policy:{trajectory_id}")
        try:
            while (item := await queue.get()) is not _END:
                assert isinstance(item, Step)
                yield item
            traj = await task  # raises DeadlineExceeded, or what the loop raised (a bug)
            yield self._done(traj)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                log.info("policy.trajectory_cancelled", trajectory_id=trajectory_id)

    async def _drive(self, queue: asyncio.Queue[object], trajectory_id: str, question: str, lane: str,
                     sampling: SamplingOverrides, resume_steps: Sequence[Step], mode: Mode,
                     deadline: float | None, deadline_s: float | None,
                     job_id: str | None = None) -> Trajectory:
        """Wait for a slot, run the loop, put each step on ``queue`` as it completes, then ``_END``."""
        async def on_step(step: Step, _traj: Trajectory) -> None:
            count_tokens("policy", "completion", step.completion_tokens)
            count_tokens("policy", "tool_response", step.tool_response_tokens)
            queue.put_nowait(copy.deepcopy(step))

        try:
            async with asyncio.timeout_at(deadline), self._gate:
                self.active += 1
                tools = self.tools_factory(lane, trajectory_id, job_id)
                try:
                    agent = AgentLoop(
                        self.backend, tools, self._agent_settings(sampling), self._sampling(sampling),
                        guided=GuidedPolicy.from_settings(self.agent_settings) if self.guided else None,
                        trajectory_id=trajectory_id)
                    traj = agent.new_trajectory(question, mode)
                    traj.steps = [copy.deepcopy(s) for s in resume_steps]
                    log.info("policy.trajectory_started", trajectory_id=trajectory_id, lane=lane,
                             resumed_steps=len(resume_steps))
                    await agent.run(question, mode, on_step=on_step, resume=traj)
                    log.info("policy.trajectory_done", trajectory_id=trajectory_id,
                             stop_reason=traj.stop_reason, steps=len(traj.steps))
                    return traj
                finally:
                    self.active -= 1
                    await tools.aclose()
        except TimeoutError:
            log.info("policy.deadline_exceeded", trajectory_id=trajectory_id, deadline_s=deadline_s)
            raise DeadlineExceeded(f"the trajectory did not finish within its deadline of {deadline_s} s",
                                   reason="TRAJECTORY_DEADLINE", deadline_s=deadline_s) from None
        finally:
            queue.put_nowait(_END)

    def _done(self, traj: Trajectory) -> TrajectoryDone:
        return TrajectoryDone(
            answer=traj.answer or "", stop_reason=traj.stop_reason or "error",
            total_tokens=traj.total_tokens, prompt=traj.prompt,
            prompt_token_ids=_token_ids(self.backend, traj.prompt), policy_version=self.policy_version,
            error=str(traj.meta.get("error", "")),
        )

    # ----------------------------------------------------------------- scoring

    async def score_tokens(self, token_ids: Sequence[int], from_position: int) -> list[float]:
        """Log-probabilities the current weights give to ``token_ids[from_position:]``, each given
        the tokens before it (weight-sync checks of the trainer)."""
        scorer = getattr(self.backend, "score_tokens", None)
        if scorer is None:
            raise FailedPrecondition("this backend cannot score tokens", reason="SCORING_UNSUPPORTED",
                                     backend=self.backend.name)
        if not token_ids:
            raise InvalidArgument("token_ids is empty", reason="EMPTY_TOKENS", field="token_ids")
        if not 1 <= from_position < len(token_ids):
            raise InvalidArgument(
                f"from_position must be in [1, {len(token_ids) - 1}]: the first token has no context",
                reason="BAD_POSITION", field="from_position")
        if any(t < 0 for t in token_ids):
            raise InvalidArgument("token ids must be >= 0", reason="BAD_TOKEN_ID", field="token_ids")
        result: list[float] = await scorer(list(token_ids), from_position)
        return result

    # ----------------------------------------------------------------- settings per call

    def _agent_settings(self, sampling: SamplingOverrides) -> AgentSettings:
        update: dict[str, Any] = {}
        for name in ("max_turns", "max_new_tokens_per_turn", "max_tool_calls"):
            value = getattr(sampling, name)
            if value is not None:
                update[name] = value
        return self.agent_settings.model_copy(update=update) if update else self.agent_settings

    def _sampling(self, sampling: SamplingOverrides) -> SamplingParams:
        role = self.settings.policy
        per_turn = sampling.max_new_tokens_per_turn or self.agent_settings.max_new_tokens_per_turn
        base = SamplingParams(
            max_new_tokens=min(role.max_new_tokens, per_turn), temperature=role.temperature,
            top_p=role.top_p, repetition_penalty=role.repetition_penalty, logprobs=sampling.logprobs,
        )
        update: dict[str, Any] = {k: v for k in ("temperature", "top_p", "repetition_penalty", "seed")
                                  if (v := getattr(sampling, k)) is not None}
        return replace(base, **update) if update else base

    def _check(self, trajectory_id: str, question: str, lane: str, sampling: SamplingOverrides,
               resume_steps: Sequence[Step], policy_version: str, mode: str,
               deadline_s: float | None) -> None:
        """Refuse a bad request before anything runs (INVALID_ARGUMENT / FAILED_PRECONDITION)."""
        if policy_version and policy_version != self.policy_version:
            raise FailedPrecondition(
                f"this server runs policy {self.policy_version!r}, not {policy_version!r}",
                reason="POLICY_VERSION_MISMATCH", expected=policy_version, actual=self.policy_version)
        if not trajectory_id.strip() or len(trajectory_id) > 200:
            raise InvalidArgument("trajectory_id must be 1-200 characters", reason="BAD_TRAJECTORY_ID",
                                  field="trajectory_id")
        limit = self.settings.plane.max_question_chars
        if not question.strip():
            raise InvalidArgument("the question is empty", reason="EMPTY_QUESTION", field="question")
        if len(question) > limit:
            raise InvalidArgument(f"the question is longer than {limit} characters",
                                  reason="QUESTION_TOO_LONG", field="question", limit=limit)
        if lane not in ("live", "train"):
            raise InvalidArgument(f"unknown lane {lane!r}", reason="BAD_LANE", field="lane")
        if mode not in MODES:
            raise InvalidArgument(f"unknown mode {mode!r}", reason="BAD_MODE", field="mode")
        if deadline_s is not None and not deadline_s > 0:
            raise DeadlineExceeded("the deadline has already passed", reason="TRAJECTORY_DEADLINE")
        _check_sampling(sampling)
        _check_resume(resume_steps)


# ----------------------------------------------------------------------- helpers


def _check_sampling(s: SamplingOverrides) -> None:
    problems: list[tuple[str, bool]] = [
        ("temperature", s.temperature is not None
         and not (math.isfinite(s.temperature) and s.temperature >= 0)),
        ("top_p", s.top_p is not None and not 0 < s.top_p <= 1),
        ("repetition_penalty", s.repetition_penalty is not None
         and not (math.isfinite(s.repetition_penalty) and s.repetition_penalty > 0)),
        ("max_turns", s.max_turns is not None and s.max_turns < 1),
        ("max_new_tokens_per_turn", s.max_new_tokens_per_turn is not None and s.max_new_tokens_per_turn < 1),
        ("max_tool_calls", s.max_tool_calls is not None and s.max_tool_calls < 0),
    ]
    for field, bad in problems:
        if bad:
            raise InvalidArgument(f"sampling.{field} is out of range: {getattr(s, field)!r}",
                                  reason="BAD_SAMPLING", field=f"sampling.{field}")


def _check_resume(steps: Sequence[Step]) -> None:
    for i, step in enumerate(steps):
        if step.index != i:
            raise InvalidArgument(f"resume_steps[{i}] has index {step.index}; steps must be 0, 1, 2, ...",
                                  reason="BAD_RESUME_STEPS", field="resume_steps")
    if steps and steps[-1].ends_trajectory:
        raise FailedPrecondition("the trajectory has already ended: its last step made no tool call",
                                 reason="TRAJECTORY_FINISHED", steps=len(steps))


def _uses_guided(settings: Settings) -> bool:
    """The research runtime's rule: guided decoding when asked for, else for the bundled weak model."""
    if "guided" in settings.agent.model_fields_set:
        return settings.agent.guided
    return is_weak_model(settings.policy)


def _capped_agent_settings(backend: ModelBackend, agent: AgentSettings) -> AgentSettings:
    """The 40,960-token budget is the Fathom model's; a smaller model's window is the real limit."""
    window = getattr(backend, "context_tokens", None)
    if isinstance(window, int) and 0 < window < agent.max_context_tokens:
        log.info("policy.context_budget_capped", budget=window, model=backend.name)
        return agent.model_copy(update={"max_context_tokens": window})
    return agent


def _token_ids(backend: ModelBackend, text: str) -> list[int]:
    """The prompt's token ids when the backend has a tokenizer of its own (not an estimate)."""
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return []
    return [int(t) for t in tokenizer(text, add_special_tokens=False).input_ids]


def stop_reason_is_final(stop_reason: str) -> bool:
    """Whether a TrajectoryDone's stop reason ends the trajectory for good (resume changes nothing)."""
    return stop_reason in FINISHED


LaneName = Literal["live", "train"]

__all__ = ["Event", "PolicyService", "SamplingOverrides", "ToolsFactory", "TrajectoryDone",
           "stop_reason_is_final"]
