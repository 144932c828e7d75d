"""``fathom bench rollouts``: the split arithmetic by hand and a real replay run with tiny counts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fathom.bench.rollouts import (
    RolloutBench,
    latency_summary,
    replay_rollouts,
    split,
    summary_lines,
    trainer_split,
)
from fathom.core.config import Settings


def test_split_by_hand() -> None:
    r = split(wall_s=10.0, model_s=9.0, tool_s=0.6, reward_s=0.4, trainer_s=0.0, rollouts=4)
    assert r["rollouts_per_hour"] == pytest.approx(1440.0)
    assert r["share"]["model"] == pytest.approx(0.9)
    assert r["tools_reward_share"] == pytest.approx(0.1) and r["meets_bar"] is False
    assert split(10.0, 99.0, 0.5, 0.5, 0.0, 1)["meets_bar"] is True


def test_trainer_split_by_hand() -> None:
    """Two step rows (a synchronous first step, an asynchronous second whose batch sampled in the
    background): the wall is the steps' sum, model = sampling wall - tools - reward per batch."""
    rows = [
        {"step_s": 10.0, "rollout_s": 6.0, "tool_s": 1.0, "reward_s": 0.5, "trainer_s": 3.0, "push_s": 0.5,
         "staleness": 0, "rollout_wait_s": 6.0, "tool_calls": 2},
        {"step_s": 5.0, "rollout_s": 8.0, "tool_s": 2.0, "reward_s": 1.0, "trainer_s": 4.0, "push_s": 0.5,
         "staleness": 1, "rollout_wait_s": 0.5, "tool_calls": 3},
    ]
    r = trainer_split(rows, rollouts_per_step=4)
    assert (r["rollouts"], r["wall_s"], r["steps"]) == (8, 15.0, 2)
    assert r["rollouts_per_hour"] == pytest.approx(1920.0)
    assert (r["model_s"], r["tool_s"], r["reward_s"], r["trainer_s"]) == pytest.approx((9.5, 3.0, 1.5, 8.0))
    assert r["share"]["model"] == pytest.approx(9.5 / 22) and r["parts_over_wall"] == pytest.approx(22 / 15)
    assert r["staleness"] == [0, 1] and r["rollout_wait_s"] == pytest.approx(6.5) and r["tool_calls"] == 5


def test_latency_summary_nearest_rank() -> None:
    assert latency_summary([]) == {"calls": 0, "p50_ms": 0.0, "p95_ms": 0.0}
    twenty = [i / 20 for i in range(20, 0, -1)]  # 1.0, 0.95, ..., 0.05 s
    assert latency_summary(twenty) == pytest.approx({"calls": 20, "p50_ms": 500.0, "p95_ms": 950.0})
    assert latency_summary([0.2]) == pytest.approx({"calls": 1, "p50_ms": 200.0, "p95_ms": 200.0})


def test_replay_rollouts_real_tools_and_reward() -> None:
    r = asyncio.run(replay_rollouts(Settings(), RolloutBench(latency_s=0.05, prompts=1, group_size=2)))
    assert r["rollouts"] == 2 and r["turns"] > 0 and r["tool_s"] > 0 and r["reward_s"] > 0
    assert r["model_s"] == pytest.approx(r["turns"] * 0.05)
    assert sum(r["share"].values()) == pytest.approx(1.0)
    assert "replay" in summary_lines({"replay": r})[0]


def test_bench_rollouts_cli_prints_the_json_document_alone(tmp_path: Path) -> None:
    """The real command (replay model only, tiny counts): stdout is the JSON document alone."""
    env = {**os.environ, "FATHOM_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "40"}
    done = subprocess.run(
        [sys.executable, "-m", "fathom.cli.main", "bench", "rollouts", "--no-bundled", "--no-plane",
         "--latency", "0.05", "--prompts", "1", "--group", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    replay = json.loads(done.stdout)["replay"]
    assert replay["rollouts"] == 2 and replay["turns"] > 0
    assert sum(replay["share"].values()) == pytest.approx(1.0)
