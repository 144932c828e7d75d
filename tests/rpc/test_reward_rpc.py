"""``RewardService.Score`` over real gRPC: an in-process server on port 0 with the exact-match judge
and the embedding labeller, then ``fathom serve reward`` as its own OS process. Trajectories come
from the real agent loop (scripted model, in-memory web) and travel as ``common.Step`` messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from fathom.agent.trajectory import Trajectory
from fathom.core.config import PlaneSettings, Settings
from fathom.core.errors import FailedPrecondition, InvalidArgument, NotFound
from fathom.reward.judge import ExactJudge
from fathom.reward.labels import EmbeddingLabeller
from fathom.reward.service import RewardScorer
from fathom.rpc.clients import channel
from fathom.rpc.convert import step_to_proto
from fathom.rpc.gen import reward_pb2, reward_pb2_grpc
from fathom.rpc.servicers import reward
from fathom.rpc.status import error_from_rpc
from fathom.store import Database, JobStore
from pydantic import SecretStr

from tests.reward.test_service import CLIMBERS, K2, redundant_trajectory

FATHOM = [sys.executable, "-m", "fathom.cli.main"]
TOKEN = "tok-reward-1"


def request(traj: Trajectory, golds: list[str], stage: int = reward_pb2.REWARD_STAGE_2,
            trajectory_id: str = "", question: str = K2) -> reward_pb2.ScoreRequest:
    return reward_pb2.ScoreRequest(question=question, gold_answers=golds, answer=traj.answer or "",
                                   steps=[step_to_proto(s) for s in traj.steps], stage=stage,  # type: ignore[arg-type]
                                   trajectory_id=trajectory_id)


def open_store(url: str) -> JobStore:
    db = Database(url)
    db.migrate()
    return JobStore(db)


def stored(store: JobStore, traj: Trajectory) -> str:
    job_id = store.create_job(traj.question, "search", lane="train")
    tid = store.start_trajectory(job_id, traj.question, traj.prompt, "scripted")
    store.finish_trajectory(tid, traj)
    return tid


async def serve_in_process(settings: Settings, start_server: Any, store: JobStore | None) -> str:
    scorer = RewardScorer(ExactJudge(), EmbeddingLabeller(settings), settings, store)
    servicer = reward.RewardServicer(scorer)
    running = await start_server(settings, lambda server: reward.register(server, servicer),
                                 [reward.SERVICE_NAME])
    return str(running.address)


async def test_score_stage2_over_grpc_and_stored(settings: Settings, start_server: Any,
                                                 tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'rewards.db'}")
    address = await serve_in_process(settings, start_server, store)
    traj = await redundant_trajectory()
    tid = stored(store, traj)
    async with channel(settings, address) as ch:
        stub = reward_pb2_grpc.RewardServiceStub(ch)
        got = await stub.Score(request(traj, [CLIMBERS], trajectory_id=tid), timeout=60)
        assert (got.reward, got.r_format, got.verdict) == (0.6, 1.0, reward_pb2.VERDICT_CORRECT)
        assert (got.exact_match, got.f1, got.tool_calls) == (1.0, 1.0, 4)
        assert (got.rho, got.d_s, got.d_q) == (0.5, 0, 0)
        assert [(c.step, c.index, c.label) for c in got.labels] == [
            (0, 0, reward_pb2.STEP_LABEL_UNIQUE_SEARCH), (1, 0, reward_pb2.STEP_LABEL_REDUNDANT_SEARCH),
            (2, 0, reward_pb2.STEP_LABEL_EXPLORATION), (3, 0, reward_pb2.STEP_LABEL_REDUNDANT_QUERY)]
        assert (got.judge_model, got.labeller) == ("exact", "embedding:all-MiniLM-L6-v2")
        # Every term of the stage-2 formula travels with its value, and they add up to the reward.
        assert (got.stage, got.correct) == (reward_pb2.REWARD_STAGE_2, True)
        assert set(got.terms) == {"format", "efficiency", "search_diversity", "page_reading"}
        assert sum(got.terms.values()) == pytest.approx(got.reward)
        assert got.counts["REDUNDANT_SEARCH"] == 1 and got.counts["EXPLORATION"] == 1
        (saved,) = store.get_rewards(tid)
        assert (saved.stage, saved.reward, saved.breakdown["verdict"]) == (2, 0.6, "correct")

        # Unspecified stage is stage 1 (the proto's rule); a wrong answer; nothing stored without an id.
        plain = await stub.Score(request(traj, ["Walter Bonatti"], stage=reward_pb2.REWARD_STAGE_UNSPECIFIED),
                                 timeout=60)
        assert (plain.reward, plain.verdict, plain.tool_calls, len(plain.labels)) == (
            0.1, reward_pb2.VERDICT_INCORRECT, 0, 0)
        assert len(store.get_rewards(tid)) == 1
    store.db.dispose()


@pytest.mark.parametrize(("golds", "stage", "question", "reason"), [
    ([CLIMBERS], reward_pb2.REWARD_STAGE_1, "", "EMPTY_QUESTION"),
    ([CLIMBERS], reward_pb2.REWARD_STAGE_1, " \t", "EMPTY_QUESTION"),
    ([], reward_pb2.REWARD_STAGE_1, K2, "NO_GOLD_ANSWERS"),
    (["", " "], reward_pb2.REWARD_STAGE_2, K2, "NO_GOLD_ANSWERS"),
    ([CLIMBERS], 7, K2, "UNKNOWN_REWARD_STAGE"),
])
async def test_bad_requests_are_invalid_argument(settings: Settings, start_server: Any, golds: list[str],
                                                 stage: int, question: str, reason: str) -> None:
    address = await serve_in_process(settings, start_server, None)
    traj = Trajectory(question=K2, prompt="", answer=CLIMBERS)
    async with channel(settings, address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await reward_pb2_grpc.RewardServiceStub(ch).Score(
                request(traj, golds, stage=stage, question=question), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    typed = error_from_rpc(err.value)
    assert isinstance(typed, InvalidArgument) and typed.reason == reason


async def test_trajectory_id_needs_a_store_and_a_known_trajectory(settings: Settings, start_server: Any,
                                                                  tmp_path: Path) -> None:
    traj = Trajectory(question=K2, prompt="", answer=CLIMBERS)
    without = await serve_in_process(settings, start_server, None)
    store = open_store(f"sqlite:///{tmp_path / 'rewards.db'}")
    with_store = await serve_in_process(settings, start_server, store)
    for address, code, kind in ((without, grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
                                (with_store, grpc.StatusCode.NOT_FOUND, NotFound)):
        async with channel(settings, address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reward_pb2_grpc.RewardServiceStub(ch).Score(
                    request(traj, [CLIMBERS], trajectory_id="no-such-trajectory"), timeout=30)
        assert err.value.code() == code and isinstance(error_from_rpc(err.value), kind)
    store.db.dispose()


@pytest.mark.slow
async def test_fathom_serve_reward_process_scores_and_stores(tmp_path: Path, redis_url: str) -> None:
    """The process builds its judge, labeller and store itself from the settings (env here)."""
    db_url = f"sqlite:///{tmp_path / 'fathom.db'}"
    store = open_store(db_url)
    traj = await redundant_trajectory()
    tid = stored(store, traj)
    env = dict(os.environ)
    env.update({
        "FATHOM_DATA_DIR": str(tmp_path / "data"), "FATHOM_CACHE_DIR": str(tmp_path / "cache"),
        "FATHOM_DATABASE_URL": db_url, "FATHOM_PLANE__BROKER_URL": redis_url,
        "FATHOM_PLANE__REDIS_URL": redis_url, "FATHOM_PLANE__AUTH_TOKENS": f"proc:{TOKEN}",
        "FATHOM_PLANE__GRACE_S": "5", "FATHOM_REWARD__JUDGE": "exact", "FATHOM_REWARD__LABELLER": "embedding",
    })
    proc = subprocess.Popen([*FATHOM, "serve", "reward", "--address", "127.0.0.1:0"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line
        address = f"127.0.0.1:{int(line.rsplit(':', 1)[1])}"
        client = Settings(data_dir=tmp_path / "client", plane=PlaneSettings(client_token=SecretStr(TOKEN)))
        async with channel(client, address) as ch:
            got = await reward_pb2_grpc.RewardServiceStub(ch).Score(
                request(traj, [CLIMBERS], trajectory_id=tid), timeout=120)
        assert (got.reward, got.judge_model, len(got.labels)) == (0.6, "exact", 4)
        (saved,) = store.get_rewards(tid)
        assert saved.reward == 0.6 and saved.breakdown["labeller"] == "embedding:all-MiniLM-L6-v2"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        store.db.dispose()
