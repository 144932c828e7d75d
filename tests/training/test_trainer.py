"""The RAPO trainer: data order, the direct task's reward, real updates on the bundled model, and a
resumed run that continues with the same data order, replay buffer and weights as an unbroken one."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fathom.core.config import Settings
from fathom.training.agent_rollouts import (
    AgentRollouts,
    WeightSyncUnavailable,
    build_rollout_source,
    rollout_settings,
)
from fathom.training.config import RunConfig, load_config
from fathom.training.data import Prompt, PromptSchedule, load_prompts
from fathom.training.metrics import read_metrics
from fathom.training.trainer import (
    DirectRollouts,
    RapoTrainer,
    completion_logprobs,
    direct_reward,
    load_policy,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FixedRollout:
    prompt_ids: list[int]
    completion_ids: list[int]

    @property
    def mask(self) -> list[int]:
        return [1] * len(self.completion_ids)


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(f"p{i}", f"question {i}?", (f"answer {i}",)) for i in range(n)]


def test_schedule_is_seeded_per_epoch_and_survives_a_state_round_trip() -> None:
    a = PromptSchedule(_prompts(7), batch_prompts=3, seed=5)
    first = [p.prompt_id for p in a.next_batch()]
    b = PromptSchedule(_prompts(7), batch_prompts=3, seed=5)
    b.load_state_dict(a.state_dict())
    assert [p.prompt_id for p in a.next_batch()] == [p.prompt_id for p in b.next_batch()]
    a.next_batch()
    assert a.epoch_done and len(first) == 3
    a.new_epoch({"p0", "p1"})
    assert a.epoch == 1 and sorted(a.order) == ["p2", "p3", "p4", "p5", "p6"]
    assert PromptSchedule(_prompts(7), 3, seed=6).order != PromptSchedule(_prompts(7), 3, seed=5).order


def test_closed_sources_load_with_golds_and_heldout_is_disjoint() -> None:
    cfg = RunConfig.model_validate({"data": {"sources": ["closed:hotpotqa_train.json",
                                                         "closed:nq-open-oracle.jsonl.gz"],
                                             "heldout": 10, "limit": 20}})
    train, held = load_prompts(cfg.data, seed=0)
    assert len(train) == 20 and len(held) == 10
    assert not {p.prompt_id for p in train} & {p.prompt_id for p in held}
    assert all(p.golds and p.question for p in train + held)


def test_direct_reward_by_hand() -> None:
    assert direct_reward("It is \\boxed{Paris}.", ["paris"], "format")[:2] == (pytest.approx(1.0), True)
    assert direct_reward("\\boxed{Lyon}", ["Paris"], "format")[0] == pytest.approx(0.1)
    two_boxes = "\\boxed{a} \\boxed{Paris}"
    assert direct_reward(two_boxes, ["Paris"], "format")[0] == pytest.approx(0.9)
    assert direct_reward("Paris", ["Paris"], "format")[:2] == (0.0, False)
    assert direct_reward("\\boxed{Lyon}", ["Paris"], "exact")[0] == 0.0
    # "the" is dropped by normalisation: "city of paris" has precision 1/3, recall 1
    assert direct_reward("the city of Paris", ["Paris"], "f1")[0] == pytest.approx(0.5)


def test_smoke_config_parses() -> None:
    cfg = load_config(REPO / "configs" / "rapo-smoke.yaml", {"rapo.max_steps": 1})
    assert cfg.rapo.max_steps == 1 and cfg.model.startswith("bundled:")
    assert cfg.rollout.kind == "agent" and cfg.rollout.policy == "inprocess"


def _agent_config(out: Path, **rollout: object) -> RunConfig:
    return RunConfig.model_validate({
        "output_dir": str(out), "tensorboard": False, "seed": 1, "torch_threads": 2,
        "reward_stage": 2, "judge": "exact",
        "data": {"sources": ["closed:hotpotqa_train.json"], "level": "easy", "limit": 1},
        "rapo": {"group_size": 3, "batch_prompts": 1, "minibatch_size": 3, "max_steps": 1,
                 "learning_rate": 1e-4},
        "rollout": {"kind": "agent", "guided": True, "temperature": 1.0, "max_new_tokens": 32,
                    "max_turns": 3, "max_tool_calls": 3, "max_context_tokens": 2000, **rollout},
        "settings": {"search": {"backend": "local"}, "web": {"port": 0}},  # a private local web
    })


def test_rollout_settings_write_the_run_budget_and_reward_choice(tmp_path: Path) -> None:
    cfg = _agent_config(tmp_path)
    s = rollout_settings(cfg, Settings.model_validate(cfg.settings))
    assert s.agent.guided and "guided" in s.agent.model_fields_set  # followed, not the weak-model rule
    assert (s.agent.max_turns, s.agent.guided_max_turns, s.agent.max_new_tokens_per_turn) == (3, 3, 32)
    assert (s.agent.max_tool_calls, s.agent.max_context_tokens) == (3, 2000)
    assert (s.reward.stage, s.reward.judge) == (2, "exact")


def test_rollout_seeds_are_distinct_per_step_prompt_and_member(tmp_path: Path) -> None:
    cfg = _agent_config(tmp_path)
    source = AgentRollouts(cfg, Settings.model_validate(cfg.settings))
    G = 3
    seeds = [source.sampling(step, j, G).seed + i for step in range(4) for j in range(5) for i in range(G)]
    assert len(set(seeds)) == len(seeds)  # group_rollouts adds i to the group's base seed
    s = source.sampling(2, 1, G)
    assert s.repetition_penalty == 1.0 and s.logprobs and s.temperature == 1.0  # the trainer's distribution
    assert source.sampling(2, 1, G) == s  # a resumed run draws the same rollouts


def test_grpc_policy_without_a_shared_weights_dir_is_refused_for_training(tmp_path: Path) -> None:
    cfg = _agent_config(tmp_path, policy="grpc")
    with pytest.raises(WeightSyncUnavailable, match="weights_dir"):
        asyncio.run(build_rollout_source(cfg, Settings(), torch.nn.Linear(1, 1), None))


@pytest.mark.slow
def test_one_agent_step_pushes_weights_and_the_next_rollouts_carry_them(tmp_path: Path) -> None:
    """One real RAPO step on agent rollouts (policy service, real toolbox over the local web, stage-2
    reward); then the rollout policy serves the trainer's weights: its policy_version moved, the next
    rollouts carry it, its tensors are the trainer's, and it scores a fixed sequence as the trainer's
    model does. (Whether this one step has a gradient depends on the sampled rewards differing within
    the group; the direct-rollout test below proves real updates.)"""
    cfg = _agent_config(tmp_path / "run", max_turns=2)
    cfg.rapo.group_size = cfg.rapo.minibatch_size = 2  # the smallest group: this test is about the push
    cfg.rapo.kl_coef = 0.0  # no reference model to copy and run: the update is what is pushed
    settings = Settings.model_validate(cfg.settings)

    async def go() -> None:
        model, tok = load_policy(cfg, settings)
        source = await build_rollout_source(cfg, settings, model, tok)
        assert isinstance(source, AgentRollouts)
        try:
            trainer = RapoTrainer(cfg, source, model, tok)
            trained = trainer.accelerator.unwrap_model(trainer.model)
            version0 = source.policy.policy_version
            rows = await trainer.run()
            row = rows[0]
            assert row["rollout_policy_version"] == version0 and row["tool_calls"] > 0
            version1 = source.policy.policy_version
            assert version1 != version0 and version1.endswith("@1")
            groups = await source.rollouts(list(trainer.schedule.prompts.values())[:1], 1, step=1)
            assert groups[0][0].policy_version == version1
            # The served weights are the trainer's, tensor for tensor (buffers too: rotary tables)...
            served_model = source.backend._model
            ours_state, served_state = trained.state_dict(), served_model.state_dict()
            assert ours_state.keys() == served_state.keys()
            moved = [k for k in ours_state if not torch.equal(ours_state[k], served_state[k])]
            assert moved == []
            for (name, a), (_, b) in zip(trained.named_buffers(), served_model.named_buffers(), strict=True):
                assert torch.equal(a, b), name
            # ...so a fixed sequence gets the same log-probs from the policy and from the trainer.
            fixed = FixedRollout(prompt_ids=list(range(1000, 1040)), completion_ids=list(range(2000, 2030)))
            served = await source.backend.score_tokens(fixed.prompt_ids + fixed.completion_ids, 40)
            ours = completion_logprobs(trained, [fixed], 1.0, int(tok.pad_token_id))[0][0].tolist()
            assert served == pytest.approx(ours, abs=1e-4)
        finally:
            await source.aclose()

    asyncio.run(go())


def _config(out: Path, max_steps: int) -> RunConfig:
    return RunConfig.model_validate({
        # A checkpoint only where a run ends (4 s each: model, optimizer, serving copy): the resumed
        # run starts from the 2-step run's last one.
        "output_dir": str(out), "tensorboard": False, "seed": 3, "torch_threads": 2, "checkpoint_every": 100,
        "data": {"sources": ["closed:hotpotqa_train.json"], "limit": 3},
        # replay_threshold -1: every rollout is recorded, so the buffer has state to compare
        "rapo": {"group_size": 2, "batch_prompts": 2, "minibatch_size": 2, "max_steps": max_steps,
                 "learning_rate": 1e-4, "replay_threshold": -1.0, "epochs": 5},
        "rollout": {"kind": "direct", "temperature": 1.0, "max_new_tokens": 8, "direct_reward": "f1"},
    })


def _trainer(cfg: RunConfig) -> RapoTrainer:
    model, tok = load_policy(cfg, Settings())
    source = DirectRollouts(model, tok, cfg)
    trainer = RapoTrainer(cfg, source, model, tok)
    source.model = trainer.accelerator.unwrap_model(trainer.model)
    return trainer


@pytest.mark.slow
def test_real_updates_and_a_resumed_run_matches_an_unbroken_one(tmp_path: Path) -> None:
    unbroken = _trainer(_config(tmp_path / "a", 3))
    before = [p.detach().clone() for p in unbroken.accelerator.unwrap_model(unbroken.model).parameters()]
    rows = asyncio.run(unbroken.run())
    after = list(unbroken.accelerator.unwrap_model(unbroken.model).parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # real updates
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["policy_version"] == 3
    # 3 prompts, 2 per step: step 2 is the short end of epoch 0, step 3 starts epoch 1
    assert [r["prompts"] for r in rows] == [2, 1, 2] and rows[2]["epoch"] == 1
    for key in ("reward_mean", "reward_std", "solve_rate", "prompts_pruned", "replay_injections",
                "tool_calls_per_rollout", "response_tokens_per_rollout", "step_labels", "kl",
                "clip_fraction", "entropy", "rollout_s", "trainer_s"):
        assert key in rows[-1], key
    assert len(read_metrics(tmp_path / "a" / "metrics.jsonl")) == 3

    first = _trainer(_config(tmp_path / "b", 2))
    asyncio.run(first.run())  # "killed" after step 2: a new process state resumes from its checkpoint
    resumed = _trainer(_config(tmp_path / "b", 3))
    rows_b = asyncio.run(resumed.run())
    assert [r["step"] for r in rows_b] == [3]
    assert resumed.schedule.state_dict() == unbroken.schedule.state_dict()
    buf_a, buf_b = unbroken.replay.state_dict(), resumed.replay.state_dict()
    assert buf_a["entries"].keys() == buf_b["entries"].keys() and buf_a["clock"] == buf_b["clock"]
    for pid in buf_a["entries"]:
        ids_a = buf_a["entries"][pid]["rollout"].completion_ids
        assert ids_a == buf_b["entries"][pid]["rollout"].completion_ids
    assert rows_b[0]["reward_mean"] == pytest.approx(rows[-1]["reward_mean"])
    wa = unbroken.accelerator.unwrap_model(unbroken.model).state_dict()
    wb = resumed.accelerator.unwrap_model(resumed.model).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_a_process_set_up_for_another_precision_is_refused_not_inherited(tmp_path: Path) -> None:
    """accelerate's AcceleratorState is process-wide: a trainer that did not name its precision would
    train in whatever an earlier one set up (TRL's GRPOConfig defaults to bf16). Ours names it."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cfg = _config(tmp_path, 1)
    assert cfg.mixed_precision == "no"
    AcceleratorState._reset_state(reset_partial_state=True)  # as in a new process: then the other trainer
    Accelerator(cpu=True, mixed_precision="bf16")
    try:
        with pytest.raises(ValueError, match="mixed_precision='no'"):
            RapoTrainer(cfg, DirectRollouts(torch.nn.Linear(2, 2), None, cfg), torch.nn.Linear(2, 2), None)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
