"""PolicyService over gRPC, in process: a grpc.aio server on port 0 and the real PolicyClient."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from fathom.agent import protocol
from fathom.agent.policy_service import PolicyService, SamplingOverrides, TrajectoryDone
from fathom.agent.trajectory import Step
from fathom.core.config import AgentSettings, Settings
from fathom.core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from fathom.rpc.policy_client import PolicyClient
from fathom.rpc.servicers.policy import SERVICE_NAME, register

from tests.agent.agent_scripted import GatedBackend, InMemoryTools, ScriptedBackend

QUESTION = "How high is Mount Everest?"
SEARCH = "\nSearch.\n</think>\n" + protocol.format_tool_call("search_urls", {"query": "Everest height"})
ANSWER = "\nIt is 8,849 m.\n</think>\n\\boxed{8,849 metres}"




async def serve(start_server: Any, settings: Settings, backend: Any) -> tuple[PolicyService, PolicyClient]:
    settings.agent = AgentSettings(guided=False)
    svc = PolicyService(backend, lambda lane, tid, job_id: InMemoryTools(), settings)
    running = await start_server(settings, register(svc), [SERVICE_NAME])
    return svc, PolicyClient(settings, running.address)


async def collect(events: Any) -> tuple[list[Step], TrajectoryDone]:
    steps: list[Step] = []
    async for event in events:
        if isinstance(event, TrajectoryDone):
            return steps, event
        steps.append(event)
    raise AssertionError("no TrajectoryDone")


async def test_steps_round_trip_with_token_ids_and_logprobs(start_server: Any, settings: Settings) -> None:
    # chars_per_token=1: the scripted backend's token ids are the characters' code points.
    backend = ScriptedBackend([SEARCH, ANSWER], chars_per_token=1, name="scripted-v3")
    _, client = await serve(start_server, settings, backend)
    try:
        sampling = SamplingOverrides(temperature=0.9, seed=3, logprobs=True)
        steps, done = await collect(client.run_trajectory("rpc-1", QUESTION, "train", sampling, timeout=30))
    finally:
        await client.aclose()
    assert [s.index for s in steps] == [0, 1]
    assert steps[0].text == SEARCH and steps[0].token_ids == [ord(c) for c in SEARCH]
    assert steps[0].logprobs == pytest.approx([-0.5] * len(SEARCH))
    call = steps[0].tool_calls[0]
    assert call.name == "search_urls" and call.arguments == {"query": "Everest height"} and call.ok
    assert "mountains.example/everest" in (call.result or "")
    assert steps[1].answer == "8,849 metres" and steps[1].token_ids == [ord(c) for c in ANSWER]
    assert done.answer == "8,849 metres" and done.stop_reason == "answered"
    assert done.policy_version == "scripted-v3" and done.prompt.startswith(protocol.IM_START)
    params = backend.requests[0].params
    assert params.temperature == pytest.approx(0.9) and params.seed == 3


async def test_resume_and_report_mode_travel(start_server: Any, settings: Settings) -> None:
    backend = ScriptedBackend([ANSWER])
    _, client = await serve(start_server, settings, backend)
    recorded = Step(index=0, text=SEARCH, think="Search.", tool_calls=[], answer=None)
    from fathom.agent.protocol import parse_turn

    recorded.tool_calls = parse_turn(SEARCH).tool_calls
    recorded.tool_calls[0].result = "RECORDED RESULT"
    try:
        steps, done = await collect(client.run_trajectory("rpc-2", QUESTION, resume_steps=[recorded],
                                                          mode="report", timeout=30))
    finally:
        await client.aclose()
    assert [s.index for s in steps] == [1] and done.stop_reason == "answered"
    prompt = backend.requests[0].prompt
    assert "RECORDED RESULT" in prompt  # the recorded tool response, not a new call
    assert protocol.build_prompt(QUESTION, mode="report") in prompt


async def test_errors_come_back_typed(start_server: Any, settings: Settings) -> None:
    _, client = await serve(start_server, settings, ScriptedBackend([ANSWER], name="v1"))
    try:
        with pytest.raises(FailedPrecondition) as info:
            await collect(client.run_trajectory("rpc-3", QUESTION, policy_version="v2", timeout=10))
        assert info.value.reason == "POLICY_VERSION_MISMATCH"
        with pytest.raises(InvalidArgument) as bad:
            await collect(client.run_trajectory("rpc-3", "", timeout=10))
        assert bad.value.reason == "EMPTY_QUESTION"
        with pytest.raises(InvalidArgument):
            await collect(client.run_trajectory("rpc-3", QUESTION, mode="poem", timeout=10))
        with pytest.raises(FailedPrecondition, match="cannot score tokens"):
            await client.score_tokens([1, 2, 3], 1)
    finally:
        await client.aclose()


async def test_the_grpc_deadline_bounds_the_trajectory(start_server: Any, settings: Settings) -> None:
    backend = GatedBackend([SEARCH, ANSWER], gate_at=1)
    _, client = await serve(start_server, settings, backend)
    try:
        with pytest.raises(DeadlineExceeded):
            await collect(client.run_trajectory("rpc-4", QUESTION, timeout=0.5))
        await asyncio.wait_for(backend.cancelled.wait(), timeout=5)  # the server stopped the model call
    finally:
        await client.aclose()


async def test_a_client_that_goes_away_cancels_the_run(start_server: Any, settings: Settings) -> None:
    backend = GatedBackend([SEARCH, ANSWER], gate_at=1)
    svc, client = await serve(start_server, settings, backend)
    try:
        events = client.run_trajectory("rpc-5", QUESTION, timeout=30)
        first = await asyncio.wait_for(events.__anext__(), timeout=10)
        assert isinstance(first, Step) and first.index == 0  # streamed before the run ended
        await asyncio.wait_for(backend.waiting.wait(), timeout=10)
        await events.aclose()  # leaves the stream: the call is cancelled
        await asyncio.wait_for(backend.cancelled.wait(), timeout=5)
        for _ in range(50):
            if svc.active == 0:
                break
            await asyncio.sleep(0.02)
        assert svc.active == 0
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_policy_process_serves_health_and_stops_on_sigterm(redis_url: str, tmp_path: Any) -> None:
    """``fathom.serve.policy.main`` as its own OS process with the replay model."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = _free_port()
    env = {**os.environ, "FATHOM_POLICY__BACKEND": "replay", "FATHOM_POLICY__MODEL": "bundled:replay-demo",
           "FATHOM_POLICY__LATENCY_S": "0.01", "FATHOM_PLANE__REDIS_URL": redis_url,
           "FATHOM_PLANE__BROKER_URL": redis_url, "FATHOM_DATA_DIR": str(tmp_path),
           "FATHOM_PLANE__GRACE_S": "1"}
    code = ("import asyncio; from fathom.core.config import Settings; from fathom.serve.policy import main; "
            f"asyncio.run(main(Settings(), '127.0.0.1:{port}'))")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    settings = Settings()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
                    break
                except grpc.aio.AioRpcError:
                    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                    assert time.monotonic() < deadline, "the policy process never became healthy"
                    await asyncio.sleep(0.2)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        client = PolicyClient(settings, f"127.0.0.1:{port}")
        try:
            with pytest.raises(FailedPrecondition, match="cannot score tokens"):
                await client.score_tokens([1, 2, 3], 1)
            with pytest.raises(FailedPrecondition, match="bundled:replay-demo"):
                await collect(client.run_trajectory("p-1", QUESTION, policy_version="other", timeout=10))
        finally:
            await client.aclose()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
