"""RAPO's pieces against hand-computed values, their edge cases, and TRL's own code on the same inputs."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from fathom.training.rapo import (
    ReplayBuffer,
    advantage_scale,
    group_advantages,
    grpo_token_loss,
    kl_per_token,
    prune_prompts,
    rapo_advantages,
    solve_rate,
    token_entropy,
)

LN2 = math.log(2.0)


# --- group advantages ------------------------------------------------------------------------------


def test_group_advantages_hand_computed_sample_std() -> None:
    # [1, 0, 0, 0]: mean 0.25, squared deviations 0.5625 + 3 * 0.0625 = 0.75, sample var 0.75 / 3 = 0.25,
    # std 0.5; TRL divides by std + 1e-4.
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / 0.5001
    torch.testing.assert_close(adv, expected)
    # Two rollouts 0 and 1: the sample std is sqrt(0.5), so +-0.5/0.7072 ~ +-0.7070 (a population std
    # would give +-1): TRL's choice, Bessel-corrected.
    adv2 = group_advantages(torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(adv2, torch.tensor([-0.5, 0.5]) / (math.sqrt(0.5) + 1e-4))
    assert abs(float(adv.sum())) < 1e-6


def test_group_advantages_all_equal_and_group_of_one_are_zero() -> None:
    for rewards in ([0.55] * 5, [0.1, 0.1, 0.1], [0.0] * 5, [1.0]):
        adv = group_advantages(torch.tensor(rewards))
        assert adv.shape == (len(rewards),)
        assert torch.equal(adv, torch.zeros(len(rewards)))


def test_advantage_scale_counts_groups_with_signal() -> None:
    groups = [
        torch.tensor([1.0, 0.0, 0.0, 0.0]),  # signal
        torch.tensor([1.0, 1.0, 1.0, 1.0]),  # all solved: none
        torch.tensor([0.1, 0.1, 0.1, 0.1]),  # all failed: none
        torch.tensor([0.0, 1.0]),  # signal
    ]
    assert advantage_scale(groups) == 4 / 2
    assert advantage_scale(groups[:1]) == 1.0
    assert advantage_scale([torch.tensor([1.0]), torch.tensor([0.0, 1.0])]) == 2.0  # one rollout: no std
    assert advantage_scale(groups[1:3]) == 1.0  # no group with signal: nothing to scale
    assert advantage_scale([]) == 1.0


def test_rapo_advantages_scale_every_group() -> None:
    groups = [torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([0.0] * 4)]
    adv = rapo_advantages(groups)
    torch.testing.assert_close(adv[0], torch.tensor([0.75, -0.25, -0.25, -0.25]) / 0.5001 * 3.0)
    assert torch.equal(adv[1], torch.zeros(4)) and torch.equal(adv[2], torch.zeros(4))


def test_group_advantages_equal_trl() -> None:
    """TRL computes the advantages inline in ``GRPOTrainer._generate_and_score_completions``; these are
    its lines (``scale_rewards="group"``) on the same rewards, with TRL's own ``nanstd``."""
    from trl.trainer.utils import nanstd

    gen = torch.Generator().manual_seed(0)
    g = 5
    rewards = torch.rand(4 * g, generator=gen)
    rewards[g : 2 * g] = 0.1  # one degenerate group
    mean = rewards.view(-1, g).mean(dim=1).repeat_interleave(g)
    std = nanstd(rewards.view(-1, g), dim=1).repeat_interleave(g)
    trl_adv = (rewards - mean) / (std + 1e-4)
    ours = torch.cat([group_advantages(chunk) for chunk in rewards.view(-1, g)])
    torch.testing.assert_close(ours, trl_adv, atol=1e-5, rtol=1e-5)


# --- the token-level loss --------------------------------------------------------------------------


def _clip_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two rollouts of three tokens; A = +1 and A = -1; ratios chosen to hit both clip sides.

    row 0 (A=+1): ratio 1.5 (clipped high: loss -1.2), 0.5 (unclipped: -0.5), 1.0 (-1.0)
    row 1 (A=-1): ratio 0.5 (clipped low: loss +0.8), 1.5 (unclipped: +1.5), masked (tool response)
    """
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -3.0, float("-inf")]])
    ratios = torch.tensor([[1.5, 0.5, 1.0], [0.5, 1.5, 1.0]])
    logprobs = (old + torch.log(ratios)).nan_to_num(neginf=-1e9)
    logprobs[1, 2] = float("-inf")  # a masked position holding garbage must not leak NaN
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logprobs.requires_grad_(True), old, torch.tensor([1.0, -1.0]), mask


def test_grpo_loss_clipping_on_both_sides_hand_computed() -> None:
    logprobs, old, adv, mask = _clip_case()
    loss, stats = grpo_token_loss(logprobs, old, None, adv, mask, clip_eps=0.2, kl_coef=0.0)
    # (-1.2 - 0.5 - 1.0 + 0.8 + 1.5) / 5 unmasked tokens
    assert loss.item() == pytest.approx(-0.08, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(0.4)
    assert stats["clip_low"] == pytest.approx(0.2) and stats["clip_high"] == pytest.approx(0.2)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["tokens"] == 5.0 and stats["kl"] == 0.0
    loss.backward()
    assert logprobs.grad is not None
    # d/dlogp of -A * ratio / 5 where unclipped; zero where clipping bites and on the masked token.
    expected = torch.tensor([[0.0, -0.1, -0.2], [0.0, 0.3, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected)


def test_grpo_loss_asymmetric_clip_and_token_advantages() -> None:
    logprobs, old, _, mask = _clip_case()
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])  # (B, T) advantages broadcast the same
    loss, stats = grpo_token_loss(
        logprobs, old, None, adv, mask, clip_eps=0.2, clip_eps_high=0.6, kl_coef=0.0
    )
    # ratio 1.5 with A=+1 is now inside 1 + 0.6: -1.5 instead of -1.2
    assert loss.item() == pytest.approx((-1.5 - 0.5 - 1.0 + 0.8 + 1.5) / 5, abs=1e-6)
    assert stats["clip_high"] == 0.0 and stats["clip_fraction"] == pytest.approx(0.2)


def test_kl_estimators_hand_computed() -> None:
    lp = torch.tensor([-1.0, -2.0])
    ref = lp - LN2  # log pi - log ref = ln 2 on every token
    torch.testing.assert_close(kl_per_token(lp, ref, "k1"), torch.full((2,), LN2))
    torch.testing.assert_close(kl_per_token(lp, ref, "k2"), torch.full((2,), 0.5 * LN2**2))
    torch.testing.assert_close(kl_per_token(lp, ref, "k3"), torch.full((2,), 0.5 + LN2 - 1.0))
    assert torch.equal(kl_per_token(lp, lp, "k3"), torch.zeros(2))
    with pytest.raises(ValueError):
        kl_per_token(lp, ref, "k4")  # type: ignore[arg-type]


@pytest.mark.parametrize(("estimator", "kl"), [("k3", 0.5 + LN2 - 1.0), ("k1", LN2), ("k2", 0.5 * LN2**2)])
def test_grpo_loss_with_kl_penalty(estimator: str, kl: float) -> None:
    logprobs, old, adv, mask = _clip_case()
    ref = logprobs.detach() - LN2
    loss, stats = grpo_token_loss(
        logprobs,
        old,
        ref,
        adv,
        mask,
        clip_eps=0.2,
        kl_coef=0.1,
        kl_estimator=estimator,  # type: ignore[arg-type]
    )
    assert loss.item() == pytest.approx(-0.08 + 0.1 * kl, abs=1e-6)
    assert stats["kl"] == pytest.approx(kl, abs=1e-6)
    assert stats["pg_loss"] == pytest.approx(-0.08, abs=1e-6)


def test_grpo_loss_kl_ratio_correction() -> None:
    logprobs, old, adv, mask = _clip_case()
    ref = logprobs.detach() - LN2
    loss, stats = grpo_token_loss(
        logprobs, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1, kl_ratio_correction=True
    )
    # k3 times each token's ratio: ratios 1.5, 0.5, 1.0, 0.5, 1.5 average to 1.0
    k3 = 0.5 + LN2 - 1.0
    assert stats["kl"] == pytest.approx(k3, abs=1e-6)
    assert loss.item() == pytest.approx(-0.08 + 0.1 * k3, abs=1e-6)


def test_grpo_loss_entropy_and_normalizer() -> None:
    logprobs, old, adv, mask = _clip_case()
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])  # the masked 100 must not count
    loss, stats = grpo_token_loss(
        logprobs, old, None, adv, mask, clip_eps=0.2, kl_coef=0.0, entropy=entropy, normalizer=10
    )
    assert stats["entropy"] == pytest.approx(3.0)
    assert loss.item() == pytest.approx(-0.4 / 10, abs=1e-6)  # TRL "dapo": sum / batch tokens
    with pytest.raises(ValueError):
        grpo_token_loss(logprobs, old, None, adv, mask, clip_eps=0.2, kl_coef=0.1)


def test_grpo_loss_masks_all_zero() -> None:
    logprobs, old, adv, _ = _clip_case()
    ref = logprobs.detach() - 1.0
    mask = torch.zeros(2, 3, dtype=torch.long)
    loss, stats = grpo_token_loss(logprobs, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1, entropy=ref)
    assert loss.item() == 0.0
    loss.backward()
    assert logprobs.grad is not None and torch.equal(logprobs.grad, torch.zeros(2, 3))
    assert stats == {
        "kl": 0.0,
        "clip_fraction": 0.0,
        "clip_low": 0.0,
        "clip_high": 0.0,
        "ratio_mean": 0.0,
        "pg_loss": 0.0,
        "tokens": 0.0,
        "entropy": 0.0,
    }


def test_token_entropy_equals_trl() -> None:
    from trl.trainer.utils import entropy_from_logits

    assert token_entropy(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(token_entropy(logits), entropy_from_logits(logits))


# --- solve rate and pruning ------------------------------------------------------------------------


def test_solve_rate() -> None:
    assert solve_rate([True, False, True, True, False]) == pytest.approx(0.6)
    assert solve_rate([False] * 5) == 0.0 and solve_rate([True]) == 1.0
    with pytest.raises(ValueError):
        solve_rate([])


def test_prune_at_exactly_point_nine() -> None:
    rates = {
        "nine_of_ten": solve_rate([True] * 9 + [False]),  # exactly 0.9: pruned
        "all": solve_rate([True] * 5),
        "four_of_five": solve_rate([True] * 4 + [False]),  # 0.8: kept
        "rounded": 0.3 * 3,  # 0.8999999999999999: equal up to rounding, pruned
        "just_below": 0.8999,
        "none": 0.0,
    }
    assert rates["nine_of_ten"] == 0.9
    assert prune_prompts(rates) == {"nine_of_ten", "all", "rounded"}
    assert prune_prompts(rates, threshold=0.8) == {
        "nine_of_ten",
        "all",
        "four_of_five",
        "rounded",
        "just_below",
    }
    assert prune_prompts({}) == set()


# --- the replay buffer -----------------------------------------------------------------------------


def test_replay_buffer_keeps_the_latest_success() -> None:
    buf: ReplayBuffer[str] = ReplayBuffer()
    buf.record("p", "first", 0.91)
    buf.record("p", "failed", 0.1)  # a failure never replaces a stored success
    buf.record("p", "at_threshold", 0.5)  # > 0.5 is required
    assert buf.get("p") is not None and buf.get("p").rollout == "first"  # type: ignore[union-attr]
    buf.record("p", "second", 0.6)
    entry = buf.get("p")
    assert entry is not None and (entry.rollout, entry.reward) == ("second", 0.6)
    buf.record("q", "q_fail", 0.0)
    assert "q" not in buf and len(buf) == 1


def test_replay_when_everything_fails() -> None:
    buf: ReplayBuffer[str] = ReplayBuffer()
    buf.record("p", "stored", 0.95)
    group, rewards = ["a", "b", "c", "d", "e"], [0.1, 0.0, 0.05, 0.1, 0.0]
    rng = random.Random(7)
    expected_index = random.Random(7).randrange(5)
    out, out_rewards, index = buf.inject("p", group, rewards, rng)
    assert index == expected_index
    assert out[index] == "stored" and out_rewards[index] == 0.95
    assert [x for i, x in enumerate(out) if i != index] == [x for i, x in enumerate(group) if i != index]
    assert group == ["a", "b", "c", "d", "e"] and rewards == [0.1, 0.0, 0.05, 0.1, 0.0]  # not mutated
    assert buf.injections == 1
    # The injected group now has signal: the stored success gets a positive advantage.
    adv = group_advantages(torch.tensor(out_rewards))
    assert adv[index] > 0 and int((adv > 0).sum()) == 1


def test_replay_not_used_when_one_succeeds_or_nothing_stored() -> None:
    buf: ReplayBuffer[str] = ReplayBuffer()
    buf.record("p", "stored", 0.95)
    rng = random.Random(0)
    state = rng.getstate()
    out, rewards, index = buf.inject("p", ["a", "b"], [0.1, 0.91], rng)
    assert (out, rewards, index) == (["a", "b"], [0.1, 0.91], None)
    out, rewards, index = buf.inject("unseen", ["a", "b"], [0.0, 0.0], rng)
    assert (out, rewards, index) == (["a", "b"], [0.0, 0.0], None)
    assert rng.getstate() == state and buf.injections == 0  # the rng is only drawn on injection


def test_replay_failure_is_judged_incorrect_when_verdicts_given() -> None:
    buf: ReplayBuffer[str] = ReplayBuffer()
    buf.record("p", "stored", 0.9)
    # A correct stage-2 rollout can score exactly 0.5 (rho >= 0.5, no format credit): by reward it
    # looks failed, by verdict it is not, and the verdict decides.
    _, _, index = buf.inject("p", ["a", "b"], [0.5, 0.2], random.Random(0), correct=[True, False])
    assert index is None
    _, _, index = buf.inject("p", ["a", "b"], [0.5, 0.2], random.Random(0))
    assert index is not None
    _, _, index = buf.inject("p", ["a", "b"], [0.5, 0.2], random.Random(0), correct=[False, False])
    assert index is not None
    with pytest.raises(ValueError):
        buf.inject("p", ["a"], [0.1, 0.2], random.Random(0))


@dataclass
class _Rollout:
    completion_ids: list[int]
    logprobs: list[float]


def test_replay_state_dict_resumes_identically(tmp_path) -> None:
    buf: ReplayBuffer[dict[str, object]] = ReplayBuffer()
    buf.record("p", {"ids": [1, 2], "logprobs": [-0.5, -0.25]}, 0.92)
    buf.record("q", {"ids": [3]}, 0.7)
    buf.inject("q", [{"ids": [9]}], [0.0], random.Random(1))
    rng = random.Random(3)
    rng_state = rng.getstate()
    path = tmp_path / "replay.json"
    path.write_text(json.dumps(buf.state_dict()))  # plain-data rollouts: JSON-ready

    resumed: ReplayBuffer[dict[str, object]] = ReplayBuffer()
    resumed.load_state_dict(json.loads(path.read_text()))
    assert resumed.state_dict() == buf.state_dict() and resumed.injections == 1
    group: list[dict[str, object]] = [{"ids": [0]}] * 3
    rewards = [0.0, 0.1, 0.0]
    first = buf.inject("p", group, rewards, rng)
    rng2 = random.Random()
    rng2.setstate(rng_state)
    assert resumed.inject("p", group, rewards, rng2) == first

    typed: ReplayBuffer[_Rollout] = ReplayBuffer()
    typed.record("p", _Rollout([5, 6], [-0.1, -0.2]), 0.8)
    torch.save(typed.state_dict(), tmp_path / "replay.pt")
    back: ReplayBuffer[_Rollout] = ReplayBuffer()
    back.load_state_dict(torch.load(tmp_path / "replay.pt", weights_only=False))
    entry = back.get("p")
    assert entry is not None and entry.rollout == _Rollout([5, 6], [-0.1, -0.2])
    with pytest.raises(ValueError):
        back.load_state_dict({"version": 99})


# --- the loss against TRL's GRPOTrainer, on the real bundled model ---------------------------------


def _no_reward(completions: list[object], **_: object) -> list[float | None]:
    """A reward function for the trainer's constructor; the test never generates."""
    return [0.0] * len(completions)


@pytest.fixture
def own_accelerate_state() -> Iterator[None]:
    """TRL's trainer sets up accelerate's process-wide AcceleratorState; drop it afterwards, so that
    later trainers in this test process start from a clean one (as each run's own process does)."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.slow
@pytest.mark.usefixtures("own_accelerate_state")
def test_grpo_token_loss_equals_trl_grpo_trainer(tmp_path) -> None:
    """TRL's ``GRPOTrainer._compute_loss`` (``loss_type="dapo"``, k3 KL, ``tool_mask``) on the bundled
    SmolLM2-135M and ours on the same log-probs give the same loss, gradients and statistics, with
    tokens clipped on both sides, negative advantages and tool-response tokens masked out."""
    from datasets import Dataset
    from fathom.core.config import Settings
    from fathom.models.bundled import BUNDLED_MODEL, resolve_model
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_generations=2,
        beta=0.04,
        epsilon=0.2,
        loss_type="dapo",
        report_to=[],
        use_cpu=True,
        bf16=False,  # GRPOConfig defaults to bf16 autocast; ours runs in float32 here
        max_completion_length=6,
    )
    trainer = GRPOTrainer(
        model=resolve_model(BUNDLED_MODEL, Settings()),
        reward_funcs=_no_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}),
    )
    model = trainer.model
    assert model is not None
    model.eval()  # no dropout; TRL then normalises by the batch's tokens alone ("eval" mode)
    gen = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(100, 2000, (2, 4), generator=gen)
    completion_ids = torch.randint(100, 2000, (2, 6), generator=gen)
    prompt_mask = torch.ones(2, 4, dtype=torch.long)
    completion_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # row 1 padded
    tool_mask = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1]])  # row 0: a tool response
    mask = completion_mask * tool_mask
    with torch.no_grad():
        current, _, _ = trainer._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), 6
        )
    ratios = torch.tensor([[1.5, 0.5, 1.0, 1.0, 1.1, 0.7], [0.5, 1.5, 0.9, 1.3, 1.0, 1.0]])
    old = current - torch.log(ratios)
    ref = current - 0.3 * torch.arange(6).float()
    advantages = torch.tensor([1.2, -0.7])
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "tool_mask": tool_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    weight = embeddings.weight
    assert isinstance(weight, torch.nn.Parameter)
    for correction in (False, True):  # TRL's use_bias_correction_kl: KL times the ratio (its default)
        setattr(trainer.args, "use_bias_correction_kl", correction)  # noqa: B010 (GRPOConfig field)
        model.zero_grad()
        trl_loss = trainer._compute_loss(model, inputs)
        trl_loss.backward()
        assert weight.grad is not None
        trl_grad = weight.grad.clone()
        model.zero_grad()

        logprobs, entropy, _ = trainer._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([prompt_mask, completion_mask], 1),
            6,
            compute_entropy=True,
        )
        ours, stats = grpo_token_loss(
            logprobs,
            old,
            ref,
            advantages,
            mask,
            clip_eps=0.2,
            kl_coef=0.04,
            kl_estimator="k3",
            entropy=entropy,
            kl_ratio_correction=correction,
        )
        ours.backward()
        torch.testing.assert_close(ours.detach(), trl_loss.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(weight.grad, trl_grad, atol=1e-7, rtol=1e-4)
        metrics = trainer._metrics["eval"]
        assert stats["kl"] == pytest.approx(metrics["kl"][-1], rel=1e-5)
        assert stats["entropy"] == pytest.approx(metrics["entropy"][-1], rel=1e-5)
        assert stats["clip_fraction"] == pytest.approx(metrics["clip_ratio/region_mean"][-1])
        assert stats["clip_fraction"] > 0 and stats["clip_low"] > 0 and stats["clip_high"] > 0
