"""``fathom serve gateway`` and ``fathom serve reward`` as real OS processes: health, reflection,
auth, a real Submit, SIGTERM drain, and the one-line refusals (bad address, port in use)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fathom.core.config import Settings
from fathom.core.errors import Unauthenticated
from fathom.rpc.clients import GatewayClient
from fathom.rpc.gen import common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

FATHOM = [sys.executable, "-m", "fathom.cli.main"]
TOKEN = "tok-process-1"


def _env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        # The machine's cache dir (make setup prepared the bundled model there): a fresh one would
        # make the reward service convert the model first, 30 s of a test about the process.
        "FATHOM_DATA_DIR": str(tmp_path / "data"),
        "FATHOM_DATABASE_URL": f"sqlite:///{tmp_path / 'fathom.db'}",
        "FATHOM_PLANE__BROKER_URL": redis_url, "FATHOM_PLANE__REDIS_URL": redis_url,
        "FATHOM_PLANE__AUTH_TOKENS": f"proc:{TOKEN}", "FATHOM_PLANE__GRACE_S": "5",
        "FATHOM_PLANE__SWEEP_INTERVAL_S": "0.5",
    })
    return env


Process = subprocess.Popen[str]


def _start(service: str, env: dict[str, str], address: str = "127.0.0.1:0") -> tuple[Process, int]:
    proc = subprocess.Popen([*FATHOM, "serve", service, "--address", address], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the server is bound (or the process died)
    if "listening on" not in line:
        proc.kill()
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"fathom serve {service} did not start: {line!r}\n{err[-3000:]}")
    return proc, int(line.rsplit(":", 1)[1])


@pytest.fixture
def gateway_process(tmp_path: Path, redis_url: str) -> Iterator[tuple[Process, int, dict[str, str]]]:
    env = _env(tmp_path, redis_url)
    proc, port = _start("gateway", env)
    yield proc, port, env
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)
    import redis
    from fathom.queue.names import LANES, QUEUES, queue_name

    r = redis.Redis.from_url(redis_url)  # the messages Submit queued; never the db's claim key
    r.delete(*[queue_name(q, lane) for q in QUEUES for lane in LANES], *r.scan_iter(match="_kombu.binding.*"))
    r.close()


async def _listed_services(address: str) -> set[str]:
    async with grpc.aio.insecure_channel(address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        names: set[str] = set()
        async for reply in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        ):
            names |= {s.name for s in reply.list_services_response.service}
        return names


async def _health(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service),
                                                           timeout=10)
        return int(reply.status)


async def test_gateway_process(gateway_process: tuple[Process, int, dict[str, str]],
                               tmp_path: Path) -> None:
    proc, port, env = gateway_process
    address = f"127.0.0.1:{port}"
    assert await _health(address) == health_pb2.HealthCheckResponse.SERVING
    assert await _health(address, "fathom.v1.ResearchService") == health_pb2.HealthCheckResponse.SERVING
    assert {"fathom.v1.ResearchService", "grpc.health.v1.Health"} <= await _listed_services(address)

    base = Settings(data_dir=tmp_path / "client")
    async with GatewayClient(base, address) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.get("00000000-0000-4000-8000-000000000000")
    plane = base.plane.model_copy(update={"client_token": SecretStr(TOKEN)})
    authed = base.model_copy(update={"plane": plane})
    async with GatewayClient(authed, address) as client:
        job = await client.submit("Which Nobel Prize did Marie Curie win in 1911?", "search")
        assert job.state == common_pb2.JOB_STATE_QUEUED
        assert (await client.get(job.id)).question.startswith("Which Nobel")

    # A second server on the same port: one clear line, exit status 2.
    refused = subprocess.run([*FATHOM, "serve", "gateway", "--address", address], env=env, text=True,
                             capture_output=True, timeout=120)
    assert refused.returncode == 2
    assert "cannot listen on" in refused.stderr and "Traceback" not in refused.stderr

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert "rpc_server_draining" in err and "gateway_closed" in err


def test_bad_address_is_one_line_and_exit_2(tmp_path: Path, redis_url: str) -> None:
    result = subprocess.run([*FATHOM, "serve", "reward", "--address", "no-port-here"],
                            env=_env(tmp_path, redis_url), text=True, capture_output=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad address" in errors[0] and "Traceback" not in result.stderr


async def test_reward_process_health_and_sigterm(tmp_path: Path, redis_url: str) -> None:
    proc, port = _start("reward", _env(tmp_path, redis_url))
    try:
        address = f"127.0.0.1:{port}"
        assert await _health(address, "fathom.v1.RewardService") == health_pb2.HealthCheckResponse.SERVING
        assert "fathom.v1.RewardService" in await _listed_services(address)
        async with grpc.aio.insecure_channel(address) as ch:
            from fathom.rpc.gen import reward_pb2, reward_pb2_grpc

            with pytest.raises(grpc.aio.AioRpcError) as err:  # no token: refused before UNIMPLEMENTED
                await reward_pb2_grpc.RewardServiceStub(ch).Score(reward_pb2.ScoreRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
