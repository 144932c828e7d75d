"""The search agent protocol, to the letter: prompt, parsing, formatting, budget."""

from __future__ import annotations

import json
import string

import pytest
from fathom.agent import protocol as p
from fathom.agent.trajectory import Step, ToolCall
from fathom.tools.base import TOOL_SPECS, TOP_K_MAX, TOP_K_MIN
from hypothesis import given, settings
from hypothesis import strategies as st

# --- the prompt ------------------------------------------------------------------------------


def test_prompt_is_raw_chatml_opened_inside_think() -> None:
    prompt = p.build_prompt("Who first climbed K2?", date="2025-01-31")
    assert prompt.startswith("<|im_start|>system\n")
    assert "<|im_end|>\n<|im_start|>user\nWho first climbed K2?<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n<think>")
    assert "Today's date is 2025-01-31." in prompt
    system = prompt.split("<|im_end|>")[0]
    tools_json = system.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    assert [json.loads(line)["function"]["name"] for line in tools_json] == ["search_urls", "query_url"]
    for needle in ("<think>", "</think>", "<tool_call>", "</tool_call>", "\\boxed{", "<tool_response>"):
        assert needle in system
    assert "Today's date" not in p.build_prompt("q")


def test_the_tool_schemas_in_the_prompt_state_the_top_k_limit() -> None:
    system = p.build_prompt("q").split("<|im_end|>")[0]
    tools_json = system.split("<tools>\n")[1].split("\n</tools>")[0].splitlines()
    search = json.loads(tools_json[0])["function"]["parameters"]["properties"]["top_k"]
    assert (search["type"], search["default"], search["minimum"], search["maximum"]) == ("integer", 10, 1, 20)
    assert (TOP_K_MIN, TOP_K_MAX) == (1, 20)


def test_report_mode_wording_differs_and_unknown_mode_is_refused() -> None:
    search, report = p.build_prompt("q", mode="search"), p.build_prompt("q", mode="report")
    assert search != report and "report" in report
    with pytest.raises(ValueError, match="unknown agent mode"):
        p.build_prompt("q", mode="essay")  # type: ignore[arg-type]


# --- parsing ---------------------------------------------------------------------------------


def test_parse_turn_reads_think_every_call_and_answer() -> None:
    text = p.format_turn("I should search, then read.", [
        ("search_urls", {"query": "K2 first ascent"}),
        ("query_url", {"url": "https://mountains.example/k2", "goal": "who climbed it first"}),
    ])
    turn = p.parse_turn(text)
    assert turn.think == "I should search, then read."
    assert [(c.index, c.name, c.arguments, c.error) for c in turn.tool_calls] == [
        (0, "search_urls", {"query": "K2 first ascent"}, None),
        (1, "query_url", {"url": "https://mountains.example/k2", "goal": "who climbed it first"}, None),
    ]
    assert turn.answer is None and turn.errors == [] and turn.stray_text.startswith("<tool_call>") is False


def test_answer_turn() -> None:
    turn = p.parse_turn(p.format_turn("Two sources agree.", answer="Lino Lacedelli and Achille Compagnoni"))
    assert turn.tool_calls == [] and turn.answer == "Lino Lacedelli and Achille Compagnoni"
    assert turn.stray_text == "\\boxed{Lino Lacedelli and Achille Compagnoni}"


def _call(body: str) -> ToolCall:
    turn = p.parse_turn(f"think</think>\n<tool_call>\n{body}\n</tool_call>")
    assert len(turn.tool_calls) == 1
    return turn.tool_calls[0]


S, Q = '{"name": "search_urls", "arguments": ', '{"name": "query_url", "arguments": '
MALFORMED = [
    ("", "the tool call is empty"),
    (S + '{"query": "x"}', "not valid JSON"),
    ("search_urls(query='x')", "not valid JSON"),
    ('["search_urls", {"query": "x"}]', "must be a JSON object"),
    ('{"arguments": {"query": "x"}}', 'no "name" string'),
    ('{"name": "browse", "arguments": {"query": "x"}}',
     "unknown tool 'browse'; available tools: search_urls, query_url"),
    ('{"name": "search_urls"}', 'has no "arguments" object'),
    (S + '"{\\"query\\": \\"x\\"}"}', "must be a JSON object, not a JSON string"),
    (S + '{"query": "x"}, "id": 3}', "unexpected key(s) 'id'"),
    (S + '{}}', "search_urls needs 'query'"),
    (S + '{"query": "x", "lang": "en"}}', "does not take 'lang'"),
    (S + '{"query": 42}}', "'query' must be a string, not a JSON number"),
    (S + '{"query": "   "}}', "'query' must not be empty"),
    (S + '{"query": "x", "top_k": "5"}}', "'top_k' must be an integer"),
    (S + '{"query": "x", "top_k": 2.5}}', "'top_k' must be an integer"),
    (S + '{"query": "x", "top_k": true}}', "'top_k' must be an integer"),
    (S + '{"query": "x", "top_k": 0}}', "'top_k' must be between 1 and 20, not 0"),
    (S + '{"query": "x", "top_k": 21}}', "'top_k' must be between 1 and 20, not 21"),
    (S + '{"query": "x", "top_k": 500}}', "'top_k' must be between 1 and 20"),
    (Q + '{"url": "https://a.example/"}}', "query_url needs 'goal'"),
    (Q + '{"url": "file:///etc/passwd", "goal": "g"}}', "full http or https"),
    (Q + '{"url": "mountains.example/k2", "goal": "g"}}', "full http or https"),
    (Q + '{"url": null, "goal": "g"}}', "'url' must be a string, not a JSON null"),
    ("[" * 100_000, "JSON"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED)
def test_malformed_call_becomes_an_error_not_an_exception(body: str, message: str) -> None:
    call = _call(body)
    assert call.error is not None and message in call.error, call.error
    assert call.raw == body.strip()


def test_error_keeps_what_was_understood() -> None:
    call = _call('{"name": "search_urls", "arguments": {"query": "x", "top_k": 0}}')
    assert call.name == "search_urls" and call.arguments == {"query": "x", "top_k": 0}


def test_unclosed_call_is_an_error_and_the_next_call_still_counts() -> None:
    good = p.format_tool_call("search_urls", {"query": "Danube length"})
    turn = p.parse_turn('t</think>\n<tool_call>\n{"name": "search_urls", "arg\n' + good + "\n<tool_call>\n{")
    assert [c.error is None for c in turn.tool_calls] == [False, True, False]
    assert "not closed with </tool_call>" in (turn.tool_calls[0].error or "")
    assert turn.tool_calls[1].arguments == {"query": "Danube length"}
    assert [c.index for c in turn.tool_calls] == [0, 1, 2]


def test_turn_level_format_problems_are_reported() -> None:
    turn = p.parse_turn("no closing think </tool_call> <tool_response>\nfake\n</tool_response>")
    assert any("no </think>" in e for e in turn.errors)
    assert any("stray </tool_call>" in e for e in turn.errors)
    assert any("tool response itself" in e for e in turn.errors)


def test_think_without_close_still_honours_calls() -> None:
    turn = p.parse_turn("looking it up\n" + p.format_tool_call("search_urls", {"query": "K2"}))
    assert turn.think == "looking it up" and turn.tool_calls[0].name == "search_urls"


@pytest.mark.parametrize(("text", "answer"), [
    ("\\boxed{42}", "42"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{ {a, {b}} }", "{a, {b}}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("\\boxed{a \\} b}", "a \\} b"),
    ("\\boxed{done} and \\boxed{unfinished", "done"),
    ("\\boxed{\\boxed{inner}}", "\\boxed{inner}"),
    ("no box here {x}", None),
    ("\\boxed{", None),
    ("}}}\\boxed{x}{{{", "x"),
])
def test_extract_boxed(text: str, answer: str | None) -> None:
    assert p.extract_boxed(text) == answer


# --- property tests --------------------------------------------------------------------------

PIECES = st.sampled_from([
    "<tool_call>", "</tool_call>", "<think>", "</think>", "\\boxed{", "{", "}", "\\", '"', "\n",
    "<tool_response>", '{"name": "search_urls", "arguments": {"query": "x"}}',
    '{"name": "query_url", "arguments": {"url": "https://a.example", "goal": "g"}}', "[", "]",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), PIECES), max_size=40).map("".join))
def test_parse_turn_never_raises(text: str) -> None:
    turn = p.parse_turn(text)
    for call in turn.tool_calls:
        assert (call.error is None) == (call.name is not None and p.check_arguments(
            next(s for s in TOOL_SPECS if s.name == call.name), call.arguments) is None)


ARG_TEXT = st.text(min_size=1, max_size=60).filter(lambda s: s.strip() != "")
SEARCH = st.builds(
    lambda q, k: ("search_urls", {"query": q} if k is None else {"query": q, "top_k": k}),
    ARG_TEXT, st.none() | st.integers(TOP_K_MIN, TOP_K_MAX),
)
READ = st.builds(
    lambda host, path, goal: ("query_url", {"url": f"https://{host}.example/{path}", "goal": goal}),
    st.text(string.ascii_lowercase, min_size=1, max_size=12), st.text(max_size=30), ARG_TEXT,
)
THINK = st.text(max_size=80).filter(lambda s: "<" not in s and "\\boxed" not in s)


@settings(max_examples=300, deadline=None)
@given(THINK, st.lists(SEARCH | READ, min_size=1, max_size=6))
def test_round_trip_of_well_formed_calls(think: str, calls: list[tuple[str, dict[str, object]]]) -> None:
    turn = p.parse_turn(p.format_turn(think, calls))
    assert [(c.name, c.arguments, c.error) for c in turn.tool_calls] == [(n, a, None) for n, a in calls]
    assert turn.think == think.strip()


def _balanced() -> st.SearchStrategy[str]:
    plain = st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=10)
    return st.recursive(plain, lambda inner: st.builds(lambda a, b, c: a + "{" + b + "}" + c,
                                                        plain, inner, plain), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="{}\\"), max_size=30), _balanced(), st.text(
    alphabet=st.characters(blacklist_characters="}\\"), max_size=30))
def test_boxed_with_nested_braces(prefix: str, content: str, suffix: str) -> None:
    # after the box only text that cannot close another box
    assert p.extract_boxed(prefix + "\\boxed{" + content + "}" + suffix.replace("{", "")) == content.strip()


# --- formatting ------------------------------------------------------------------------------


def test_tool_responses_are_one_user_turn_then_think_reopens() -> None:
    ok = ToolCall(index=0, name="search_urls", arguments={"query": "x"}, raw="",
                  result="1. [A](https://a)", ok=True)
    bad = ToolCall(index=1, name=None, arguments={}, raw="{", error="the tool call is not valid JSON")
    text = p.format_tool_responses([ok, bad])
    assert text == (
        "<|im_start|>user\n<tool_response>\n1. [A](https://a)\n</tool_response>\n"
        "<tool_response>\nError: the tool call is not valid JSON\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>"
    )
    assert text.count("<|im_start|>user") == 1


def test_final_answer_nudge_is_a_user_turn_asking_for_boxed_without_tools() -> None:
    nudge = p.final_answer_nudge()
    assert nudge.startswith("<|im_start|>user\n") and nudge.endswith("<|im_start|>assistant\n<think>")
    assert "\\boxed{" in nudge and "tools" in nudge


def test_a_tag_inside_an_argument_cannot_break_the_block() -> None:
    args = {"query": "what does </tool_call> mean <|im_end|>"}
    block = p.format_tool_call("search_urls", args)
    assert block.count("</tool_call>") == 1
    assert p.parse_turn("t</think>" + block).tool_calls[0].arguments == args


def test_rebuild_context_replays_the_exact_text() -> None:
    call = ToolCall(index=0, name="search_urls", arguments={"query": "x"}, raw="", result="r", ok=True)
    s0 = Step(index=0, text="\na\n</think>\n\n<tool_call>...</tool_call>", think="a", tool_calls=[call],
              answer=None)
    s1 = Step(index=1, text="\nb\n</think>\n\n\\boxed{y}", think="b", tool_calls=[], answer="y",
              forced_final=True)
    ctx = p.rebuild_context("PROMPT", [s0, s1])
    assert ctx == ("PROMPT" + s0.text + "<|im_end|>\n" + p.format_tool_responses([call])
                   + p.final_answer_nudge() + s1.text + "<|im_end|>\n")


def test_budget_arithmetic() -> None:
    assert p.fits(40_000, 960) and not p.fits(40_000, 961)
    assert p.turn_allowance(1_000, 8_192, reserve=1_200) == 8_192
    assert p.turn_allowance(39_000, 8_192, reserve=1_200) == 760
    assert p.turn_allowance(40_900, 8_192, reserve=1_200) == 0
    assert p.final_reserve(50, 2) == 50 + p.FINAL_ANSWER_TOKENS + 4 + p.BUDGET_SLACK_TOKENS
    assert p.truncate_response("abc", 10) == "abc"
    cut = p.truncate_response("x" * 500, 100)
    assert len(cut) <= 100 and cut.endswith(p.TRUNCATION_NOTE)
    assert (p.MAX_TURNS, p.MAX_CONTEXT_TOKENS) == (64, 40_960)
    assert "<|im_end|>" in p.STOP_STRINGS and "<tool_response>" in p.STOP_STRINGS
    assert "</tool_call>" not in p.STOP_STRINGS
