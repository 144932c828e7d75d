"""RAPO's pieces, pure and tested (FATHOM.md, "RAPO"; docs/TRAINING.md).

Each function is one named piece of the paper's objective, written against torch only so that the
trainer (built on TRL) can call them at its narrowest override points, and tests can check every
formula against hand-computed values:

- ``group_advantages``: GRPO's ``A_i = (r_i - mean(r)) / std(r)`` within one prompt's group.
  The std is TRL's choice: the *sample* std (Bessel's correction, ``trl.trainer.utils.nanstd``),
  and the division is by ``std + 1e-4`` as in ``GRPOTrainer`` (``scale_rewards="group"``). A group
  whose std is zero (all rewards equal, or a group of one, where TRL also takes std = 0) gets zero
  advantages: it carries no learning signal.
- ``advantage_scale``: RAPO's ``n_groups / n_groups_with_nonzero_std``, so that degenerate groups do
  not dilute the update (1.0 when no group has signal: every advantage is zero then anyway).
- ``grpo_token_loss``: the token-level clipped surrogate with a KL penalty to a reference policy,
  identical to TRL's ``GRPOTrainer._compute_loss`` for ``loss_type="dapo"`` (TRL's default): the
  loss is summed over every unmasked token of the batch and divided by the number of those tokens
  (one token-level mean over the whole batch, not a mean of per-sequence means as in
  ``loss_type="grpo"``). For a single micro-batch this also equals TRL's ``"bnpo"``; under gradient
  accumulation pass ``normalizer`` = the unmasked tokens of the whole generation batch, as TRL's
  ``num_items_in_batch`` does. The KL estimator defaults to k3 (Schulman's low-variance estimator,
  ``exp(ref - logp) - (ref - logp) - 1``: what the paper's base framework used and what TRL uses);
  k1 and k2 are selectable.
- ``solve_rate`` / ``prune_prompts``: a prompt whose rollouts are judged correct at a rate >= 0.9
  is dropped at the end of the epoch (exactly 0.9 is dropped). Solve = judged correct, never
  ``reward > 0``.
- ``ReplayBuffer``: per prompt, the most recent rollout with reward > 0.5; when every rollout of the
  prompt failed this epoch, one of them, chosen with the caller's seeded rng, is replaced by it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import torch
from torch import Tensor

KlEstimator = Literal["k1", "k2", "k3"]

ZERO_STD = 1e-6  # a group's reward std at or below this is "zero": no signal, advantages 0
TRL_STD_EPS = 1e-4  # GRPOTrainer divides by (std + 1e-4); matching it keeps our numbers equal to TRL's
PRUNE_THRESHOLD = 0.9  # FATHOM.md: drop prompts with solve rate >= 0.9
REPLAY_THRESHOLD = 0.5  # FATHOM.md: keep the latest rollout with reward > 0.5

R = TypeVar("R")


# --- advantages ------------------------------------------------------------------------------------


def _flat(rewards: Tensor) -> Tensor:
    r = rewards.reshape(-1)
    return r if r.is_floating_point() else r.float()


def group_std(rewards: Tensor) -> Tensor:
    """Sample std of one group's rewards (Bessel's correction, as TRL's ``nanstd``); 0 for a group of
    one, where the sample std is undefined and TRL also takes 0."""
    r = _flat(rewards)
    if r.numel() < 2:
        return torch.zeros((), dtype=r.dtype, device=r.device)
    return r.std(correction=1)


def group_advantages(rewards: Tensor, *, eps: float = TRL_STD_EPS) -> Tensor:
    """GRPO's group-relative advantage ``(r_i - mean(r)) / (std(r) + eps)`` for the G rollouts of one
    prompt; all zeros when the group's std is zero (all rewards equal, or one rollout)."""
    r = _flat(rewards)
    std = group_std(r)
    if float(std) <= ZERO_STD:
        return torch.zeros_like(r)
    return (r - r.mean()) / (std + eps)


def advantage_scale(group_rewards: Sequence[Tensor], eps: float = ZERO_STD) -> float:
    """RAPO's advantage scaling: ``n_groups / n_groups_with_std > eps``. Groups without signal get
    zero advantages; scaling the others up keeps the update's size independent of how many groups
    were degenerate. 1.0 when no group (or no group with signal) is given."""
    if not group_rewards:
        return 1.0
    good = sum(1 for g in group_rewards if float(group_std(g)) > eps)
    return len(group_rewards) / good if good else 1.0


def rapo_advantages(group_rewards: Sequence[Tensor]) -> list[Tensor]:
    """The advantages of a batch of groups as RAPO uses them: group-relative, then scaled by
    ``advantage_scale`` over the batch. One tensor per group, in the given order."""
    scale = advantage_scale(group_rewards)
    return [group_advantages(g) * scale for g in group_rewards]


# --- the loss --------------------------------------------------------------------------------------


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: KlEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    k1 = ``logp - ref`` (unbiased, high variance, can be negative); k2 = ``(logp - ref)^2 / 2``;
    k3 = ``exp(ref - logp) - (ref - logp) - 1`` (unbiased, >= 0, low variance: TRL's and the paper's
    framework's choice)."""
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k2":
        return 0.5 * (logprobs - ref_logprobs) ** 2
    if estimator == "k3":
        delta = ref_logprobs - logprobs
        return torch.exp(delta) - delta - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r} (k1, k2 or k3)")


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of each position's next-token distribution, ``-(p * log p).sum(-1)``, for the
    ``entropy`` statistic of ``grpo_token_loss`` (equals ``trl.trainer.utils.entropy_from_logits``)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _masked_mean(x: Tensor, mask: Tensor, count: float) -> float:
    return float(torch.where(mask, x, torch.zeros_like(x)).sum()) / count if count else 0.0


def grpo_token_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    ref_logprobs: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float,
    kl_coef: float,
    kl_estimator: KlEstimator = "k3",
    clip_eps_high: float | None = None,
    entropy: Tensor | None = None,
    normalizer: float | Tensor | None = None,
    kl_ratio_correction: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """GRPO's token-level clipped surrogate plus ``kl_coef`` times the KL to the reference.

    Shapes: ``logprobs`` / ``old_logprobs`` / ``ref_logprobs`` / ``mask`` / ``entropy`` are (B, T),
    ``advantages`` is (B,) (one per rollout) or (B, T). ``mask`` is 1 on tokens the policy sampled
    and 0 on everything else (tool responses, guided prefills, padding): only those tokens carry
    loss, and the loss is their token-level mean over the whole batch (TRL ``loss_type="dapo"``).
    ``old_logprobs`` are the sampling log-probs (a replayed rollout's stored ones); ``ref_logprobs``
    may be None when ``kl_coef == 0``. ``clip_eps_high`` defaults to ``clip_eps`` (symmetric).
    ``kl_ratio_correction`` multiplies the per-token KL by the (differentiable) ratio, TRL's
    ``use_bias_correction_kl`` (DeepSeek-V3.2; TRL's default is on). Off by default here: the paper's
    base framework added the plain k3 KL; turn it on to reproduce a TRL default run exactly.

    Returns the loss and its statistics, each a mean over unmasked tokens: ``kl`` (the KL term as it
    enters the loss, as TRL logs it),
    ``clip_fraction`` (tokens where clipping removed the gradient: ratio < 1 - eps with A < 0, or
    ratio > 1 + eps_high with A > 0, as TRL's ``clip_ratio/region_mean``), ``clip_low``,
    ``clip_high``, ``ratio_mean``, ``pg_loss`` (the surrogate alone), ``entropy`` (when given) and
    ``tokens``. All-zero masks give a zero loss that still back-propagates (zero gradients).
    """
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef != 0 needs ref_logprobs")
    keep = mask.bool()
    zero = torch.zeros_like(logprobs)
    # Masked positions may hold anything (padding, -inf): zero them *before* exp so neither the
    # loss nor its gradient can pick up a NaN from a token that does not count.
    lp = torch.where(keep, logprobs, zero)
    old = torch.where(keep, old_logprobs.to(lp.dtype), zero)
    adv = advantages.to(lp.dtype)
    if adv.dim() == 1:
        adv = adv.unsqueeze(1)
    adv = adv.expand_as(lp)

    ratio = torch.exp(lp - old)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    pg_per_token = -torch.min(ratio * adv, clipped * adv)
    per_token = pg_per_token
    kl = zero
    if ref_logprobs is not None:
        ref = torch.where(keep, ref_logprobs.to(lp.dtype), zero)
        kl = kl_per_token(lp, ref, kl_estimator)
        if kl_ratio_correction:
            kl = kl * ratio
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl

    count = float(keep.sum())
    denom: Tensor | float
    if normalizer is None:
        denom = max(count, 1.0)
    else:
        denom = torch.clamp(torch.as_tensor(normalizer, dtype=lp.dtype, device=lp.device), min=1.0)
    loss = torch.where(keep, per_token, zero).sum() / denom

    with torch.no_grad():
        low = (ratio < 1.0 - clip_eps) & (adv < 0)
        high = (ratio > 1.0 + eps_high) & (adv > 0)
        stats = {
            "kl": _masked_mean(kl.detach(), keep, count),
            "clip_fraction": _masked_mean((low | high).float(), keep, count),
            "clip_low": _masked_mean(low.float(), keep, count),
            "clip_high": _masked_mean(high.float(), keep, count),
            "ratio_mean": _masked_mean(ratio.detach(), keep, count),
            "pg_loss": _masked_mean(pg_per_token.detach(), keep, count),
            "tokens": count,
        }
        if entropy is not None:
            stats["entropy"] = _masked_mean(entropy.detach().to(lp.dtype), keep, count)
    return loss, stats


# --- pruning ---------------------------------------------------------------------------------------


def solve_rate(verdicts: Sequence[bool]) -> float:
    """Fraction of a prompt's rollouts judged correct (solve = judged correct, not reward > 0)."""
    if not verdicts:
        raise ValueError("solve rate of no rollouts is undefined")
    return sum(1 for v in verdicts if v) / len(verdicts)


def prune_prompts(solve_rates: Mapping[str, float], threshold: float = PRUNE_THRESHOLD) -> set[str]:
    """The prompts to drop at an epoch's end: solve rate >= threshold (exactly the threshold is
    dropped; a rounding hair below it, 1e-9, counts as equal). With G = 5 only 5/5 reaches 0.9."""
    return {
        pid
        for pid, rate in solve_rates.items()
        if rate >= threshold or math.isclose(rate, threshold, rel_tol=0.0, abs_tol=1e-9)
    }


# --- the replay buffer -----------------------------------------------------------------------------


@dataclass
class ReplayEntry(Generic[R]):
    """One prompt's stored rollout: the rollout as recorded (its token ids, mask and the log-probs
    it was sampled with, used for the ratio when it is replayed), its reward, and when."""

    rollout: R
    reward: float
    recorded_at: int


class ReplayBuffer(Generic[R]):
    """RAPO's per-prompt replay buffer.

    ``record`` keeps, per prompt, the most recent rollout whose reward is > ``success_threshold``
    (0.5). ``inject`` is called with a prompt's fresh group: when every rollout failed and a stored
    one exists, one rollout picked with the caller's seeded ``rng`` is replaced by the stored one.

    "Failed" is defined as *not judged correct* (the paper says "fail"; the issue defines solve as
    judged correct). Pass ``correct=`` to ``inject`` to use the verdicts; without them a rollout
    fails when its reward is <= ``success_threshold``, which is the same thing under the paper's
    rewards (stage 1: correct >= 0.9, wrong <= 0.1; stage 2: wrong <= 0.5 <= correct) except a
    correct stage-2 rollout at exactly 0.5, which the verdicts classify right.

    The stored reward is the rollout's own; rewards depend only on the trajectory, so it stays valid
    while the reward settings do (call ``clear`` when switching stage 1 -> 2). ``state_dict`` holds
    the rollouts as given: JSON-ready when they are plain data, picklable (``torch.save``) when they
    are dataclasses. The rng is the caller's, so that resuming restores it with the trainer's state.
    """

    def __init__(self, success_threshold: float = REPLAY_THRESHOLD) -> None:
        self.success_threshold = success_threshold
        self._entries: dict[str, ReplayEntry[R]] = {}
        self._clock = 0
        self.injections = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, prompt_id: str) -> ReplayEntry[R] | None:
        return self._entries.get(prompt_id)

    def clear(self) -> None:
        self._entries.clear()

    def record(self, prompt_id: str, rollout: R, reward: float) -> None:
        """Store ``rollout`` as the prompt's latest success when ``reward > success_threshold``;
        a later success replaces an earlier one, a failure changes nothing."""
        self._clock += 1
        if reward > self.success_threshold:
            self._entries[prompt_id] = ReplayEntry(rollout, float(reward), self._clock)

    def inject(
        self,
        prompt_id: str,
        rollouts: Sequence[R],
        rewards: Sequence[float],
        rng: random.Random,
        *,
        correct: Sequence[bool] | None = None,
    ) -> tuple[list[R], list[float], int | None]:
        """The group to train on: unchanged unless every rollout failed and a stored success exists,
        then with one rollout (index ``rng.randrange(G)``) replaced by the stored one and its
        reward. Returns ``(rollouts, rewards, replaced index or None)``; the inputs are not mutated.
        Call it before ``record``-ing the group (the order does not change the result: a failed
        group records nothing)."""
        if len(rollouts) != len(rewards) or (correct is not None and len(correct) != len(rewards)):
            raise ValueError("rollouts, rewards and correct must have one entry per rollout")
        out, out_rewards = list(rollouts), [float(r) for r in rewards]
        entry = self._entries.get(prompt_id)
        if entry is None or not out:
            return out, out_rewards, None
        if correct is not None:
            all_failed = not any(correct)
        else:
            all_failed = all(r <= self.success_threshold for r in out_rewards)
        if not all_failed:
            return out, out_rewards, None
        index = rng.randrange(len(out))
        out[index] = entry.rollout
        out_rewards[index] = entry.reward
        self.injections += 1
        return out, out_rewards, index

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs for an identical buffer."""
        return {
            "version": 1,
            "success_threshold": self.success_threshold,
            "clock": self._clock,
            "injections": self.injections,
            "entries": {
                pid: {"rollout": e.rollout, "reward": e.reward, "recorded_at": e.recorded_at}
                for pid, e in self._entries.items()
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown replay buffer state version {state.get('version')!r}")
        self.success_threshold = float(state["success_threshold"])
        self._clock = int(state["clock"])
        self.injections = int(state["injections"])
        self._entries = {
            pid: ReplayEntry(e["rollout"], float(e["reward"]), int(e["recorded_at"]))
            for pid, e in state["entries"].items()
        }
