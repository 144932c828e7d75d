"""Guided turns: a weak model kept on protocol, and on a research plan, by prefill and constrained
choices. The rules are pure functions of the trajectory; the loop tests run them through the real
``AgentLoop`` over a small in-memory web with two-hop questions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from agent_scripted import InMemoryTools, ScriptedBackend
from fathom.agent import guided as g
from fathom.agent import protocol as p
from fathom.agent import support as sup
from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Step, ToolCall, Trajectory
from fathom.core.config import AgentSettings
from fathom.models.base import SamplingParams
from fathom.tools.extract import Evidence, format_query_url_result
from fathom.tools.search.base import SearchHit, format_results

K2 = "Who made the first ascent of K2?"
HITS = [SearchHit("K2", "https://mountains.example/k2", "K2 facts"),
        SearchHit("Everest", "https://mountains.example/everest", "Everest facts")]

# A two-hop question: the first page names the river, only the river's page names the sea.
SEA = "Which sea does the river that flows through Vienna flow into?"
TWO_HOP_WEB = [
    (SearchHit("Vienna", "https://cities.example/vienna", "Vienna is the capital of Austria."),
     "Vienna is the capital of Austria. The Danube river flows through Vienna. "
     "Vienna has a population of 1,900,000"),
    (SearchHit("Graz", "https://cities.example/graz", "Graz is the second city of Austria."),
     "Graz is the second city of Austria. The Mur river flows through Graz, which lies in Styria"),
    (SearchHit("Salzburg", "https://cities.example/salzburg", "Salzburg lies on the Salzach river."),
     "Salzburg lies on the Salzach river. Salzburg is a city in Austria"),
    (SearchHit("Danube", "https://rivers.example/danube", "The Danube is Europe's second-longest river."),
     "The Danube is Europe's second-longest river. It is 2,850 kilometres long and its mouth is on the "
     "Black Sea"),
    (SearchHit("Rhine", "https://rivers.example/rhine", "The Rhine flows into the North Sea."),
     "The Rhine is 1,230 kilometres long. The Rhine flows into the North Sea"),
]


def two_hop_tools() -> InMemoryTools:
    return InMemoryTools(web=list(TWO_HOP_WEB))


def traj_with(*calls: ToolCall, question: str = K2) -> Trajectory:
    steps = [Step(index=i, text="", think=None, tool_calls=[c], answer=None) for i, c in enumerate(calls)]
    return Trajectory(question=question, prompt=p.build_prompt(question), steps=steps)


def searched(query: str = "K2", hits: list[SearchHit] = HITS) -> ToolCall:
    return ToolCall(index=0, name="search_urls", arguments={"query": query}, raw="",
                    result=format_results(query, hits), ok=True)


def read_call(url: str, quotes: list[str] | None = None, ok: bool = True) -> ToolCall:
    evidence = Evidence(rationale="r", evidence=quotes or [], summary="s", dropped_quotes=0, method="extract",
                        attempts=1, evidence_source="model" if quotes else "none")
    return ToolCall(index=0, name="query_url", arguments={"url": url, "goal": "g"}, raw="",
                    result=format_query_url_result(url, "g", evidence), ok=ok)


def first_choice(i: int, prompt: str) -> str:
    """A model that thinks one short sentence and always takes the first choice offered."""
    return "I should check the pages.\n</think>"


def guided_loop(script: Callable[[int, str], str] | None = None, tools: InMemoryTools | None = None, *,
                chars_per_token: int = 4, **settings: object) -> tuple[AgentLoop, ScriptedBackend]:
    backend = ScriptedBackend(script or first_choice, chars_per_token=chars_per_token)
    loop = AgentLoop(backend, tools or two_hop_tools(), AgentSettings(guided=True, **settings),  # type: ignore[arg-type]
                     SamplingParams(logprobs=True))
    return loop, backend



def actions(traj: Trajectory) -> list[str]:
    return [s.meta["guided_action"] for s in traj.steps]


# --- the plan ------------------------------------------------------------------------------------


def test_prefills_are_exact_prefixes_of_well_formed_calls() -> None:
    assert p.format_tool_call("search_urls", {"query": "abc"}).startswith(g.SEARCH_PREFILL)
    read = p.format_tool_call("query_url", {"url": "https://a.example/", "goal": "g"})
    assert read.startswith(g.READ_PREFILL + "https://a.example/" + g.GOAL_PREFILL)


def test_first_hop_quotes_do_not_support_an_answer_and_the_second_hop_does() -> None:
    vienna = read_call("https://cities.example/vienna", ["The Danube river flows through Vienna."])
    first = traj_with(searched(SEA, [TWO_HOP_WEB[0][0]]), vienna, question=SEA)
    # The first page names the river but not the sea: nothing is supported yet, so follow up.
    assert all(not c.supported(0.75) for c in sup.answer_candidates(SEA, sup.pages_read(first)))
    policy = g.GuidedPolicy(reads_per_search=1)
    assert policy.actions(first) == ("search_urls",)
    (entity, query), *_ = policy.follow_ups(first)
    assert entity == "Danube" and query == "Danube sea"  # the entity, then what is still unresolved

    danube = read_call("https://rivers.example/danube",
                       ["It is 2,850 kilometres long and its mouth is on the Black Sea"])
    second = traj_with(searched(SEA, [TWO_HOP_WEB[0][0]]), vienna, searched(query, [TWO_HOP_WEB[3][0]]),
                       danube, question=SEA)
    best, *rest = sup.answer_candidates(SEA, sup.pages_read(second))
    assert best.text == "Black Sea" and best.supported(0.75) and best.url == "https://rivers.example/danube"
    # The entity the chain went through is never the answer.
    assert "Danube" not in [c.text for c in rest]
    assert policy.actions(second) == ("answer",)


def test_plan_reads_several_results_then_follows_up_within_the_turn_budget() -> None:
    hits = [h for h, _ in TWO_HOP_WEB]
    policy = g.GuidedPolicy(reads_per_search=2, max_turns=8)
    assert policy.actions(traj_with(question=SEA)) == ("search_urls",)
    after_search = traj_with(searched(SEA, hits), question=SEA)
    assert policy.actions(after_search) == ("query_url",)
    one = traj_with(searched(SEA, hits), read_call(hits[0].url, ["The Danube river flows through Vienna."]),
                    question=SEA)
    assert policy.actions(one) == ("query_url",)  # a second result before any follow-up
    two = traj_with(*one.tool_calls, read_call(hits[1].url, ["Salzburg lies on the Salzach river."]),
                    question=SEA)
    assert policy.actions(two) == ("search_urls", "query_url")  # the model may follow up or read on
    assert policy.actions(two, final=True) == ("answer",)
    assert g.GuidedPolicy(max_turns=3).actions(two) == ("answer",)  # the budget is spent
    assert policy.plan(two, room=100).actions == ("answer",)  # the context is nearly full
    failed = traj_with(searched(SEA, hits[:1]), read_call(hits[0].url, ok=False), question=SEA)
    assert policy.actions(failed) == ("answer",)  # nothing left to read, nothing to follow up


# --- whole guided trajectories through the loop -------------------------------------------------


async def test_guided_loop_follows_up_until_an_answer_is_supported_by_a_quote() -> None:
    loop, _ = guided_loop()
    traj = await loop.run(SEA)
    assert actions(traj) == ["search_urls", "query_url", "query_url", "search_urls", "query_url", "answer"]
    queries = [c.arguments["query"] for c in traj.tool_calls if c.name == "search_urls"]
    assert queries == [SEA, "Danube sea"]  # the follow-up is built from what the first page said
    assert all(c.arguments["top_k"] == 5 for c in traj.tool_calls if c.name == "search_urls")
    read = [c.arguments["url"] for c in traj.tool_calls if c.name == "query_url"]
    assert read == ["https://cities.example/vienna", "https://cities.example/graz",
                    "https://rivers.example/danube"]
    assert traj.stop_reason == "answered" and traj.answer == "Black Sea"
    quotes = [q for page in sup.pages_read(traj) for q in page.quotes]
    assert any(traj.answer in q for q in quotes)  # grounded in a verified quote
    assert all(p.parse_turn(s.text).errors == [] for s in traj.steps)


async def test_the_model_chooses_the_answer_among_the_supporting_sentences_names() -> None:
    def picks_the_number(i: int, prompt: str) -> str:
        return " 2,850|" + first_choice(i, prompt) if prompt.endswith("Answer:") else first_choice(i, prompt)

    loop, backend = guided_loop(picks_the_number)
    traj = await loop.run(SEA)
    offered = [r.params.choices for r in backend.requests if r.prompt.endswith("Answer:")]
    assert offered == [(" Black Sea", " 2,850")]  # only spans of the supporting quote
    assert traj.answer == "2,850"


async def test_turn_budget_forces_the_best_grounded_answer() -> None:
    loop, _ = guided_loop(guided_max_turns=3, guided_reads_per_search=2)
    traj = await loop.run(SEA)
    assert actions(traj) == ["search_urls", "query_url", "answer"]
    # Only the first hop was read: its best candidate is boxed, and it is in a quote.
    assert traj.answer is not None and sup.junk_reason(traj.answer, SEA) is None
    assert any(traj.answer in q for page in sup.pages_read(traj) for q in page.quotes)


async def test_with_nothing_read_no_answer_is_boxed() -> None:
    loop, _ = guided_loop(guided_max_turns=1)
    traj = await loop.run(SEA)
    assert actions(traj) == ["answer"] and traj.answer is None and traj.stop_reason == "no_tool_call"
    assert g.NO_ANSWER in traj.steps[0].text


async def test_a_guided_turn_is_a_well_formed_search_call() -> None:
    def unruly(i: int, prompt: str) -> str:
        return "Hmm </tool_response> let me <think> think\n</think><tool_call>"

    backend = ScriptedBackend(unruly)
    turn = await g.GuidedPolicy().turn(backend, p.build_prompt(K2), traj_with(), SamplingParams())
    parsed = p.parse_turn(turn.completion.text)
    assert turn.action == "search_urls" and parsed.errors == []
    assert [(c.name, c.arguments, c.error) for c in parsed.tool_calls] == [
        ("search_urls", {"query": K2, "top_k": 5}, None)]  # the first search is the question itself
    assert parsed.think == "Hmm let me think"
    assert all(r.params.choices is None for r in backend.requests)  # one action allowed: no choice asked


async def test_step_tokens_are_only_those_generated_inside_the_turn() -> None:
    # One token per character: ids are the characters, so they can be checked against the text.
    loop, _ = guided_loop(chars_per_token=1)
    traj = await loop.run(SEA)
    for step in traj.steps:
        phases = step.meta["guided_phases"]
        in_turn = "".join(ph["text"] for ph in phases if ph["generated"] and not ph["side"])
        assert step.token_ids == ([ord(c) for c in in_turn] or None)
        assert step.logprobs is None or len(step.logprobs) == len(step.token_ids or [])
        assert all(ph["text"] in step.text for ph in phases if ph["generated"] and not ph["side"])
    side = [ph for s in traj.steps for ph in s.meta["guided_phases"] if ph["side"] and ph["generated"]]
    assert side and all(ph["token_ids"] for ph in side)  # side choices keep their ids in the record


@pytest.mark.slow
async def test_bundled_model_in_guided_mode_writes_a_well_formed_search() -> None:
    from fathom.core.config import get_settings
    from fathom.models.bundled import prepare_bundled
    from fathom.models.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(prepare_bundled(get_settings().models_dir)), name="smollm2-135m")
    policy = g.GuidedPolicy(think_tokens=16)  # short pieces keep the CPU test quick
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


# A HotpotQA bridge question whose two paragraphs are in the shipped sample corpus: the first names
# the film shot in Leland, only the film's own page names its director.
LELAND = "Who directed the film that was shot in or around Leland, North Carolina in 1986?"


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_bundled_model_runs_the_multi_turn_loop_in_the_local_runtime(tmp_path: Path) -> None:
    from fathom.core.config import ExtractSettings, Settings
    from fathom.research.runtime import LocalRuntime

    settings = Settings(data_dir=tmp_path, extract=ExtractSettings(cache=False),
                        agent=AgentSettings(guided_max_turns=5, guided_reads_per_search=1))
    async with LocalRuntime(settings) as rt:
        loop = rt.service.agent
        loop.sampling = replace(loop.sampling, seed=0)  # repeatable at the policy's own temperature
        traj = await loop.run(LELAND)
    assert traj.meta["guided"] and all(p.parse_turn(s.text).errors == [] for s in traj.steps)
    searches = [c for c in traj.tool_calls if c.name == "search_urls"]
    reads = [c for c in traj.tool_calls if c.name == "query_url"]
    assert len(searches) >= 2 and len(reads) >= 2 and all(c.ok for c in searches + reads)
    # The follow-up query starts with a name that a page read before it quoted.
    second = next(s.index for s in traj.steps if searches[1] in s.tool_calls)
    pages_before = sup.pages_read(replace(traj, steps=traj.steps[:second]))
    names = [span.text for page in pages_before for q in page.quotes for span in sup.quote_spans(q)]
    assert any(str(searches[1].arguments["query"]).startswith(name) for name in names)
    assert traj.stop_reason in ("answered", "no_tool_call") and len(traj.steps) <= 5
    if traj.answer is not None:  # grounded in a verified quote of a page read, and not junk
        assert sup.junk_reason(traj.answer, LELAND) is None
        assert any(traj.answer in q for page in sup.pages_read(traj) for q in page.quotes)
