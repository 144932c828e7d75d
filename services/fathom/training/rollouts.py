"""Token-exact rollouts: what RAPO trains on, built from the ids the policy saw and sampled.

The agent loop, asked for log-probs on a backend that serves the token path
(``fathom.models.base.TokenBackend``), prompts the model with token ids and records every id that
enters the context as ``step.meta["segments"]`` (kinds in ``fathom.agent.guided``). A rollout is the
prompt ids followed by those segments, concatenated: nothing is re-tokenized after the fact. The
mask is 1 exactly on ids the policy produced ("sampled", and the guided policy's "choice"), 0 on
prefills, end-of-turn markers, nudges and tool responses.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fathom.agent.guided import SAMPLED_KINDS
from fathom.agent.policy_service import SamplingOverrides, TrajectoryDone
from fathom.agent.trajectory import Step, Trajectory


@dataclass
class TokenRollout:
    """One rollout as the trainer sees it. ``logprobs`` and ``mask`` align with ``completion_ids``;
    log-probs are the sampling-time ones (0.0 where mask is 0)."""

    prompt_id: str
    question: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    mask: list[int]  # 1 = sampled by the policy
    reward: float = 0.0
    breakdown: dict[str, Any] = field(default_factory=dict)
    correct: bool = False
    policy_version: str = ""
    tool_calls: int = 0
    steps: int = 0

    @property
    def sampled_tokens(self) -> int:
        return sum(self.mask)


class NotTokenExact(ValueError):
    """The trajectory was not recorded on the token path; training on it would mean re-tokenizing."""


def token_rollout(traj: Trajectory, *, prompt_id: str = "", reward: float = 0.0,
                  breakdown: Mapping[str, Any] | None = None, correct: bool = False,
                  policy_version: str = "") -> TokenRollout:
    """The training sequence of ``traj``: its prompt ids, then each step's recorded segments."""
    prompt_ids = traj.meta.get("prompt_ids")
    if not isinstance(prompt_ids, list) or not prompt_ids:
        raise NotTokenExact("the trajectory has no prompt_ids: it was not run on the token path")
    if traj.meta.get("retokenized_steps"):
        raise NotTokenExact("the trajectory resumed from steps recorded without token segments")
    ids: list[int] = []
    logprobs: list[float] = []
    mask: list[int] = []
    for step in traj.steps:
        segments = step.meta.get("segments")
        if not isinstance(segments, list):
            raise NotTokenExact(f"step {step.index} has no token segments")
        for seg in segments:
            sampled = seg["kind"] in SAMPLED_KINDS
            n = len(seg["ids"])
            lps = seg.get("logprobs")
            if sampled and (lps is None or len(lps) != n):
                raise NotTokenExact(f"step {step.index}: sampled ids without one log-prob each")
            ids.extend(int(t) for t in seg["ids"])
            logprobs.extend([float(x) for x in lps] if sampled and lps is not None else [0.0] * n)
            mask.extend([int(sampled)] * n)
    return TokenRollout(
        prompt_id=prompt_id, question=traj.question, prompt_ids=[int(t) for t in prompt_ids],
        completion_ids=ids, logprobs=logprobs, mask=mask, reward=reward, breakdown=dict(breakdown or {}),
        correct=correct, policy_version=policy_version or str(traj.meta.get("policy_version", "")),
        tool_calls=len(traj.tool_calls), steps=len(traj.steps))


def _runner(policy: Any) -> Any:
    for name in ("run_trajectory", "run"):  # PolicyClient, PolicyService
        fn = getattr(policy, name, None)
        if callable(fn):
            return fn
    raise TypeError(f"{type(policy).__name__} runs no trajectories (neither run_trajectory nor run)")


async def one_rollout(policy: Any, question: str, sampling: SamplingOverrides, lane: str = "train",
                      trajectory_id: str | None = None) -> Trajectory:
    """Run one trajectory through a policy service (in process or over gRPC) and collect it."""
    tid = trajectory_id or f"rollout-{uuid.uuid4().hex[:12]}"
    steps: list[Step] = []
    done: TrajectoryDone | None = None
    async for event in _runner(policy)(tid, question, lane, sampling):
        if isinstance(event, TrajectoryDone):
            done = event
        else:
            steps.append(event)
    if done is None:
        raise RuntimeError(f"trajectory {tid} ended without a TrajectoryDone")
    return Trajectory(
        question=question, prompt=done.prompt, steps=steps, answer=done.answer or None,
        stop_reason=done.stop_reason, total_tokens=done.total_tokens,  # type: ignore[arg-type]
        meta={"trajectory_id": tid, "prompt_ids": list(done.prompt_token_ids),
              "policy_version": done.policy_version, "lane": lane, "seed": sampling.seed,
              **({"error": done.error} if done.error else {})})


async def group_rollouts(policy: Any, question: str, G: int, sampling: SamplingOverrides,
                         lane: str = "train", *, prompt_id: str = "") -> list[Trajectory]:
    """G rollouts of one question, concurrently (the policy service batches them). Log-probs are
    always asked for (that is what selects the token path); with ``sampling.seed`` rollout i gets
    seed + i, so a group is reproducible and its members differ."""
    import asyncio
    from dataclasses import replace

    if G < 1:
        raise ValueError(f"G must be >= 1, got {G}")
    base = replace(sampling, logprobs=True)
    tag = prompt_id or uuid.uuid4().hex[:8]

    def member(i: int) -> SamplingOverrides:
        return base if base.seed is None else replace(base, seed=base.seed + i)

    return list(await asyncio.gather(*(
        one_rollout(policy, question, member(i), lane, f"{tag}-g{i}-{uuid.uuid4().hex[:6]}")
        for i in range(G))))


def rollouts_of(trajs: Sequence[Trajectory], prompt_id: str) -> list[TokenRollout]:
    """``token_rollout`` of each member of a group (rewards are filled in by the scorer later)."""
    return [token_rollout(t, prompt_id=prompt_id) for t in trajs]
