"""``fathom bench rollouts``: the split arithmetic by hand and a real replay run with tiny counts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fathom.bench.rollouts import RolloutBench, replay_rollouts, split, summary_lines
from fathom.core.config import Settings


def test_split_by_hand() -> None:
    r = split(wall_s=10.0, model_s=9.0, tool_s=0.6, reward_s=0.4, trainer_s=0.0, rollouts=4)
    assert r["rollouts_per_hour"] == pytest.approx(1440.0)
    assert r["share"]["model"] == pytest.approx(0.9)
    assert r["tools_reward_share"] == pytest.approx(0.1) and r["meets_bar"] is False
    assert split(10.0, 99.0, 0.5, 0.5, 0.0, 1)["meets_bar"] is True


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
        [sys.executable, "-m", "fathom.cli.main", "bench", "rollouts", "--no-bundled", "--latency", "0.05",
         "--prompts", "1", "--group", "2", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    replay = json.loads(done.stdout)["replay"]
    assert replay["rollouts"] == 2 and replay["turns"] > 0
    assert sum(replay["share"].values()) == pytest.approx(1.0)
