"""Weight sync between the RAPO trainer and a policy service over gRPC, and in-process rollouts whose
tool calls go through the plane's train-lane queues.

The servers here are real: a grpc.aio server on a free port with the real ``PolicyServicer`` over a
``TransformersBackend`` of the bundled model (auth on), and a real Celery worker on the train lane.
The proof of sync: after a real optimizer step and a push through ``LoadWeights``, the service scores
a fixed token sequence exactly as the trainer's model does, and differently from before the step.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from celery.contrib.testing.worker import start_worker
from fathom.agent.policy_service import PolicyService, SamplingOverrides, TrajectoryDone
from fathom.core.config import AgentSettings, Settings
from fathom.core.errors import FailedPrecondition, InvalidArgument, NotFound, ServiceError, Unauthenticated
from fathom.corpus.web import LocalWeb
from fathom.models.bundled import prepare_bundled
from fathom.models.transformers_backend import TransformersBackend
from fathom.queue.app import make_celery
from fathom.queue.keys import tool_key
from fathom.queue.worker_runtime import close_runtimes, worker_id
from fathom.rpc.policy_client import PolicyClient
from fathom.rpc.server import build_server
from fathom.rpc.servicers.policy import SERVICE_NAME, register
from fathom.training.agent_rollouts import (
    AgentRollouts,
    WeightSyncUnavailable,
    build_rollout_source,
    write_weights,
)
from fathom.training.config import RunConfig
from fathom.training.data import Prompt
from fathom.training.trainer import completion_logprobs, load_policy

from tests.agent.agent_scripted import InMemoryTools, ScriptedBackend
from tests.queue.conftest import local_web, purge, settings_for  # noqa: F401  (local_web: a fixture)

TOKEN = "s3cret-weight-sync"
QUESTION = "Which river flows through the capital of France?"


@pytest.fixture
def weights_root(tmp_path: Path) -> Path:
    root = tmp_path / "shared-weights"  # the volume both pods mount
    root.mkdir()
    return root


def server_settings(tmp_path: Path, weights_root: Path | None) -> Settings:
    settings = Settings.model_validate({
        "data_dir": tmp_path / "server-data",
        "plane": {"weights_dir": weights_root, "auth_tokens": f"trainer:{TOKEN}", "client_token": TOKEN}})
    settings.agent = AgentSettings(guided=False, max_turns=1, max_new_tokens_per_turn=12)
    return settings


def client_settings(token: str | None = TOKEN, **fields: Any) -> Settings:
    """What the trainer (or another client) runs with: our client token, default cache (models)."""
    return Settings.model_validate({**fields, "plane": {"client_token": token} if token else {}})


def bundled_backend(name: str = "served") -> TransformersBackend:
    """The served policy (loads lazily, on its first request or weight load), float32 like the trainer."""
    return TransformersBackend(str(prepare_bundled(Settings().models_dir)), dtype="float32", name=name)


@asynccontextmanager
async def policy_server(settings: Settings, backend: Any) -> AsyncIterator[tuple[PolicyService, str]]:
    """The policy service over gRPC on a free port, as ``fathom serve policy`` builds it (auth
    interceptor, LoadWeights reading from ``plane.weights_dir``); tools are an in-memory web."""
    service = PolicyService(backend, lambda lane, tid, job_id: InMemoryTools(), settings)
    server, _health, port = build_server(settings, register=register(service), service_names=[SERVICE_NAME],
                                         address="127.0.0.1:0")
    await server.start()
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)
        close = getattr(backend, "aclose", None)
        if close is not None:
            await close()


def grpc_config(out: Path, address: str, weights_root: Path | None) -> RunConfig:
    return RunConfig.model_validate({
        "name": "sync-test", "output_dir": str(out), "tensorboard": False, "seed": 1, "torch_threads": 2,
        "reward_stage": 1, "judge": "exact",
        "rollout": {"kind": "agent", "policy": "grpc", "policy_address": address,
                    "weights_dir": str(weights_root) if weights_root else None,
                    "temperature": 1.0, "max_new_tokens": 12, "max_turns": 1, "max_tool_calls": 1,
                    "max_context_tokens": 2000},
    })


class FixedRollout:
    def __init__(self, prompt_ids: list[int], completion_ids: list[int]) -> None:
        self.prompt_ids, self.completion_ids = prompt_ids, completion_ids
        self.mask = [1] * len(completion_ids)


FIXED = FixedRollout(prompt_ids=list(range(1000, 1040)), completion_ids=list(range(2000, 2030)))


def trainer_logprobs(model: torch.nn.Module, pad_id: int) -> list[float]:
    with torch.no_grad():
        return [float(x) for x in completion_logprobs(model, [FIXED], 1.0, pad_id)[0][0].tolist()]


def optimizer_step(model: torch.nn.Module, pad_id: int) -> None:
    """One real update: SGD on the negative log-likelihood of the fixed completion (no optimizer state
    to allocate: the 135M model's Adam moments alone would be 1 GB)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    logprobs, mask, _ = completion_logprobs(model, [FIXED], 1.0, pad_id)
    loss = -(logprobs * mask).sum() / mask.sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()


async def collect(events: Any) -> TrajectoryDone:
    async for event in events:
        if isinstance(event, TrajectoryDone):
            return event
    raise AssertionError("no TrajectoryDone")


# ----------------------------------------------------------------------------- the sync itself


@pytest.mark.slow
async def test_trainer_weights_reach_the_policy_service_and_pin_the_next_rollouts(
    tmp_path: Path, weights_root: Path
) -> None:
    server = policy_server(server_settings(tmp_path, weights_root), bundled_backend())
    async with server as (service, address):
        cfg = grpc_config(tmp_path / "run", address, weights_root)
        settings = client_settings(data_dir=tmp_path / "trainer-data")
        model, tok = load_policy(cfg, settings)
        pad = int(tok.pad_token_id)
        # Starting the source pushes the trainer's initial weights: step 1 samples from them too.
        source = await build_rollout_source(cfg, settings, model, tok)
        assert isinstance(source, AgentRollouts)
        try:
            client: PolicyClient = source.policy
            v1 = service.policy_version
            assert v1 == "served@1" and source.expected_version == v1
            served0, _ = await client.score_tokens(FIXED.prompt_ids + FIXED.completion_ids, 40)
            assert served0 == pytest.approx(trainer_logprobs(model, pad), abs=1e-4)
            run_dir = weights_root / "sync-test"
            assert [p.name[:7] for p in run_dir.iterdir()] == ["v000000"]

            optimizer_step(model, pad)
            await source.push_weights(model, 1)

            v2 = service.policy_version
            assert v2 == "served@2" and source.expected_version == v2
            pushed = sorted(p.name for p in run_dir.iterdir())
            assert len(pushed) == 1 and pushed[0].startswith("v000001-")  # the older push is gone
            assert (run_dir / pushed[0] / "model.safetensors").is_file()
            # The service scores a fixed sequence as the updated trainer does, and not as before.
            served1, version = await client.score_tokens(FIXED.prompt_ids + FIXED.completion_ids, 40)
            ours = trainer_logprobs(model, pad)
            assert version == v2
            assert served1 == pytest.approx(ours, abs=1e-4)
            assert max(abs(a - b) for a, b in zip(served1, served0, strict=True)) > 1e-2

            # The next rollouts ask for and carry the new version...
            groups = await source.rollouts([Prompt("p0", QUESTION, ("the Seine",))], 1, step=1)
            assert groups[0][0].policy_version == v2 and source.last_stats["rollout_policy_version"] == v2
            assert groups[0][0].completion_ids and any(groups[0][0].mask)
            # ...and one that asks for the old weights is refused before anything is sampled.
            with pytest.raises(FailedPrecondition) as stale:
                await collect(client.run_trajectory("stale-1", QUESTION, "train", SamplingOverrides(),
                                                    policy_version=v1, timeout=30))
            assert stale.value.reason == "POLICY_VERSION_MISMATCH"
            # A push that expects weights the service no longer serves is refused (compare-and-set).
            with pytest.raises(FailedPrecondition) as cas:
                await client.load_weights(f"sync-test/{pushed[0]}", expected_policy_version=v1)
            assert cas.value.reason == "POLICY_VERSION_MISMATCH" and service.policy_version == v2
        finally:
            await source.aclose()


# ----------------------------------------------------------------------------- refusals


async def test_paths_outside_the_weights_root_and_unauthenticated_calls_are_refused(
    tmp_path: Path, weights_root: Path
) -> None:
    backend = bundled_backend()
    outside = tmp_path / "elsewhere"
    write_weights(torch.nn.Linear(2, 2), outside, "v000001-00000000", "x@1")  # valid safetensors
    (weights_root / "escape").symlink_to(outside / "v000001-00000000")
    (weights_root / "empty").mkdir()
    (weights_root / "junk").mkdir()
    (weights_root / "junk" / "model.safetensors").write_bytes(b"not safetensors at all")
    async with policy_server(server_settings(tmp_path, weights_root), backend) as (service, address):
        before = service.policy_version
        async with PolicyClient(client_settings(), address) as client:
            for path in ("../elsewhere/v000001-00000000", str(outside / "v000001-00000000"), "escape",
                         "/etc", ".", "sub/../../elsewhere"):
                with pytest.raises(InvalidArgument) as bad:
                    await client.load_weights(path)
                assert bad.value.reason == "WEIGHTS_PATH_OUTSIDE_ROOT", path
            with pytest.raises(InvalidArgument) as empty:
                await client.load_weights("  ")
            assert empty.value.reason == "BAD_WEIGHTS_PATH"
            for path in ("nope", "empty"):
                with pytest.raises(NotFound) as missing:
                    await client.load_weights(path)
                assert missing.value.reason == "WEIGHTS_NOT_FOUND"
            with pytest.raises(InvalidArgument) as junk:
                await client.load_weights("junk")
            assert junk.value.reason == "WEIGHTS_UNREADABLE"
        for token in (None, "wrong-token"):
            async with PolicyClient(client_settings(token), address) as anonymous:
                with pytest.raises(Unauthenticated):
                    await anonymous.load_weights("junk")
        assert service.policy_version == before


@pytest.mark.slow
async def test_tensors_the_model_lacks_or_of_other_shapes_are_refused(
    tmp_path: Path, weights_root: Path
) -> None:
    from safetensors.torch import save_file

    (weights_root / "shape").mkdir()
    save_file({"model.norm.weight": torch.zeros(3)}, str(weights_root / "shape" / "model.safetensors"))
    (weights_root / "names").mkdir()
    save_file({"no.such.tensor": torch.zeros(3)}, str(weights_root / "names" / "model.safetensors"))
    server = policy_server(server_settings(tmp_path, weights_root), bundled_backend())
    async with server as (service, address), PolicyClient(client_settings(), address) as client:
        for path, words in (("shape", "has shape"), ("names", "lacks")):
            with pytest.raises(InvalidArgument, match=words) as bad:
                await client.load_weights(path)
            assert bad.value.reason == "WEIGHTS_MISMATCH"
        assert service.policy_version == "served"


async def test_a_backend_that_takes_no_weights_stops_the_run_and_no_root_refuses(
    tmp_path: Path, weights_root: Path
) -> None:
    # The replay model / a vLLM server: LoadWeights answers UNIMPLEMENTED, the trainer stops.
    async with policy_server(server_settings(tmp_path, weights_root), ScriptedBackend(["x"])) as (_, address):
        cfg = grpc_config(tmp_path / "run", address, weights_root)
        settings = client_settings(data_dir=tmp_path / "trainer-data")
        with pytest.raises(WeightSyncUnavailable, match="cannot load weights") as info:
            await build_rollout_source(cfg, settings, torch.nn.Linear(2, 2), None)
        assert isinstance(info.value.__cause__, ServiceError)
        assert info.value.__cause__.metadata["grpc_code"] == "UNIMPLEMENTED"
        assert list((weights_root / "sync-test").iterdir()) == []  # the refused push was cleaned up
        # No shared directory on the trainer's side: refused before any work.
        with pytest.raises(WeightSyncUnavailable, match="weights_dir"):
            await build_rollout_source(grpc_config(tmp_path / "run", address, None), settings,
                                       torch.nn.Linear(2, 2), None)
    # A service with no weights root loads nothing.
    server = policy_server(server_settings(tmp_path, None), bundled_backend())
    async with server as (_, address), PolicyClient(client_settings(), address) as client:
        with pytest.raises(FailedPrecondition) as unset:
            await client.load_weights("v1")
        assert unset.value.reason == "WEIGHTS_DIR_UNSET"


# ----------------------------------------------------------------------------- tools over the queues


@pytest.fixture
def queue_settings(redis_url: str, local_web: LocalWeb, tmp_path: Path) -> Iterator[Settings]:  # noqa: F811
    settings = settings_for(redis_url, local_web, tmp_path)
    app = make_celery(settings)
    purge(app, redis_url)
    yield settings
    close_runtimes()
    purge(app, redis_url)
    app.close()


@pytest.mark.slow
async def test_inprocess_rollouts_with_queue_tools_run_their_calls_on_a_train_lane_worker(
    queue_settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    cfg = RunConfig.model_validate({
        "name": "queue-tools", "output_dir": str(tmp_path / "run"), "tensorboard": False, "seed": 2,
        "torch_threads": 2, "reward_stage": 1, "judge": "exact",
        # guided: the bundled 135M model is walked through a search, so there is a tool call to serve
        "rollout": {"kind": "agent", "policy": "inprocess", "tools": "queue", "guided": True,
                    "temperature": 1.0, "max_new_tokens": 12, "max_turns": 2, "max_tool_calls": 1,
                    "max_context_tokens": 2000},
    })
    worker_app = make_celery(queue_settings)
    with start_worker(worker_app, pool="threads", concurrency=2, queues=["search.train", "fetch.train"],
                      perform_ping_check=False, loglevel="WARNING", shutdown_timeout=20):
        source = await AgentRollouts(cfg, queue_settings).start()
        try:
            groups = await source.rollouts([Prompt("radium", "Who discovered radium?", ("Marie Curie",))],
                                           1, step=0)
        finally:
            await source.aclose()
    worker_app.close()
    stats = source.last_stats
    assert stats["rollout_errors"] == 0 and groups[0][0].tool_calls == stats["tool_calls"] > 0
    assert stats["tool_s"] > 0
    # Every call was run by the train-lane worker, which recorded its result in the plane's Redis under
    # the loop's call id (trajectory:step:call).
    client = redis.Redis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(tool_key("radium-g0-*")))
        records = [json.loads(client.get(k) or b"{}") for k in keys]
    finally:
        client.close()
    assert len(records) == stats["tool_calls"]
    assert all(r["worker"] == worker_id() and r["ok"] for r in records), records
    assert all(r["tool"] in ("search_urls", "query_url") for r in records)


def test_tool_modes_parse() -> None:
    assert RunConfig().rollout.tools == "inprocess"
    assert RunConfig.model_validate({"rollout": {"tools": "queue"}}).rollout.tools == "queue"
    with pytest.raises(ValueError):
        RunConfig.model_validate({"rollout": {"tools": "celery"}})
