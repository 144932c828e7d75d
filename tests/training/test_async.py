"""Asynchronous RAPO rollouts on the real trainer with DirectRollouts and the bundled model (tiny
answers): step k+1's batch is sampled from version k's weights while step k trains, staleness stays
within its bound and is logged, older rollouts are refused, and a run killed with a batch in flight
resumes with the same data order."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from fathom.core.config import Settings
from fathom.training.agent_rollouts import StaleRollout
from fathom.training.config import RunConfig
from fathom.training.data import Prompt
from fathom.training.metrics import read_metrics
from fathom.training.trainer import DirectRollouts, RapoTrainer, check_staleness, load_policy, thread_split


class Killed(RuntimeError):
    """The process 'dies' here."""


def fingerprint(model: torch.nn.Module) -> str:
    """The weights, cheaply: the first 256 values of every tensor (weight decay moves them all)."""
    h = hashlib.sha1()
    for t in model.state_dict().values():
        h.update(t.detach().flatten()[:256].float().numpy().tobytes())
    return h.hexdigest()


class RecordingRollouts(DirectRollouts):
    """The real DirectRollouts, recording per call the step, its prompts, the rollouts' version tags
    and the weights they were sampled with (fingerprinted on the sampling thread), and the weights
    of every version pushed to it."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: RunConfig, events: list[Any],
                 kill_at: int | None = None) -> None:
        super().__init__(model, tokenizer, config)
        self.events = events
        self.kill_at = kill_at
        self.calls: dict[int, dict[str, Any]] = {}
        self.pushed: dict[int, str] = {0: fingerprint(model)}
        self._sampled_with = ""

    def sample(self, prompt: Prompt, n: int, seed: int, *, greedy: bool = False) -> list[Any]:
        self._sampled_with = fingerprint(self.model)
        return super().sample(prompt, n, seed, greedy=greedy)

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int, *,
                       accept: Collection[str] | None = None) -> list[list[Any]]:
        self.events.append(("sample", step))
        if step == self.kill_at:
            raise Killed(f"killed while sampling step {step}")
        groups = await super().rollouts(prompts, group_size, step, accept=accept)
        self.calls[step] = {"prompts": [p.prompt_id for p in prompts], "weights": self._sampled_with,
                            "tags": {r.policy_version for g in groups for r in g}}
        return groups

    async def push_weights(self, model: torch.nn.Module, version: int) -> None:
        self.pushed[version] = fingerprint(model)
        await super().push_weights(model, version)


def _config(out: Path, max_steps: int, checkpoint_every: int) -> RunConfig:
    return RunConfig.model_validate({
        "output_dir": str(out), "tensorboard": False, "seed": 7, "torch_threads": 2,
        "checkpoint_every": checkpoint_every,
        # 3 prompts, 1 a step: steps 0-2 are epoch 0, step 3 starts epoch 1 (drawn synchronously)
        "data": {"sources": ["closed:hotpotqa_train.json"], "limit": 3},
        # weight decay moves every weight each update, so consecutive versions always differ;
        # no KL term: no reference model to copy and run (the test is about the schedule)
        "rapo": {"group_size": 2, "batch_prompts": 1, "minibatch_size": 2, "max_steps": max_steps,
                 "learning_rate": 1e-3, "weight_decay": 1.0, "kl_coef": 0.0, "epochs": 5,
                 "pruning": False, "async_rollouts": True, "max_staleness": 1},
        "rollout": {"kind": "direct", "temperature": 1.0, "max_new_tokens": 4, "direct_reward": "f1"},
    })


def _trainer(cfg: RunConfig, events: list[Any], kill_at: int | None = None) -> RapoTrainer:
    model, tok = load_policy(cfg, Settings())
    return RapoTrainer(cfg, RecordingRollouts(model, tok, cfg, events, kill_at), model, tok)


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One unbroken asynchronous run of 4 steps, with the order of samplings and updates. Driven by
    ``train_step`` (as scripts/learning_curve.py does), so no checkpoint is written: the killed run
    below goes through ``run``."""
    out = tmp_path_factory.mktemp("async") / "a"
    events: list[Any] = []
    trainer = _trainer(_config(out, 4, checkpoint_every=100), events)
    update = trainer._update

    def timed_update(flat: list[Any], advantages: list[float]) -> dict[str, float]:
        events.append(("update_start", trainer.state.step))
        try:
            return update(flat, advantages)
        finally:
            events.append(("update_end", trainer.state.step))

    trainer._update = timed_update  # type: ignore[method-assign]

    schedules: list[dict[str, Any]] = []

    async def train() -> list[dict[str, Any]]:
        rows = []
        try:
            for _ in range(4):
                rows.append(await trainer.train_step())
                schedules.append(trainer.schedule.state_dict())
            return rows
        finally:
            await trainer.aclose()

    rows = asyncio.run(train())
    source = trainer.source
    assert isinstance(source, RecordingRollouts)
    result = {"rows": rows, "events": events, "calls": source.calls, "pushed": source.pushed,
              "schedules": schedules, "metrics": read_metrics(out / "metrics.jsonl"),
              "threads": trainer._threads, "sampler_threads": source.threads}
    asyncio.run(source.aclose())
    return result


def test_staleness_check_accepts_exactly_the_bound() -> None:
    assert check_staleness(5, 5, 1) == 0 and check_staleness(5, 4, 1) == 1
    with pytest.raises(StaleRollout, match="staleness 2"):
        check_staleness(5, 3, 1)  # version k-2
    with pytest.raises(StaleRollout):
        check_staleness(5, 6, 1)  # newer than the trainer: never
    with pytest.raises(StaleRollout):
        check_staleness(5, 4, 0)  # a synchronous run takes its own version only
    assert check_staleness(5, 3, 2) == 2


def test_a_source_refuses_to_sample_outside_the_accepted_versions() -> None:
    cfg = RunConfig.model_validate({"rollout": {"kind": "direct"}})
    source = DirectRollouts(torch.nn.Linear(1, 1), None, cfg)
    source.version = 3  # the trainer is at 5, staleness bound 1: versions 4 and 5 only
    with pytest.raises(StaleRollout, match="version 3"):
        asyncio.run(source.rollouts([Prompt("p", "q?", ("a",))], 2, step=5, accept={"4", "5"}))


def test_thread_split() -> None:
    assert thread_split(2) == (1, 1) and thread_split(1) == (1, 1) and thread_split(5) == (2, 3)
    assert thread_split(4, sampler=3) == (3, 1) and thread_split(2, sampler=4) == (4, 1)


@pytest.mark.slow
def test_async_run_samples_step_k_plus_1_with_version_k_while_step_k_trains(unbroken: dict[str, Any]) -> None:
    rows, calls, pushed = unbroken["rows"], unbroken["calls"], unbroken["pushed"]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # Step 0 and the first step of epoch 1 (no batch is drawn across an epoch's end) sample with
    # the current weights; steps 1 and 2 were prefetched while the previous step trained.
    assert [r["staleness"] for r in rows] == [0, 1, 1, 0]
    assert [r["rollout_version"] for r in rows] == [0, 0, 1, 3]
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    assert all(r["staleness"] <= 1 for r in rows)
    assert len(set(pushed.values())) == len(pushed) == 4  # versions 0..3, all different weights
    for step, version in ((0, 0), (1, 0), (2, 1), (3, 3)):
        assert calls[step]["tags"] == {str(version)}, step  # the recorded policy version...
        assert calls[step]["weights"] == pushed[version], step  # ...is the weights that sampled
    assert calls[2]["weights"] != pushed[2]  # not the trainer's version at the time it trained
    # Step k+1's batch started sampling before step k's update was over (the sampler runs beside it).
    events = unbroken["events"]
    assert events.index(("sample", 0)) < events.index(("sample", 1)) < events.index(("update_end", 0))
    assert events.index(("update_end", 0)) < events.index(("sample", 2)) < events.index(("update_end", 1))
    assert events.index(("sample", 3)) > events.index(("update_end", 2))  # epoch 1: drawn after training
    # Every step row in metrics.jsonl has the staleness column.
    assert [m["staleness"] for m in unbroken["metrics"]] == [0, 1, 1, 0]
    assert all("rollout_wait_s" in m and "rollout_s" in m for m in unbroken["metrics"])
    assert unbroken["threads"] == (1, 1) and unbroken["sampler_threads"] == 1  # 2 threads, split


@pytest.mark.slow
def test_killed_async_run_resumes_with_the_same_data_order(tmp_path: Path, unbroken: dict[str, Any]) -> None:
    """Killed while step 1's batch was sampling in the background, after the step-1 checkpoint: the
    checkpoint holds the schedule from before that batch was drawn, so the resumed run draws the
    same prompts again and samples them from the checkpoint's weights (staleness 0 for that one
    step), then goes on prefetching."""
    out = tmp_path / "b"
    events: list[Any] = []
    killed = _trainer(_config(out, 3, checkpoint_every=1), events, kill_at=1)
    with pytest.raises(Killed):
        asyncio.run(killed.run())
    assert (out / "checkpoints" / "step-1" / "COMPLETE").is_file()
    assert ("sample", 1) in events and sorted(killed.source.calls) == [0]  # type: ignore[attr-defined]
    first_calls = dict(killed.source.calls)  # type: ignore[attr-defined]
    del killed

    resumed = _trainer(_config(out, 3, checkpoint_every=100), [])
    rows = asyncio.run(resumed.run())
    assert [r["step"] for r in rows] == [2, 3]
    assert [(r["staleness"], r["rollout_version"]) for r in rows] == [(0, 1), (1, 1)]
    calls = first_calls | resumed.source.calls  # type: ignore[attr-defined]
    order = {s: c["prompts"] for s, c in calls.items()}
    assert order == {s: c["prompts"] for s, c in unbroken["calls"].items() if s < 3}
    assert resumed.schedule.state_dict() == unbroken["schedules"][2]  # both after step 3
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
