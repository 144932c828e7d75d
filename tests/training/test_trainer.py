"""The RAPO trainer: data order, the direct task's reward, real updates on the bundled model, and a
resumed run that continues with the same data order, replay buffer and weights as an unbroken one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from fathom.core.config import Settings
from fathom.training.config import RunConfig, load_config
from fathom.training.data import Prompt, PromptSchedule, load_prompts
from fathom.training.metrics import read_metrics
from fathom.training.trainer import DirectRollouts, RapoTrainer, direct_reward, load_policy

REPO = Path(__file__).resolve().parents[2]


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


def _config(out: Path, max_steps: int) -> RunConfig:
    return RunConfig.model_validate({
        "output_dir": str(out), "tensorboard": False, "seed": 3, "torch_threads": 1,
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
