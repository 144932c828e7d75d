"""The agent loop against a scripted model and a real in-memory tool runner."""

from __future__ import annotations

import asyncio

import pytest
from agent_scripted import WEB, InMemoryTools, ScriptedBackend
from fathom.agent import protocol as p
from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Step, Trajectory
from fathom.core.config import AgentSettings
from fathom.models.base import SamplingParams
from fathom.tools.search.base import SearchHit

K2 = "Who made the first ascent of K2?"


def search(query: str, think: str = "I need to search.") -> str:
    return p.format_turn(think, [("search_urls", {"query": query})])


def read(url: str, goal: str) -> str:
    return p.format_turn("This page looks right.", [("query_url", {"url": url, "goal": goal})])


def answer(text: str) -> str:
    return p.format_turn("Two sources agree.", answer=text)


def make_loop(backend: ScriptedBackend, tools: InMemoryTools | None = None, **settings: object) -> AgentLoop:
    return AgentLoop(backend, tools or InMemoryTools(), AgentSettings(**settings),  # type: ignore[arg-type]
                     SamplingParams(temperature=0.6, repetition_penalty=1.05, logprobs=True))


async def test_search_read_answer() -> None:
    backend = ScriptedBackend([
        search("K2 first ascent"),
        read("https://mountains.example/k2", "who first climbed K2"),
        answer("Lino Lacedelli and Achille Compagnoni"),
    ], chars_per_token=1)
    seen: list[tuple[int, int]] = []

    async def on_step(step: Step, traj: Trajectory) -> None:
        seen.append((step.index, len(traj.steps)))

    traj = await make_loop(backend).run(K2, on_step=on_step)
    assert traj.stop_reason == "answered" and traj.answer == "Lino Lacedelli and Achille Compagnoni"
    assert seen == [(0, 1), (1, 2), (2, 3)]
    first, second, _ = traj.steps
    assert first.tool_calls[0].ok and "https://mountains.example/k2" in (first.tool_calls[0].result or "")
    assert second.tool_calls[0].snapshot_sha256 == "0" * 64
    assert "first climbed in 1954" in (second.tool_calls[0].result or "")
    # the model saw its own turns and the tool responses, exactly as the protocol writes them
    assert backend.requests[1].prompt == traj.prompt + first.text + p.END_OF_TURN + p.format_tool_responses(
        first.tool_calls)
    assert p.STOP_STRINGS[0] in backend.requests[0].params.stop
    # token ids and logprobs pass through; counts and timings are recorded
    assert first.token_ids == [ord(c) for c in first.text] and first.logprobs == [-0.5] * len(first.text)
    assert first.prompt_tokens == len(traj.prompt) and first.completion_tokens == len(first.text)
    assert first.tool_response_tokens == len(p.format_tool_responses(first.tool_calls))
    assert all(s.overhead_s >= 0 and s.model_s >= 0 for s in traj.steps)
    assert traj.total_tokens == len(p.rebuild_context(traj.prompt, traj.steps))
    assert traj.meta["mode"] == "search"


@pytest.mark.parametrize(("concurrency", "overlap"), [(8, True), (1, False)])
async def test_calls_of_a_turn_run_concurrently_within_the_bound(concurrency: int, overlap: bool) -> None:
    turn = p.format_turn("Three searches at once.", [
        ("search_urls", {"query": "Everest"}), ("search_urls", {"query": "K2"}),
        ("search_urls", {"query": "Danube"})])
    backend = ScriptedBackend([turn, answer("done")])
    traj = await make_loop(backend, InMemoryTools(delay_s=0.2), tool_concurrency=concurrency).run("q")
    calls = traj.steps[0].tool_calls
    starts = [c.meta["started"] for c in calls]
    ends = [c.meta["finished"] for c in calls]
    assert (max(starts) < min(ends)) is overlap
    assert all(c.ok and c.elapsed_s >= 0.2 for c in calls)
    assert ("Danube river" in (calls[2].result or "")) and traj.answer == "done"


async def test_malformed_calls_get_error_responses_and_the_loop_goes_on() -> None:
    turn = ("\nLet me try.\n</think>\n\n<tool_call>\n{\"name\": \"search_urls\", \"arguments\": {\"q\": 1}}\n"
            "</tool_call>\n" + p.format_tool_call("search_urls", {"query": "Danube"})
            + "\n<tool_call>\nnot json\n</tool_call>\n<tool_call>\n{\"name\": \"browse\"")
    backend = ScriptedBackend([turn, answer("2,850 km")])
    traj = await make_loop(backend).run("How long is the Danube?")
    calls = traj.steps[0].tool_calls
    assert [c.ok for c in calls] == [False, True, False, False]
    assert (calls[0].result or "").startswith("Error: search_urls does not take 'q'")
    assert "not valid JSON" in (calls[2].result or "") and "not closed" in (calls[3].result or "")
    assert "2,850 kilometres" in (calls[1].result or "") or "Danube" in (calls[1].result or "")
    assert "Error: search_urls does not take 'q'" in backend.requests[1].prompt
    assert traj.stop_reason == "answered" and traj.answer == "2,850 km"


async def test_a_crashing_tool_runner_becomes_an_error_response() -> None:
    backend = ScriptedBackend([search("boom please"), answer("unknown")])
    traj = await make_loop(backend, InMemoryTools(crash_word="boom")).run("q")
    call = traj.steps[0].tool_calls[0]
    assert not call.ok and "failed unexpectedly (RuntimeError: index file vanished)" in (call.result or "")
    assert traj.stop_reason == "answered"


def endless_search(i: int, prompt: str) -> str:
    """A model that never stops searching; in turn 10 it also writes a provisional answer, and
    it answers at once when the loop asks for a final answer."""
    if prompt.endswith(p.final_answer_nudge()):
        return answer("Tenzing Norgay")
    turn = search(f"everest ascent {i}")
    return turn + "\n\n\\boxed{Edmund Hillary}" if i == 10 else turn


async def test_the_loop_stops_after_64_turns_with_the_last_boxed_answer() -> None:
    # FATHOM.md: the loop ends after 64 turns; the answer is the content of the last \boxed{}.
    backend = ScriptedBackend(endless_search)
    traj = await make_loop(backend).run("Who climbed Everest first?")
    assert len(traj.steps) == p.MAX_TURNS == len(backend.requests)
    assert not any(s.forced_final for s in traj.steps)
    assert not any(p.final_answer_nudge() in r.prompt for r in backend.requests)
    assert all(len(s.tool_calls) == 1 and s.tool_calls[0].ok for s in traj.steps)
    assert traj.stop_reason == "max_turns" and traj.answer == "Edmund Hillary"
    assert traj.total_tokens == backend.count_tokens(p.rebuild_context(traj.prompt, traj.steps))


async def test_the_turn_limit_without_any_boxed_answer_gives_none() -> None:
    traj = await make_loop(ScriptedBackend(lambda i, _: search(f"q {i}")), max_turns=3).run("q")
    assert len(traj.steps) == 3 and traj.stop_reason == "max_turns" and traj.answer is None


async def test_force_final_answer_asks_for_one_more_turn_after_the_limit() -> None:
    backend = ScriptedBackend(endless_search)
    traj = await make_loop(backend, force_final_answer=True).run("Who climbed Everest first?")
    assert len(traj.steps) == p.MAX_TURNS + 1
    assert [s.forced_final for s in traj.steps].count(True) == 1 and traj.steps[-1].forced_final
    assert traj.steps[-1].meta["forced_by"] == "max_turns"
    assert backend.requests[-1].prompt.endswith(p.final_answer_nudge())
    assert all(len(s.tool_calls) == 1 and s.tool_calls[0].ok for s in traj.steps[:-1])
    assert traj.stop_reason == "max_turns" and traj.answer == "Tenzing Norgay"


def budget_script(i: int, prompt: str) -> str:
    if prompt.endswith(p.final_answer_nudge()):
        return answer("8,849 m")
    return search("Everest height", think="Let me reason at length. " * 150)


def budget_tools() -> InMemoryTools:
    big_page = (SearchHit("Everest almanac", "https://almanac.example/everest", "Everest height almanac"),
                "Everest height data. " * 600)
    return InMemoryTools(web=[*WEB, big_page])


async def test_the_context_budget_ends_the_loop_and_is_never_exceeded() -> None:
    # One token per character: 40,960 tokens are about a dozen long turns.
    backend = ScriptedBackend(budget_script, chars_per_token=1)
    traj = await make_loop(backend, budget_tools()).run("How high is Everest?")
    assert traj.stop_reason == "context_budget" and traj.answer is None
    assert not any(s.forced_final for s in traj.steps)
    assert not any(p.final_answer_nudge() in r.prompt for r in backend.requests)
    # No reserve for a final answer: the last turn may use all that is left, and is cut there.
    last = traj.steps[-1]
    assert last.finish_reason == "length" and not last.tool_calls and last.answer is None
    assert traj.total_tokens > p.MAX_CONTEXT_TOKENS - p.MIN_TURN_TOKENS
    for req in backend.requests:
        assert req.prompt_tokens + req.params.max_new_tokens <= p.MAX_CONTEXT_TOKENS
    full = p.rebuild_context(traj.prompt, traj.steps)
    assert traj.total_tokens == len(full) <= p.MAX_CONTEXT_TOKENS
    assert 5 < len(traj.steps) < p.MAX_TURNS


async def test_calls_that_no_longer_fit_end_the_loop_unrun() -> None:
    turn = search("Everest height")
    prompt_tokens = len(make_loop(ScriptedBackend([])).new_trajectory("q").prompt)
    end = len(p.END_OF_TURN)
    # After this turn, 10 tokens would be left for its tool responses: too few to deliver any.
    budget = prompt_tokens + len(turn) + end + p.end_reserve(end) + p.MIN_TURN_TOKENS + 10
    backend = ScriptedBackend([turn], chars_per_token=1)
    traj = await make_loop(backend, max_context_tokens=budget).run("q")
    (only,) = traj.steps
    assert only.tool_calls[0].error == "not run: the context budget is used up"
    assert only.tool_calls[0].result is None and traj.stop_reason == "context_budget"
    assert traj.answer is None and len(backend.requests) == 1
    assert traj.total_tokens == prompt_tokens + len(turn) + end <= budget


async def test_force_final_answer_on_the_context_budget() -> None:
    backend = ScriptedBackend(budget_script, chars_per_token=1)
    traj = await make_loop(backend, budget_tools(), force_final_answer=True).run("How high is Everest?")
    assert traj.stop_reason == "context_budget" and traj.steps[-1].forced_final
    assert traj.answer == "8,849 m"
    assert traj.steps[-2].tool_calls[0].error == "not run: the context budget is used up"
    for req in backend.requests:
        assert req.prompt_tokens + req.params.max_new_tokens <= p.MAX_CONTEXT_TOKENS
    full = p.rebuild_context(traj.prompt, traj.steps)
    assert traj.total_tokens == len(full) <= p.MAX_CONTEXT_TOKENS
    assert 5 < len(traj.steps) < p.MAX_TURNS


async def test_huge_tool_responses_are_cut_to_fit() -> None:
    huge = (SearchHit("Everest almanac", "https://almanac.example/everest", "Everest almanac"),
            "Everest height data. " * 5_000)
    turns = [read("https://almanac.example/everest", "Everest height data"), answer("8,849")]
    backend = ScriptedBackend(turns, chars_per_token=1)
    traj = await make_loop(backend, InMemoryTools(web=[huge])).run("How high is Everest?")
    call = traj.steps[0].tool_calls[0]
    assert call.meta["truncated_from_chars"] > len(call.result or "")
    assert (call.result or "").endswith(p.TRUNCATION_NOTE)
    assert traj.total_tokens <= p.MAX_CONTEXT_TOKENS and traj.answer == "8,849"


async def test_a_turn_without_tool_calls_ends_the_loop() -> None:
    backend = ScriptedBackend(["\nI cannot find this.\n</think>\n\nI do not know."])
    traj = await make_loop(backend).run("q")
    assert traj.stop_reason == "no_tool_call" and traj.answer is None and len(traj.steps) == 1
    assert traj.steps[0].meta["stray_text"] == "I do not know."


@pytest.mark.parametrize("force", [False, True])
async def test_tool_call_limit(force: bool) -> None:
    queries = ("Everest", "K2", "Danube")
    turn = p.format_turn("Many searches.", [("search_urls", {"query": q}) for q in queries])

    def script(i: int, prompt: str) -> str:
        return answer("x") if prompt.endswith(p.final_answer_nudge()) else turn

    traj = await make_loop(ScriptedBackend(script), max_tool_calls=2, force_final_answer=force).run("q")
    calls = traj.steps[0].tool_calls
    assert [c.ok for c in calls] == [True, True, False]
    assert "limit of 2 tool calls" in (calls[2].result or "")
    assert traj.stop_reason == "max_tool_calls"
    if force:
        assert len(traj.steps) == 2 and traj.steps[-1].forced_final and traj.answer == "x"
    else:
        assert len(traj.steps) == 1 and traj.answer is None


async def test_model_failure_ends_with_error_and_keeps_the_steps() -> None:
    traj = await make_loop(ScriptedBackend([search("K2")])).run(K2)  # the script runs out
    assert traj.stop_reason == "error" and "script exhausted" in traj.meta["error"]
    assert len(traj.steps) == 1 and traj.steps[0].tool_calls[0].ok


async def test_cancellation_keeps_complete_steps_and_resume_continues() -> None:
    backend = ScriptedBackend([search("K2 first ascent"), answer("never")], delay_s=0.05)
    loop = make_loop(backend)
    traj = loop.new_trajectory(K2)
    first_step = asyncio.Event()

    async def on_step(step: Step, t: Trajectory) -> None:
        first_step.set()

    task = asyncio.create_task(loop.run(K2, on_step=on_step, resume=traj))
    await first_step.wait()
    await asyncio.sleep(0.01)  # the second turn is now being generated
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert traj.stop_reason == "cancelled" and len(traj.steps) == 1

    resumed_backend = ScriptedBackend([read("https://mountains.example/k2", "first ascent"),
                                       answer("Lacedelli and Compagnoni")])
    resumed = await make_loop(resumed_backend).run(K2, resume=traj)
    assert resumed is traj and traj.stop_reason == "answered"
    assert traj.answer == "Lacedelli and Compagnoni" and [s.index for s in traj.steps] == [0, 1, 2]
    # the resumed model sees exactly the context the cancelled one was given
    assert resumed_backend.requests[0].prompt == backend.requests[1].prompt
    # a finished trajectory is returned unchanged
    assert await make_loop(ScriptedBackend([])).run(K2, resume=traj) is traj
    with pytest.raises(ValueError, match="different question"):
        await make_loop(ScriptedBackend([])).run("another question", resume=traj)


async def test_resume_runs_calls_that_never_got_a_result() -> None:
    backend = ScriptedBackend([search("Danube"), answer("2,850 km")])
    loop = make_loop(backend)
    traj = await loop.run("How long is the Danube?")
    # simulate a process that died mid tool round: step recorded, result not yet
    interrupted = Trajectory(question=traj.question, prompt=traj.prompt, steps=[traj.steps[0]],
                             stop_reason="cancelled")
    call = interrupted.steps[0].tool_calls[0]
    expected = call.result
    call.result, call.ok = None, False
    resumed = await make_loop(ScriptedBackend([answer("2,850 km")])).run(traj.question, resume=interrupted)
    assert call.ok and call.result == expected and resumed.answer == "2,850 km"


def thinks_forever(i: int, prompt: str) -> str:
    if prompt.endswith(p.final_answer_nudge()):
        return answer("unsure")
    return "\nThinking without end. " * 5_000  # never closes </think>, never calls a tool


async def test_a_turn_cut_by_the_budget_ends_the_loop() -> None:
    backend = ScriptedBackend(thinks_forever, chars_per_token=1)
    traj = await make_loop(backend, max_new_tokens_per_turn=p.MAX_CONTEXT_TOKENS).run("q")
    (only,) = traj.steps
    assert only.finish_reason == "length" and not only.forced_final
    assert traj.stop_reason == "context_budget" and traj.answer is None
    # Nothing is held back for a final answer nobody will ask for: the trace may fill the budget.
    assert p.MAX_CONTEXT_TOKENS - p.FINAL_ANSWER_TOKENS < traj.total_tokens <= p.MAX_CONTEXT_TOKENS


async def test_a_turn_cut_by_the_budget_with_force_final_answer() -> None:
    backend = ScriptedBackend(thinks_forever, chars_per_token=1)
    traj = await make_loop(backend, max_new_tokens_per_turn=p.MAX_CONTEXT_TOKENS,
                           force_final_answer=True).run("q")
    first, final = traj.steps
    assert first.finish_reason == "length" and final.forced_final
    assert traj.stop_reason == "context_budget" and traj.answer == "unsure"
    assert traj.total_tokens <= p.MAX_CONTEXT_TOKENS


async def test_a_hallucinated_tool_response_is_cut_off() -> None:
    turn = search("K2") + "\n<tool_response>\nK2 was first climbed by me.\n</tool_response>\n\\boxed{me}"
    backend = ScriptedBackend([turn, answer("Lacedelli and Compagnoni")])
    traj = await make_loop(backend).run(K2)
    first = traj.steps[0]
    assert first.text == search("K2") + "\n" and first.answer is None
    assert "first climbed by me" not in backend.requests[1].prompt
    assert traj.answer == "Lacedelli and Compagnoni"
