"""PolicyService: streamed steps, resume without re-running tools, many trajectories, cancel, deadline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_scripted import GatedBackend, InMemoryTools, ScriptedBackend
from fathom.agent import protocol
from fathom.agent.policy_service import PolicyService, SamplingOverrides, TrajectoryDone
from fathom.agent.trajectory import Step
from fathom.core.config import AgentSettings, Settings
from fathom.core.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from fathom.models.base import ChatMessage, SamplingParams
from fathom.models.replay import ReplayBackend
from fathom.tools.base import ToolResult

QUESTION = "How high is Mount Everest?"
SEARCH = "\nSearch first.\n</think>\n" + protocol.format_tool_call("search_urls", {"query": "Everest height"})
READ = "\nRead it.\n</think>\n" + protocol.format_tool_call(
    "query_url", {"url": "https://mountains.example/everest", "goal": "height"})
ANSWER = "\nIt is 8,849 m.\n</think>\n\\boxed{8,849 metres}"
SCRIPT = [SEARCH, READ, ANSWER]


@dataclass
class IdTools(InMemoryTools):
    """The in-memory web, recording each call with the call id the loop gave it."""

    calls: list[tuple[str, str | None]] = field(default_factory=list)
    closed: int = 0

    async def call(self, name: str, arguments: dict[str, Any], *, call_id: str | None = None) -> ToolResult:
        self.calls.append((name, call_id))
        return await super().call(name, arguments)

    async def aclose(self) -> None:
        self.closed += 1




def settings(concurrency: int = 8) -> Settings:
    s = Settings(agent=AgentSettings(guided=False))  # the default (bundled) policy would be guided
    s.plane.policy_trajectories = concurrency
    return s


def service(backend: Any, tools: IdTools | None = None, **kw: Any) -> tuple[PolicyService, IdTools]:
    tools = tools or IdTools()
    return PolicyService(backend, lambda lane, tid, job_id: tools, settings(**kw)), tools


async def collect(events: Any) -> tuple[list[Step], TrajectoryDone]:
    steps: list[Step] = []
    async for event in events:
        if isinstance(event, TrajectoryDone):
            return steps, event
        steps.append(event)
    raise AssertionError("the stream ended without a TrajectoryDone")


async def test_a_trajectory_streams_its_steps_then_done() -> None:
    svc, tools = service(ScriptedBackend(SCRIPT, name="scripted-v1"))
    steps, done = await collect(svc.run("t1", QUESTION))
    assert [s.index for s in steps] == [0, 1, 2]
    assert [s.text for s in steps] == SCRIPT
    assert done.answer == "8,849 metres" and done.stop_reason == "answered"
    assert done.policy_version == "scripted-v1" and done.prompt.startswith(protocol.IM_START + "system")
    assert done.total_tokens > 0
    # Deterministic call ids: trajectory:step:call.
    assert tools.calls == [("search_urls", "t1:0:0"), ("query_url", "t1:1:0")]
    assert tools.closed == 1


async def test_steps_arrive_before_the_trajectory_ends() -> None:
    backend = GatedBackend(SCRIPT, gate_at=1)
    svc, _ = service(backend)
    events = svc.run("t-stream", QUESTION)
    first = await asyncio.wait_for(events.__anext__(), timeout=10)
    # Step 0 is here while the model of step 1 is still blocked.
    assert isinstance(first, Step) and first.index == 0 and first.tool_calls[0].ok
    assert backend.waiting.is_set() and not backend.gate.is_set()
    backend.gate.set()
    rest, done = await collect(events)
    assert [s.index for s in rest] == [1, 2] and done.stop_reason == "answered"


async def test_resume_does_not_run_the_tools_of_resumed_steps_again() -> None:
    svc, tools = service(ScriptedBackend(SCRIPT))
    recorded, _ = await collect(svc.run("t-resume", QUESTION))
    assert len(tools.calls) == 2

    # A new process resumes after the first two steps: only the answering turn is generated.
    backend = ScriptedBackend([ANSWER])
    svc2, tools2 = service(backend)
    steps, done = await collect(svc2.run("t-resume", QUESTION, resume_steps=recorded[:2]))
    assert tools2.calls == []  # nothing of steps 0 and 1 ran again
    assert [s.index for s in steps] == [2] and done.answer == "8,849 metres"
    # The model saw the recorded context, tool responses included.
    assert "8,849 metres high" in backend.requests[0].prompt

    # Resumed after step 0 only: the read runs again with the same id as the first time.
    svc3, tools3 = service(ScriptedBackend([READ, ANSWER]))
    await collect(svc3.run("t-resume", QUESTION, resume_steps=recorded[:1]))
    assert tools3.calls == [("query_url", "t-resume:1:0")]


async def test_a_finished_trajectory_is_not_resumed() -> None:
    svc, _ = service(ScriptedBackend(SCRIPT))
    recorded, _ = await collect(svc.run("t-done", QUESTION))
    with pytest.raises(FailedPrecondition, match="already ended"):
        await collect(svc.run("t-done", QUESTION, resume_steps=recorded))
    with pytest.raises(InvalidArgument, match="index"):
        await collect(svc.run("t-done", QUESTION, resume_steps=recorded[1:2]))


async def test_sampling_overrides_apply_to_this_call_only() -> None:
    backend = ScriptedBackend(SCRIPT + SCRIPT)
    svc, _ = service(backend)
    overrides = SamplingOverrides(temperature=1.1, top_p=0.9, repetition_penalty=1.2, seed=7, max_turns=1,
                                  max_new_tokens_per_turn=300, logprobs=True)
    steps, done = await collect(svc.run("t-s", QUESTION, sampling=overrides))
    params = backend.requests[0].params
    assert (params.temperature, params.top_p, params.repetition_penalty, params.seed) == (1.1, 0.9, 1.2, 7)
    assert params.logprobs and params.max_new_tokens <= 300
    assert len(steps) == 1 and done.stop_reason == "max_turns"
    assert steps[0].logprobs is not None  # the backend gave them because they were asked for

    await collect(svc.run("t-s2", QUESTION, sampling=SamplingOverrides(max_tool_calls=5)))
    later = backend.requests[-1].params
    assert later.temperature == Settings().policy.temperature and later.seed is None and not later.logprobs


async def test_bad_requests_are_refused_before_anything_runs() -> None:
    backend = ScriptedBackend(SCRIPT, name="v1")
    svc, tools = service(backend)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"question": " "}, InvalidArgument, "empty"),
        ({"question": "x" * 5000}, InvalidArgument, "longer"),
        ({"trajectory_id": ""}, InvalidArgument, "trajectory_id"),
        ({"lane": "fast"}, InvalidArgument, "lane"),
        ({"mode": "poem"}, InvalidArgument, "mode"),
        ({"sampling": SamplingOverrides(top_p=0)}, InvalidArgument, "top_p"),
        ({"sampling": SamplingOverrides(temperature=float("nan"))}, InvalidArgument, "temperature"),
        ({"sampling": SamplingOverrides(max_turns=0)}, InvalidArgument, "max_turns"),
        ({"policy_version": "v2"}, FailedPrecondition, "not 'v2'"),
    ]
    for overrides, error, match in cases:
        kwargs: dict[str, Any] = {"trajectory_id": "t", "question": QUESTION, **overrides}
        with pytest.raises(error, match=match):
            await collect(svc.run(**kwargs))
    assert backend.requests == [] and tools.calls == []
    _, done = await collect(svc.run("t", QUESTION, policy_version="v1"))  # the right version runs
    assert done.policy_version == "v1"


async def test_closing_the_stream_cancels_the_model_request_and_the_tools() -> None:
    backend = GatedBackend(SCRIPT, gate_at=1)
    svc, tools = service(backend)
    events = svc.run("t-cancel", QUESTION)
    assert isinstance(await asyncio.wait_for(events.__anext__(), timeout=10), Step)
    await asyncio.wait_for(backend.waiting.wait(), timeout=10)
    await events.aclose()
    assert backend.cancelled.is_set()  # the model request of step 1 was cancelled, not left running
    assert tools.closed == 1 and svc.active == 0


async def test_cancelling_the_consumer_task_cancels_the_run() -> None:
    backend = GatedBackend(SCRIPT, gate_at=0)
    svc, tools = service(backend)

    async def consume() -> None:
        await collect(svc.run("t-cancel2", QUESTION))

    task = asyncio.create_task(consume())
    await asyncio.wait_for(backend.waiting.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(backend.cancelled.wait(), timeout=5)
    assert tools.closed == 1


async def test_the_deadline_bounds_the_whole_trajectory() -> None:
    backend = GatedBackend(SCRIPT, gate_at=1)
    svc, tools = service(backend)
    events = svc.run("t-deadline", QUESTION, deadline_s=0.3)
    with pytest.raises(DeadlineExceeded, match="deadline"):
        await collect(events)
    assert backend.cancelled.is_set() and tools.closed == 1


async def test_concurrency_is_bounded_by_the_policy_setting() -> None:
    backend = GatedBackend(SCRIPT, gate_at=0)  # the first request blocks and holds its slot
    svc, _ = service(backend, concurrency=1)
    first = asyncio.create_task(collect(svc.run("a", QUESTION)))
    await asyncio.wait_for(backend.waiting.wait(), timeout=10)
    with pytest.raises(DeadlineExceeded):  # waiting for a slot counts against the deadline
        await collect(svc.run("b", QUESTION, deadline_s=0.2))
    backend.gate.set()
    _, done = await first
    assert done.stop_reason == "answered"


def replay_recordings() -> list[dict[str, Any]]:
    return [{"question": QUESTION, "steps": SCRIPT}]


async def test_many_trajectories_run_at_once_in_one_process() -> None:
    latency = 0.05
    replay = ReplayBackend(replay_recordings(), latency_s=latency, name="replay")
    svc = PolicyService(replay, lambda lane, tid, job_id: InMemoryTools(), settings(concurrency=64))

    started = time.perf_counter()
    _, done = await collect(svc.run("serial", QUESTION))
    serial = time.perf_counter() - started
    assert done.stop_reason == "answered"

    n = 32
    started = time.perf_counter()
    results = await asyncio.gather(*(collect(svc.run(f"c{i}", QUESTION)) for i in range(n)))
    concurrent = time.perf_counter() - started
    print(f"\none trajectory: {serial * 1000:.0f} ms (3 turns x {latency * 1000:.0f} ms model); "
          f"{n} at once: {concurrent * 1000:.0f} ms; {n} in series would take ~{n * serial * 1000:.0f} ms")
    assert all(d.stop_reason == "answered" and d.answer == "8,849 metres" for _, d in results)
    assert concurrent < 0.5 * n * serial


async def test_score_tokens_needs_a_backend_that_can() -> None:
    svc, _ = service(ScriptedBackend(SCRIPT))
    with pytest.raises(FailedPrecondition, match="cannot score tokens"):
        await svc.score_tokens([1, 2, 3], 1)


async def test_score_tokens_matches_the_log_probs_of_sampling(tmp_path: Path) -> None:
    """Weight-sync check: the log-probs ScoreTokens gives a sampled sequence are those the model
    reported while sampling it (greedy, one model)."""
    from fathom.models.bundled import prepare_bundled
    from fathom.models.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(prepare_bundled(Settings().models_dir)), name="smollm2")
    try:
        svc, _ = service(backend)
        prompt = backend.render_chat([ChatMessage("user", "Name a colour.")])
        completion = await backend.complete(prompt, SamplingParams(max_new_tokens=6, temperature=0.0,
                                                                   repetition_penalty=1.0, logprobs=True))
        assert completion.token_ids and completion.logprobs
        prompt_ids = backend.tokenizer(prompt).input_ids
        scored = await svc.score_tokens(prompt_ids + completion.token_ids, len(prompt_ids))
        assert len(scored) == len(completion.token_ids)
        assert scored == pytest.approx(completion.logprobs, abs=1e-3)
        with pytest.raises(InvalidArgument, match="from_position"):
            await svc.score_tokens(prompt_ids, 0)
    finally:
        await backend.aclose()
