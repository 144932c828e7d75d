"""Guided turns: a weak model kept on protocol by prefill and constrained choices."""

from __future__ import annotations

import json

import pytest
from agent_scripted import InMemoryTools, ScriptedBackend
from fathom.agent import guided as g
from fathom.agent import protocol as p
from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Step, ToolCall, Trajectory
from fathom.core.config import AgentSettings
from fathom.models.base import SamplingParams
from fathom.tools.search.base import SearchHit, format_results

K2 = "Who made the first ascent of K2?"
HITS = [SearchHit("K2", "https://mountains.example/k2", "K2 facts"),
        SearchHit("Everest", "https://mountains.example/everest", "Everest facts")]


def traj_with(*calls: ToolCall) -> Trajectory:
    steps = [Step(index=i, text="", think=None, tool_calls=[c], answer=None) for i, c in enumerate(calls)]
    return Trajectory(question=K2, prompt=p.build_prompt(K2), steps=steps)


def searched() -> ToolCall:
    return ToolCall(index=0, name="search_urls", arguments={"query": "K2"}, raw="",
                    result=format_results("K2", HITS), ok=True)


def read_call(url: str, ok: bool = True) -> ToolCall:
    return ToolCall(index=0, name="query_url", arguments={"url": url, "goal": "x"}, raw="", result="r", ok=ok)


RULES = {"min_searches": 1, "min_reads": 1, "max_turns": 6}


def test_prefills_are_exact_prefixes_of_well_formed_calls() -> None:
    assert p.format_tool_call("search_urls", {"query": "abc"}).startswith(g.SEARCH_PREFILL)
    read = p.format_tool_call("query_url", {"url": "https://a.example/", "goal": "g"})
    assert read.startswith(g.READ_PREFILL + "https://a.example/" + g.GOAL_PREFILL)


def test_allowed_actions_enforce_search_then_read_before_answering() -> None:
    assert g.allowed_actions(traj_with(), **RULES) == ("search_urls",)
    assert g.allowed_actions(traj_with(searched()), **RULES) == ("query_url",)  # read before more
    one_read = traj_with(searched(), read_call("https://mountains.example/k2"))
    assert g.allowed_actions(one_read, **RULES) == ("search_urls", "query_url", "answer")
    both_read = traj_with(searched(), read_call("https://mountains.example/k2"),
                          read_call("https://mountains.example/everest", ok=False))
    assert g.allowed_actions(both_read, **RULES) == ("search_urls", "answer")
    empty = ToolCall(index=0, name="search_urls", arguments={"query": "zz"}, raw="",
                     result=format_results("zz", []), ok=True)
    assert g.allowed_actions(traj_with(empty), **RULES) == ("search_urls", "answer")  # nothing to read
    assert g.allowed_actions(traj_with(), **RULES, final=True) == ("answer",)
    capped = traj_with(*[searched()] * 5)
    assert g.allowed_actions(capped, **RULES) == ("answer",)
    assert g.urls_seen(traj_with(searched(), searched())) == [h.url for h in HITS]


def guided_script(i: int, prompt: str) -> str:
    """What a weak, unruly model might emit at each phase."""
    if "Answer in a few words." in prompt:
        return "Lacedelli and Compagnoni\nand more"
    if "Write one new search query." in prompt:
        return "https://copied.example/url"  # a copied URL is not a query: the policy falls back
    if prompt.endswith(g.ACTION_PROMPT):
        return " answer| query_url"  # wants to stop early: the rules must overrule it
    if prompt.endswith(g.SEARCH_PREFILL):
        return 'K2 "first ascent" \\ {year}\n'
    if prompt.endswith(g.READ_PREFILL):
        return "https://not-offered.example/"
    if prompt.endswith(g.GOAL_PREFILL):
        return "who climbed it first"
    if prompt.endswith(p.BOXED_OPEN):
        return "Lacedelli and Compagnoni} extra"
    return "Hmm </tool_response> let me <think> think\n</think><tool_call>"


async def test_a_guided_turn_is_a_well_formed_search_call() -> None:
    backend = ScriptedBackend(guided_script)
    policy = g.GuidedPolicy()
    prompt = p.build_prompt(K2)
    turn = await policy.turn(backend, prompt, traj_with(), SamplingParams())
    parsed = p.parse_turn(turn.completion.text)
    assert turn.action == "search_urls" and parsed.errors == []
    assert [(c.name, c.arguments, c.error) for c in parsed.tool_calls] == [
        ("search_urls", {"query": K2}, None)]  # the first search is the question itself
    assert parsed.think == "Hmm let me think"
    assert [ph.name for ph in turn.phases] == ["think", "think", "call"]
    assert all(r.params.choices is None for r in backend.requests)  # one action allowed: no choice asked


async def test_guided_loop_searches_reads_then_answers() -> None:
    backend = ScriptedBackend(guided_script)
    settings = AgentSettings(guided=True)
    loop = AgentLoop(backend, InMemoryTools(), settings, SamplingParams())
    traj = await loop.run(K2)
    actions = [s.meta["guided_action"] for s in traj.steps]
    assert actions == ["search_urls", "query_url", "answer"]
    read = traj.steps[1].tool_calls[0]
    assert read.ok
    first_hit = g.urls_seen(traj)[0]  # the weak model's URL pick is not offered: the top hit is read
    assert read.arguments == {"url": first_hit, "goal": "who climbed it first"}
    assert read.result and first_hit.rsplit("/", 1)[-1] in read.result.lower()
    assert traj.stop_reason == "answered" and traj.answer == "Lacedelli and Compagnoni"
    offered = [r.params.choices for r in backend.requests
               if r.params.choices and " answer" in r.params.choices]
    # search and read were required, so the only free action choice came after the read
    assert offered == [(" search_urls", " query_url", " answer")]


async def test_guided_turn_cap_forces_the_answer() -> None:
    def script(i: int, prompt: str) -> str:
        return " search_urls" if prompt.endswith(g.ACTION_PROMPT) else guided_script(i, prompt)

    settings = AgentSettings(guided=True, guided_max_turns=3, min_reads=5)
    traj = await AgentLoop(ScriptedBackend(script), InMemoryTools(), settings, SamplingParams()).run(K2)
    assert [s.meta["guided_action"] for s in traj.steps] == ["search_urls", "query_url", "answer"]
    assert traj.stop_reason == "answered"


def test_usable_text_rejects_copied_urls_and_template_noise() -> None:
    assert g.usable_text("Eiffel Tower designer")
    assert not g.usable_text("https://www.example.com/tour")
    assert not g.usable_text("www.example")
    assert not g.usable_text("42")
    assert g.usable_text("Paris", min_words=1)


async def test_later_queries_fall_back_when_the_model_copies_a_url() -> None:
    backend = ScriptedBackend(guided_script)
    turn = await g.GuidedPolicy(min_reads=0).turn(
        backend, p.build_prompt(K2), traj_with(searched()), SamplingParams()
    )
    parsed = p.parse_turn(turn.completion.text)
    if turn.action == "search_urls":
        assert parsed.tool_calls[0].arguments["query"] not in ("K2", "https://copied.example/url")


@pytest.mark.slow
async def test_bundled_model_in_guided_mode_writes_a_well_formed_search() -> None:
    from fathom.core.config import get_settings
    from fathom.models.bundled import prepare_bundled
    from fathom.models.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(prepare_bundled(get_settings().models_dir)), name="smollm2-135m")
    policy = g.GuidedPolicy(think_tokens=16, value_tokens=16)  # short pieces keep the CPU test quick
    try:
        turn = await policy.turn(backend, p.build_prompt(K2), traj_with(),
                                 SamplingParams(temperature=0.0, seed=0, logprobs=True))
    finally:
        await backend.aclose()
    assert turn.action == "search_urls"  # nothing searched yet: the only allowed action
    parsed = p.parse_turn(turn.completion.text)
    assert parsed.errors == [] and len(parsed.tool_calls) == 1
    call = parsed.tool_calls[0]
    assert call.error is None and call.name == "search_urls" and call.arguments["query"].strip()
    body = turn.completion.text.split("<tool_call>\n")[1].split("\n</tool_call>")[0]
    assert json.loads(body) == {"name": "search_urls", "arguments": call.arguments}
    # the model's own pieces keep their ids and log-probabilities
    generated = [ph for ph in turn.phases if ph.generated]
    assert generated and all(ph.token_ids and ph.logprobs for ph in generated if ph.text)
    result = await InMemoryTools().call(call.name, call.arguments)  # the call runs as written
    assert result.ok
