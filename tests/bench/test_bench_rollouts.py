"""``fathom bench rollouts``: the split arithmetic by hand and a real replay run with tiny counts."""

from __future__ import annotations

import asyncio

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
