"""``RewardScorer`` end to end: trajectories made by the real agent loop (scripted model, in-memory
web), the real exact-match judge, the real embedding labeller (all-MiniLM-L6-v2) and a real SQLite
store; rewards checked against values computed by hand from the paper's formulas."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fathom.agent import protocol as p
from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Trajectory
from fathom.core.config import AgentSettings, PlaneSettings, RewardSettings, Settings
from fathom.core.errors import InvalidArgument
from fathom.models.base import SamplingParams
from fathom.reward.formulas import Verdict
from fathom.reward.judge import ExactJudge, F1Judge
from fathom.reward.labels import EmbeddingLabeller
from fathom.reward.service import RewardScorer, build_scorer
from fathom.store import Database, JobStore

from tests.agent.agent_scripted import InMemoryTools, ScriptedBackend

K2 = "Who made the first ascent of K2?"
K2_URL = "https://mountains.example/k2"
CLIMBERS = "Lino Lacedelli and Achille Compagnoni"


def search(query: str) -> str:
    return p.format_turn("I need to search.", [("search_urls", {"query": query})])


def read(url: str, goal: str) -> str:
    return p.format_turn("This page looks right.", [("query_url", {"url": url, "goal": goal})])


def answer(text: str) -> str:
    return p.format_turn("The page says so.", answer=text)


async def run(*turns: str) -> Trajectory:
    loop = AgentLoop(ScriptedBackend(list(turns)), InMemoryTools(), AgentSettings(),
                     SamplingParams(temperature=0.6, logprobs=True))
    return await loop.run(K2)


async def redundant_trajectory(final: str = CLIMBERS) -> Trajectory:
    """Two searches with the same results, the same page read twice, then an answer:
    UNIQUE_SEARCH, REDUNDANT_SEARCH, EXPLORATION, REDUNDANT_QUERY (T = 4, rho = 0.5, D_S = D_Q = 0)."""
    return await run(search("K2 first ascent"), search("first ascent of K2"),
                     read(K2_URL, "who first climbed K2"), read(K2_URL, "who first climbed K2"),
                     answer(final))


class CountingJudge:
    """The real exact-match judge, counting how often it is asked (to see a call that never came)."""

    def __init__(self) -> None:
        self.inner = ExactJudge()
        self.name = self.inner.name
        self.calls = 0

    async def judge(self, question: str, answer: str | None, golds: Sequence[str]) -> Verdict:
        self.calls += 1
        return await self.inner.judge(question, answer, golds)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache",
                    reward=RewardSettings(judge="exact", labeller="embedding"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    db = Database(f"sqlite:///{tmp_path / 'rewards.db'}")
    db.migrate()
    yield JobStore(db)
    db.dispose()


def stored(store: JobStore, traj: Trajectory) -> str:
    job_id = store.create_job(traj.question, "search", lane="train")
    tid = store.start_trajectory(job_id, traj.question, traj.prompt, "scripted")
    store.finish_trajectory(tid, traj)
    return tid


def scorer(settings: Settings, store: JobStore | None = None) -> RewardScorer:
    return RewardScorer(ExactJudge(), EmbeddingLabeller(settings), settings, store)


async def test_stage1_correct_and_wrong(settings: Settings) -> None:
    traj = await redundant_trajectory()
    assert traj.stop_reason == "answered" and traj.answer == CLIMBERS
    s = scorer(settings)
    right = await s.score(K2, [CLIMBERS.lower() + "."], traj, stage=1)
    assert (right.reward, right.r_format, right.verdict, right.correct) == (1.0, 1.0, "correct", True)
    assert (right.exact_match, right.f1, right.stage) == (1.0, 1.0, 1)
    assert (right.judge_model, right.labeller, right.labels) == ("exact", "", [])  # no labels in stage 1
    wrong = await s.score(K2, ["Walter Bonatti", "Lacedelli"], traj, stage=1)
    assert (wrong.reward, wrong.verdict, wrong.exact_match) == (0.1, "incorrect", 0.0)  # 0.1 * 1 + 0.9 * 0
    assert wrong.f1 == pytest.approx(2 * (1 / 5) * 1 / (1 / 5 + 1))  # "Lacedelli": P = 1/5, R = 1


async def test_stage2_labels_and_both_branches(settings: Settings) -> None:
    traj = await redundant_trajectory()
    s = scorer(settings)
    right = await s.score(K2, [CLIMBERS], traj, stage=2)
    assert [c.label for c in right.labels] == ["UNIQUE_SEARCH", "REDUNDANT_SEARCH", "EXPLORATION",
                                                "REDUNDANT_QUERY"]
    assert [(c.step, c.index) for c in right.labels] == [(0, 0), (1, 0), (2, 0), (3, 0)]
    assert (right.tool_calls, right.rho, right.d_s, right.d_q) == (4, 0.5, 0, 0)
    assert right.reward == 0.6  # 0.1 * 1 + max(1 - 0.5, 0.5)
    assert right.labeller == "embedding:all-MiniLM-L6-v2" and right.stage == 2
    wrong = await s.score(K2, ["Walter Bonatti"], traj, stage=2)
    assert wrong.reward == 0.1  # 0.1 * 1 + 0.2 * min(1, 0 / 8) + 0.2 * min(1, 0 / 16)
    explorer = await run(search("K2 first ascent"), search("Danube river length"),
                         read(K2_URL, "who first climbed K2"), answer("Walter Bonatti"))
    useful = await s.score(K2, [CLIMBERS], explorer, stage=2)
    assert [c.label for c in useful.labels] == ["UNIQUE_SEARCH", "UNIQUE_SEARCH", "EXPLORATION"]
    assert useful.reward == 0.1625  # 0.1 * 1 + 0.2 * min(1, 2 / 8) + 0.2 * min(1, 1 / 16)


async def test_stage_defaults_to_the_setting(settings: Settings) -> None:
    traj = await redundant_trajectory()
    two = settings.model_copy(update={"reward": settings.reward.model_copy(update={"stage": 2})})
    assert (await scorer(two).score(K2, [CLIMBERS], traj)).stage == 2
    assert (await scorer(settings).score(K2, [CLIMBERS], traj)).stage == 1


async def test_no_answer_and_no_steps(settings: Settings) -> None:
    s = scorer(settings)
    empty = Trajectory(question=K2, prompt="")
    b = await s.score(K2, [CLIMBERS], empty, stage=2)
    assert (b.reward, b.r_format, b.verdict, b.tool_calls, b.exact_match) == (0.0, 0.0, "incorrect", 0, 0.0)
    unanswered = await run(search("K2 first ascent"), p.format_turn("I give up."))
    b1 = await s.score(K2, [CLIMBERS], unanswered, stage=1)
    assert b1.verdict == "incorrect" and b1.reward == pytest.approx(0.1 * b1.r_format) and b1.r_format < 1


@pytest.mark.parametrize(("question", "golds", "stage", "reason"), [
    ("", [CLIMBERS], 1, "EMPTY_QUESTION"),
    ("  \n", [CLIMBERS], 1, "EMPTY_QUESTION"),
    (K2, [], 1, "NO_GOLD_ANSWERS"),
    (K2, ["", "  "], 1, "NO_GOLD_ANSWERS"),
    (K2, [CLIMBERS], 3, "UNKNOWN_REWARD_STAGE"),
    (K2, [CLIMBERS], 0, "UNKNOWN_REWARD_STAGE"),
])
async def test_requests_no_reward_can_be_computed_for(settings: Settings, question: str, golds: list[str],
                                                      stage: int, reason: str) -> None:
    traj = Trajectory(question=K2, prompt="", answer=CLIMBERS)
    with pytest.raises(InvalidArgument) as err:
        await scorer(settings).score(question, golds, traj, stage=stage)
    assert err.value.reason == reason


async def test_blank_golds_are_dropped_before_judging(settings: Settings) -> None:
    traj = await run(answer(""))  # an empty boxed answer must not equal an empty gold
    b = await scorer(settings).score(K2, ["", CLIMBERS], traj, stage=1)
    assert b.verdict == "incorrect" and b.exact_match == 0.0


async def test_score_stores_with_the_trajectory(settings: Settings, store: JobStore) -> None:
    traj = await redundant_trajectory()
    tid = stored(store, traj)
    s = scorer(settings, store)
    b1 = await s.score(K2, [CLIMBERS], traj, stage=1, trajectory_id=tid)
    b2 = await s.score(K2, [CLIMBERS], traj, stage=2, trajectory_id=tid)
    rewards = store.get_rewards(tid)
    assert [(r.stage, r.reward) for r in rewards] == [(1, 1.0), (2, 0.6)]
    assert rewards[0].breakdown == b1.to_dict() and rewards[1].breakdown == b2.to_dict()
    await s.score(K2, ["Walter Bonatti"], traj, stage=1, trajectory_id=tid)  # the first one is kept
    assert store.get_reward(tid, 1) == rewards[0]
    # A scorer without a store scores and writes nothing:
    await scorer(settings).score(K2, [CLIMBERS], traj, stage=1, trajectory_id="elsewhere")


async def test_score_stored_judges_once(settings: Settings, store: JobStore) -> None:
    traj = await redundant_trajectory()
    tid = stored(store, traj)
    judge = CountingJudge()
    s = RewardScorer(judge, EmbeddingLabeller(settings), settings, store)
    first = await s.score_stored(tid, [CLIMBERS], 2)
    assert first["stored"] is True and first["reward"] == 0.6 and first["stage"] == 2
    assert first["breakdown"]["counts"]["REDUNDANT_QUERY"] == 1
    again = await s.score_stored(tid, [CLIMBERS], 2)  # a redelivered task
    assert again == {**first, "stored": False}
    assert judge.calls == 1 and len(store.get_rewards(tid)) == 1
    with pytest.raises(InvalidArgument):
        await s.score_stored(tid, [], 1)
    from fathom.core.errors import StoreError

    with pytest.raises(StoreError):
        await s.score_stored("no-such-trajectory", [CLIMBERS], 1)


async def test_build_scorer_follows_the_settings(settings: Settings) -> None:
    built = build_scorer(settings)
    assert isinstance(built.judge, ExactJudge) and isinstance(built.labeller, EmbeddingLabeller)
    f1 = settings.model_copy(update={"reward": settings.reward.model_copy(update={"judge": "f1"})})
    judge = build_scorer(f1).judge
    assert isinstance(judge, F1Judge) and judge.threshold == settings.reward.f1_threshold


# -- the ``fathom.reward.score`` task on a real Celery worker (threads pool, real Redis) ------------


def _task_count(outcome: str, lane: str = "train") -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("fathom_task_seconds_count",
                                      {"task": "reward.score", "lane": lane, "outcome": outcome})
    return value or 0.0


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the reward worker")
        time.sleep(0.05)


async def test_reward_task_on_a_real_worker_stores_once(tmp_path: Path, redis_url: str) -> None:
    import asyncio

    import redis as redis_lib
    from celery.contrib.testing.worker import start_worker
    from fathom.queue.app import make_celery
    from fathom.queue.names import LANES, queue_name
    from fathom.queue.tasks import send_reward_score
    from fathom.queue.worker_runtime import close_runtimes

    db_url = f"sqlite:///{tmp_path / 'plane.db'}"
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", database_url=db_url,
                        plane=PlaneSettings(broker_url=redis_url),
                        reward=RewardSettings(judge="exact", labeller="embedding"))
    db = Database(db_url)
    db.migrate()
    store = JobStore(db)
    traj = await redundant_trajectory()
    tid = stored(store, traj)
    app = make_celery(settings)
    client = redis_lib.Redis.from_url(redis_url)
    names = [queue_name("reward", lane) for lane in LANES]
    client.delete(*names)
    before = {o: _task_count(o) for o in ("stored", "already_stored", "error")}
    try:
        with start_worker(app, pool="threads", concurrency=2, queues=[queue_name("reward", "train")],
                          perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20):
            send_reward_score(app, tid, [CLIMBERS], 2, lane="train")
            await asyncio.to_thread(_wait_for, lambda: store.get_reward(tid, 2) is not None)
            send_reward_score(app, tid, [CLIMBERS], 2, lane="train")  # the same message delivered again
            send_reward_score(app, "no-such-trajectory", [CLIMBERS], 1, lane="train")
            def both_done() -> bool:
                return (_task_count("already_stored") > before["already_stored"]
                        and _task_count("error") > before["error"])

            await asyncio.to_thread(_wait_for, both_done)
    finally:
        close_runtimes()
        client.delete(*names)
        client.close()
    (saved,) = store.get_rewards(tid)
    assert (saved.stage, saved.reward, saved.breakdown["counts"]["REDUNDANT_SEARCH"]) == (2, 0.6, 1)
    assert saved.breakdown["judge_model"] == "exact"
    assert _task_count("stored") == before["stored"] + 1
    assert _task_count("already_stored") == before["already_stored"] + 1
    db.dispose()
