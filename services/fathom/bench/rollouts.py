"""``fathom bench rollouts``: rollouts per hour and where a rollout's wall time goes.

Three rows, one path (``PolicyService`` on the train lane, G rollouts per prompt through
``group_rollouts``, the real tools over the local web, ``RewardScorer``):

(a) the replay model at a fixed latency per turn, tools in process: model time is known, so the
    split shows what the tools and the reward cost around it (bar: tools + reward <= 5% of rollout
    wall time). No trainer time: replayed turns carry no sampled token ids to train on.
(b) the bundled SmolLM2-135M through the real RAPO trainer (``AgentRollouts`` + ``train_step``), a
    few steps synchronous and the same steps (same seed) asynchronous (``rapo.async_rollouts``:
    step k+1 sampled while step k trains): rollouts per hour and the model / tools / reward /
    trainer seconds of each. Asynchronous parts overlap, so their seconds add up to more than the wall.
(c) (b)'s asynchronous run with its tool calls through the plane's queues (``rollout.tools:
    queue``: QueueToolRunner on the train lane, a real Celery worker pool in this process on a
    private Redis), while a stream of live-lane tool calls (searches and page fetches at a fixed
    rate) goes through the same plane: rollouts per hour, and the live calls' latency p50 / p95
    without and with the training load. One worker pool
    serves both lanes, live queues first (the stack's separate live-only pool cannot run in the same
    process as a second Celery worker); it has two slots more than a step's rollouts can hold.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from fathom.core.config import Settings

QUESTIONS = ("Which country is the Eiffel Tower in, and who designed it?",
             "In which year did Alexander Fleming discover penicillin?")
BAR = 0.05  # tools + reward share of rollout wall time


LIVE_QUERIES = ("Eiffel Tower designer", "penicillin discovery year", "Marie Curie Nobel Prize 1911",
                "Mount Everest sub-range", "largest river by discharge")


@dataclass
class RolloutBench:
    latency_s: float = 0.5  # replay model seconds per turn
    prompts: int = 2  # (a): prompts in the measured batch
    group_size: int = 2
    train_prompts: int = 1  # (b), (c): prompts per trainer step (each step trains G x this rollouts)
    bundled: bool = True  # row (b)
    plane: bool = True  # row (c)
    steps: int = 3  # trainer steps per run in (b) and (c)
    bundled_max_new_tokens: int = 48
    bundled_max_turns: int = 3
    bundled_max_context_tokens: int = 2000  # the trainer's forward/backward memory grows with it
    torch_threads: int = 2
    live_rate: float = 1.0  # (c): live tool calls started per second
    live_idle_calls: int = 20  # (c): live calls measured before the training starts
    workers: int | None = None  # (c): threads of the tool worker pool (None: rollouts per step + 2)
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


def trainer_split(rows: Sequence[Mapping[str, Any]], rollouts_per_step: int) -> dict[str, Any]:
    """(b), (c): a trainer run's step rows -> ``split``. The wall is the sum of the steps' ``step_s``
    (every step waits for its batch, so background sampling is inside it; checkpoint writes are
    not). Per batch: model seconds = its sampling wall minus its tool and reward seconds (the backend
    runs one seeded request at a time, so model time is serial; tool and reward seconds are summed
    over rollouts); trainer = update + weight push. ``parts_over_wall`` > 1: the parts overlapped."""
    wall = sum(float(r["step_s"]) for r in rows)
    tools = [float(r.get("tool_s", 0.0)) for r in rows]
    rewards = [float(r.get("reward_s", 0.0)) for r in rows]
    tool_s, reward_s = sum(tools), sum(rewards)
    model_s = sum(max(0.0, float(r["rollout_s"]) - t - w)
                  for r, t, w in zip(rows, tools, rewards, strict=True))
    trainer_s = sum(float(r["trainer_s"]) + float(r.get("push_s", 0.0)) for r in rows)
    out = split(wall, model_s, tool_s, reward_s, trainer_s, rollouts_per_step * len(rows))
    return out | {"steps": len(rows), "staleness": [int(r.get("staleness", 0)) for r in rows],
                  "rollout_wait_s": sum(float(r.get("rollout_wait_s", r["rollout_s"])) for r in rows),
                  "tool_calls": sum(int(r.get("tool_calls", 0)) for r in rows),
                  "optimizer_steps": sum(int(r.get("optimizer_steps", 0)) for r in rows),
                  "response_tokens_per_rollout": sum(float(r.get("response_tokens_per_rollout", 0.0))
                                                     for r in rows) / max(1, len(rows)),
                  "sequence_tokens_per_rollout": sum(float(r.get("sequence_tokens_per_rollout", 0.0))
                                                     for r in rows) / max(1, len(rows)),
                  "parts_over_wall": (model_s + tool_s + reward_s + trainer_s) / max(wall, 1e-9)}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Count, p50 and p95 (nearest rank) in milliseconds."""
    if not seconds:
        return {"calls": 0, "p50_ms": 0.0, "p95_ms": 0.0}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return 1e3 * ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"calls": len(ordered), "p50_ms": rank(0.5), "p95_ms": rank(0.95)}


def _run_config(bench: RolloutBench, out_dir: str, *, asynchronous: bool, tools: str) -> Any:
    from fathom.training.config import RunConfig

    return RunConfig.model_validate({
        "name": "bench-rollouts", "output_dir": out_dir, "tensorboard": False,
        "torch_threads": bench.torch_threads, "reward_stage": 1, "judge": "exact",
        # one group per optimizer step: a minibatch of whole trajectories is the memory peak
        "rapo": {"group_size": bench.group_size, "batch_prompts": bench.train_prompts,
                 "minibatch_size": bench.group_size, "max_steps": bench.steps,
                 "learning_rate": 1e-6, "async_rollouts": asynchronous},
        "rollout": {"kind": "agent", "guided": True, "temperature": 1.0,
                    "max_new_tokens": bench.bundled_max_new_tokens, "max_turns": bench.bundled_max_turns,
                    "max_tool_calls": bench.bundled_max_turns,
                    "max_context_tokens": bench.bundled_max_context_tokens, "tools": tools},
        "settings": {"search": {"backend": "local"}},
    })


def _prompts(bench: RolloutBench) -> list[Any]:
    """Enough distinct prompts that ``steps`` batches stay in one epoch (no epoch-end sync step)."""
    from fathom.training.data import Prompt

    return [Prompt(f"q{i}", QUESTIONS[i % len(QUESTIONS)], ("France",) if i % 2 == 0 else ("1928",))
            for i in range(bench.train_prompts * bench.steps)]


async def trainer_rollouts(settings: Settings, bench: RolloutBench, *, asynchronous: bool,
                           tools: str = "inprocess") -> dict[str, Any]:
    """(b) one mode: ``bench.steps`` real RAPO steps on the bundled model with agent rollouts."""
    from fathom.training.agent_rollouts import AgentRollouts
    from fathom.training.trainer import RapoTrainer, load_policy

    with tempfile.TemporaryDirectory(prefix="fathom-bench-rollouts-") as tmp:
        cfg = _run_config(bench, tmp, asynchronous=asynchronous, tools=tools)
        model, tok = load_policy(cfg, settings)
        source = AgentRollouts(cfg, settings)
        rows: list[dict[str, Any]] = []
        try:
            await source.start()
            trainer = RapoTrainer(cfg, source, model, tok, train_prompts=_prompts(bench), tensorboard=False)
            try:  # train_step directly: no checkpoint writes in the measured runs
                for _ in range(bench.steps):
                    rows.append(await trainer.train_step())
            finally:
                await trainer.aclose()
        finally:
            await source.aclose()
    path = "plane queues (train lane)" if tools == "queue" else "in-process Toolbox (local web)"
    out = trainer_split(rows, bench.train_prompts * bench.group_size)
    return out | {"model": cfg.model, "mode": "async" if asynchronous else "sync", "tool_path": path}


class LiveStream:
    """Live-lane tool calls at a fixed rate (open loop: a slow call does not delay the next),
    alternating a search and a raw page fetch; each call's latency is recorded with its start time."""

    def __init__(self, runner: Any, origin: str, rate: float) -> None:
        self.runner = runner
        self.origin = origin
        self.interval = 1.0 / rate
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self.failures = 0

    async def one(self, i: int) -> None:
        start = time.perf_counter()
        if i % 2 == 0:
            query = LIVE_QUERIES[(i // 2) % len(LIVE_QUERIES)]
            result = await self.runner.call("search_urls", {"query": query})
        else:
            result = await self.runner.fetch(f"{self.origin}/", render=False)
        if result.ok:
            self.samples.append((start, time.perf_counter() - start))
        else:
            self.failures += 1

    async def run(self, stop: asyncio.Event, limit: int | None = None) -> None:
        tasks: list[asyncio.Task[None]] = []
        i = 0
        while not stop.is_set() and (limit is None or i < limit):
            tasks.append(asyncio.create_task(self.one(i)))
            i += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        await asyncio.gather(*tasks)

    def between(self, t0: float, t1: float) -> list[float]:
        return [s for start, s in self.samples if t0 <= start < t1]


async def plane_rollouts(settings: Settings, bench: RolloutBench) -> dict[str, Any]:
    """(c): the asynchronous trainer with its tools on the plane's train lane, beside a live stream."""
    from celery.contrib.testing.worker import start_worker

    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.web import ensure_local_web
    from fathom.queue.app import make_celery
    from fathom.queue.names import worker_queues
    from fathom.queue.results import ResultWaiter
    from fathom.queue.runner import QueueToolRunner
    from fathom.queue.worker_runtime import close_runtimes
    from fathom.serve.stack import private_redis

    with private_redis(purpose="row (c) of the rollouts bench (or pass --no-plane)") as redis_url:
        s = settings.model_copy(deep=True)
        s.plane.broker_url = redis_url
        s.plane.redis_url = redis_url
        s.search.backend = "local"
        s.search.index_dir = s.search.index_dir or ensure_sample_index(s)
        s.web.port = 0  # a private local web; workers and trainer find it through settings.web
        origin, stop_web = ensure_local_web(s, s.search.index_dir)
        host, port = origin.removeprefix("http://").rsplit(":", 1)
        s.web.host, s.web.port = host, int(port)
        app = make_celery(s)
        waiter = ResultWaiter(redis_url)
        try:
            # One pool for both lanes (live queues read first). The stack's extra live-only pool
            # cannot run beside it in this process (kombu's event hub is process-wide), so the pool
            # has two slots more than the rollouts can hold: a live call always finds one free.
            slots = bench.workers or bench.train_prompts * bench.group_size + 2
            with start_worker(app, pool="threads", concurrency=slots,
                              queues=worker_queues(["search", "fetch"], "both"), perform_ping_check=False,
                              loglevel="WARNING", shutdown_timeout=20):
                live = LiveStream(QueueToolRunner(s, "live", celery_app=app, waiter=waiter), origin,
                                  bench.live_rate)
                await live.one(0)  # warm: the workers' toolbox and index
                await live.one(1)
                live.samples.clear()
                t_idle = time.perf_counter()
                await live.run(asyncio.Event(), limit=bench.live_idle_calls)
                t_train = time.perf_counter()
                stop = asyncio.Event()
                stream = asyncio.create_task(live.run(stop))
                try:
                    train = await trainer_rollouts(s, bench, asynchronous=True, tools="queue")
                finally:
                    t_end = time.perf_counter()
                    stop.set()
                    await stream
        finally:
            await waiter.aclose()
            close_runtimes()
            app.close()
            if stop_web is not None:
                stop_web()
    idle, loaded = live.between(t_idle, t_train), live.between(t_train, t_end)
    return train | {"live_idle": latency_summary(idle), "live_under_train": latency_summary(loaded),
                    "live_failures": live.failures, "live_rate_per_s": bench.live_rate,
                    "live_calls": "search_urls + fetch (local web), live lane"}


def run_rollouts_bench(settings: Settings, bench: RolloutBench) -> dict[str, Any]:
    private = settings.model_copy(deep=True)
    private.web.port = 0  # a local web of the bench's own, whatever holds the configured port
    bench.results["replay"] = asyncio.run(replay_rollouts(private, bench))
    if bench.bundled:
        bench.results["bundled_sync"] = asyncio.run(trainer_rollouts(private, bench, asynchronous=False))
        bench.results["bundled_async"] = asyncio.run(trainer_rollouts(private, bench, asynchronous=True))
    if bench.plane:
        bench.results["plane_async"] = asyncio.run(plane_rollouts(settings, bench))
    return bench.results


def summary_lines(result: dict[str, Any]) -> Sequence[str]:
    lines = []
    for name, r in result.items():
        sh = r["share"]
        line = (f"{name:13s} {r['rollouts']} rollouts in {r['wall_s']:.1f}s = "
                f"{r['rollouts_per_hour']:.0f}/h; "
                f"model {sh['model']:.1%} tools {sh['tools']:.1%} reward {sh['reward']:.1%} "
                f"trainer {sh['trainer']:.1%}")
        if name == "replay":
            line += (f"; tools+reward {r['tools_reward_share']:.1%} "
                     f"({'meets' if r['meets_bar'] else 'misses'} the {BAR:.0%} bar)")
        else:
            line += (f"; parts/wall {r['parts_over_wall']:.2f}, waited on rollouts "
                     f"{r['rollout_wait_s']:.1f}s, staleness {r['staleness']}")
        lines.append(line)
        if "live_idle" in r:
            idle, busy = r["live_idle"], r["live_under_train"]
            lines.append(f"{'':13s} live calls p50/p95: idle {idle['p50_ms']:.0f}/{idle['p95_ms']:.0f} ms "
                         f"({idle['calls']}), under the train load {busy['p50_ms']:.0f}/"
                         f"{busy['p95_ms']:.0f} ms ({busy['calls']}), {r['live_failures']} failed")
    if "bundled_sync" in result and "bundled_async" in result:
        sync_rate = max(result["bundled_sync"]["rollouts_per_hour"], 1e-9)
        ratio = result["bundled_async"]["rollouts_per_hour"] / sync_rate
        lines.append(f"async / sync rollouts per hour: {ratio:.2f}x")
    return lines
