"""``fathom bench rollouts``: rollouts per hour and where a rollout's wall time goes.

Two settings, same path (``PolicyService`` on the train lane, G rollouts per prompt through
``group_rollouts``, the real in-process ``Toolbox`` over the local web, ``RewardScorer``):

(a) the replay model at a fixed latency per turn: model time is known, so the split shows what the
    tools and the reward cost around it (bar: tools + reward <= 5% of rollout wall time). No trainer
    time: replayed turns carry no sampled token ids to train on.
(b) the bundled SmolLM2-135M through the real RAPO trainer (``AgentRollouts`` + one ``train_step``):
    model, tools, reward and trainer seconds.

The tool path is the in-process Toolbox, not the plane's gRPC ToolsService: starting the stack
(Redis, PostgreSQL, workers) is too heavy for this bench on a shared CPU; ``fathom bench plane``
measures the plane's own per-call overhead (p50 a few ms), which adds to the tool share here. The
"stream of live jobs sharing the plane" variant is not implemented (see the report).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fathom.core.config import Settings

QUESTIONS = ("Which country is the Eiffel Tower in, and who designed it?",
             "In which year did Alexander Fleming discover penicillin?")
BAR = 0.05  # tools + reward share of rollout wall time


@dataclass
class RolloutBench:
    latency_s: float = 0.5  # replay model seconds per turn
    prompts: int = 2
    group_size: int = 2
    bundled: bool = True
    bundled_max_new_tokens: int = 48
    bundled_max_turns: int = 3
    results: dict[str, Any] = field(default_factory=dict)


def split(wall_s: float, model_s: float, tool_s: float, reward_s: float, trainer_s: float,
          rollouts: int) -> dict[str, Any]:
    """Rollouts per hour (from the wall) and each part's share of the summed part seconds: rollouts
    run concurrently, so tool and reward seconds are summed over rollouts and must be compared with
    model seconds summed the same way, not with the wall. ``tools_reward_share`` is what the bar reads."""
    total = max(model_s + tool_s + reward_s + trainer_s, 1e-9)
    return {"rollouts": rollouts, "wall_s": wall_s,
            "rollouts_per_hour": 3600.0 * rollouts / max(wall_s, 1e-9),
            "model_s": model_s, "tool_s": tool_s, "reward_s": reward_s, "trainer_s": trainer_s,
            "share": {k: v / total for k, v in (("model", model_s), ("tools", tool_s), ("reward", reward_s),
                                                 ("trainer", trainer_s))},
            "tools_reward_share": (tool_s + reward_s) / total,
            "meets_bar": (tool_s + reward_s) / total <= BAR}


async def replay_rollouts(settings: Settings, bench: RolloutBench) -> dict[str, Any]:
    """(a): G rollouts per prompt with the replay model, tools in process, stage-1 exact-match reward."""
    from contextlib import AsyncExitStack

    from fathom.agent.policy_service import PolicyService, SamplingOverrides
    from fathom.models.replay import ReplayBackend, load_recordings, recordings_path
    from fathom.reward.service import build_scorer
    from fathom.tools.toolbox import build_toolbox
    from fathom.training.agent_rollouts import _local_web, _TimedTools
    from fathom.training.rollouts import group_rollouts

    s = settings.model_copy(deep=True)
    s.reward.judge = "exact"
    s.reward.stage = 1
    async with AsyncExitStack() as stack:
        base_url = _local_web(s, stack)
        toolbox = build_toolbox(s, local_web_base=base_url)
        stack.push_async_callback(toolbox.aclose)
        tools = _TimedTools(toolbox)
        backend = ReplayBackend(load_recordings(recordings_path("bundled:replay-demo")),
                                latency_s=bench.latency_s, origin=base_url, name="replay")
        policy = PolicyService(backend, lambda lane, tid, job_id: tools, s)
        scorer = build_scorer(s)
        reward_s = 0.0

        async def one(question: str) -> int:
            nonlocal reward_s
            trajs = await group_rollouts(policy, question, bench.group_size, SamplingOverrides(), "train")
            t0 = time.perf_counter()
            await asyncio.gather(*(scorer.score(question, ["France"], t, stage=1) for t in trajs))
            reward_s += time.perf_counter() - t0
            return len(trajs)

        await one(QUESTIONS[0])  # warm: index and web loaded, not timed
        tools.seconds, reward_s = 0.0, 0.0
        served0 = backend.requests_served
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(QUESTIONS[i % len(QUESTIONS)]) for i in range(bench.prompts)))
        wall = time.perf_counter() - t0
        turns = backend.requests_served - served0
    # Model seconds summed over rollouts: every replayed turn costs exactly latency_s.
    out = split(wall, turns * bench.latency_s, tools.seconds, reward_s, 0.0, sum(counts))
    out |= {"model": "replay", "latency_s": bench.latency_s, "turns": turns,
            "tool_path": "in-process Toolbox (local web)"}
    return out


async def bundled_rollouts(settings: Settings, bench: RolloutBench) -> dict[str, Any]:
    """(b): one real RAPO step on the bundled model with agent rollouts (AgentRollouts' own timers)."""
    import tempfile

    from fathom.training.agent_rollouts import AgentRollouts
    from fathom.training.config import RunConfig
    from fathom.training.data import Prompt
    from fathom.training.trainer import RapoTrainer, load_policy

    with tempfile.TemporaryDirectory(prefix="fathom-bench-rollouts-") as tmp:
        cfg = RunConfig.model_validate({
            "output_dir": tmp, "tensorboard": False, "torch_threads": 1, "reward_stage": 1, "judge": "exact",
            "rapo": {"group_size": bench.group_size, "batch_prompts": bench.prompts,
                     "minibatch_size": bench.group_size * bench.prompts, "max_steps": 1,
                     "learning_rate": 1e-6},
            "rollout": {"kind": "agent", "guided": True, "temperature": 1.0,
                        "max_new_tokens": bench.bundled_max_new_tokens,
                        "max_turns": bench.bundled_max_turns,
                        "max_tool_calls": bench.bundled_max_turns, "max_context_tokens": 4000},
            "settings": {"search": {"backend": "local"}},
        })
        prompts = [Prompt(f"q{i}", QUESTIONS[i % len(QUESTIONS)], ("France",)) for i in range(bench.prompts)]
        model, tok = load_policy(cfg, settings)
        source = AgentRollouts(cfg, settings)
        try:
            await source.start()
            trainer = RapoTrainer(cfg, source, model, tok, train_prompts=prompts, tensorboard=False)
            t0 = time.perf_counter()
            row = await trainer.train_step()
            wall = time.perf_counter() - t0
        finally:
            await source.aclose()
    stats = source.last_stats
    tool_s, reward_s = float(stats.get("tool_s", 0.0)), float(stats.get("reward_s", 0.0))
    trainer_s = float(row["trainer_s"]) + float(row.get("push_s", 0.0))
    model_s = max(0.0, float(row["rollout_s"]) - tool_s - reward_s)
    out = split(wall, model_s, tool_s, reward_s, trainer_s, bench.prompts * bench.group_size)
    return out | {"model": cfg.model, "tool_calls": stats.get("tool_calls", 0),
                  "stop_reasons": stats.get("stop_reasons", {}),
                  "tool_path": "in-process Toolbox (local web)"}


def run_rollouts_bench(settings: Settings, bench: RolloutBench) -> dict[str, Any]:
    bench.results["replay"] = asyncio.run(replay_rollouts(settings, bench))
    if bench.bundled:
        bench.results["bundled"] = asyncio.run(bundled_rollouts(settings, bench))
    return bench.results


def summary_lines(result: dict[str, Any]) -> Sequence[str]:
    lines = []
    for name, r in result.items():
        sh = r["share"]
        lines.append(f"{name:8s} {r['rollouts']} rollouts in {r['wall_s']:.1f}s = "
                     f"{r['rollouts_per_hour']:.0f}/h; "
                     f"model {sh['model']:.1%} tools {sh['tools']:.1%} reward {sh['reward']:.1%} "
                     f"trainer {sh['trainer']:.1%}; tools+reward {r['tools_reward_share']:.1%} "
                     f"({'meets' if r['meets_bar'] else 'misses'} the {BAR:.0%} bar)")
    return lines
