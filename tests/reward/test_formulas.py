"""The reward formulas against hand-computed values, and R_format on trajectories made by the real
agent loop (scripted model, in-memory tools: the same step texts a policy's turns produce)."""

from __future__ import annotations

import itertools
import json

import pytest
from fathom.agent import protocol as p
from fathom.agent.loop import AgentLoop
from fathom.agent.trajectory import Trajectory
from fathom.core.config import AgentSettings, RewardSettings
from fathom.models.base import SamplingParams
from fathom.reward.formulas import (
    STEP_LABELS,
    LabelledCall,
    RewardBreakdown,
    compute_reward,
    format_checks,
    format_reward,
    stage1_reward,
    stage2_bounds,
    stage2_reward,
)

from tests.agent.agent_scripted import InMemoryTools, ScriptedBackend

PAPER = RewardSettings()
K2 = "Who made the first ascent of K2?"
K2_URL = "https://mountains.example/k2"


def labels(**counts: int) -> list[LabelledCall]:
    """Labelled calls in the given numbers, e.g. ``labels(UNIQUE_SEARCH=3, EXPLORATION=1)``."""
    out: list[LabelledCall] = []
    for name, n in counts.items():
        out += [LabelledCall(step=len(out), index=0, label=name) for _ in range(n)]  # type: ignore[arg-type]
    return out


def assert_terms_add_up(b: RewardBreakdown) -> None:
    assert sum(b.terms.values()) == pytest.approx(b.reward, abs=1e-12)


# --- stage 1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("r_format", "verdict", "expected"), [
    (1.0, "correct", 1.0),  # 0.1 * 1 + 0.9 * 1
    (0.5, "correct", 0.95),  # 0.1 * 0.5 + 0.9
    (0.5, "incorrect", 0.05),
    (1.0, "unknown", 0.1),  # unknown counts as wrong
    (0.0, "incorrect", 0.0),
])
def test_stage1_reward(r_format: float, verdict: str, expected: float) -> None:
    b = stage1_reward(r_format, verdict, PAPER)  # type: ignore[arg-type]
    assert b.reward == expected and b.stage == 1 and b.correct is (verdict == "correct")
    assert set(b.terms) == {"format", "correct"}
    assert_terms_add_up(b)


def test_stage1_weights_are_settings() -> None:
    b = stage1_reward(0.5, "correct", RewardSettings(format_weight=0.2, correct_weight=0.8))
    assert b.reward == 0.9 and b.terms == {"format": 0.1, "correct": 0.8}


# --- stage 2, correct: 0.1 * R_format + max(1 - rho, 0.5) ------------------------------------


def test_stage2_correct_pays_for_efficiency() -> None:
    # T = 8, redundant = 1 + 1, rho = 0.25: 0.1 * 0.8 + 0.75 = 0.83
    calls = labels(UNIQUE_SEARCH=3, REDUNDANT_SEARCH=1, EXPLORATION=2, VERIFICATION=1, REDUNDANT_QUERY=1)
    b = stage2_reward(0.8, "correct", calls, PAPER)
    assert b.reward == 0.83 and b.rho == 0.25 and b.tool_calls == 8
    assert b.counts == {"UNIQUE_SEARCH": 3, "REDUNDANT_SEARCH": 1, "EXPLORATION": 2, "VERIFICATION": 1,
                        "REDUNDANT_QUERY": 1}
    assert (b.d_s, b.d_q) == (2, 2)
    assert b.terms == {"format": 0.08, "efficiency": 0.75, "search_diversity": 0.0, "page_reading": 0.0}
    assert_terms_add_up(b)


def test_stage2_correct_floor() -> None:
    # T = 4, 3 redundant: rho = 0.75, max(0.25, 0.5) = 0.5
    b = stage2_reward(1.0, "correct", labels(REDUNDANT_SEARCH=2, REDUNDANT_QUERY=1, EXPLORATION=1), PAPER)
    assert b.rho == 0.75 and b.reward == 0.6 and b.terms["efficiency"] == 0.5
    floor = stage2_reward(1.0, "correct", labels(REDUNDANT_SEARCH=2, REDUNDANT_QUERY=1, EXPLORATION=1),
                          RewardSettings(correct_floor=0.2))
    assert floor.reward == 0.35  # 0.1 + max(0.25, 0.2)


def test_all_labels_redundant() -> None:
    calls = labels(REDUNDANT_SEARCH=3, REDUNDANT_QUERY=2)
    right = stage2_reward(0.5, "correct", calls, PAPER)
    assert right.rho == 1.0 and right.reward == 0.55  # 0.05 + max(0, 0.5)
    wrong = stage2_reward(0.5, "incorrect", calls, PAPER)
    assert (wrong.d_s, wrong.d_q) == (-3, -2)  # kept raw in the breakdown ...
    assert wrong.reward == 0.05  # ... clipped
    assert wrong.terms["search_diversity"] == wrong.terms["page_reading"] == 0.0


# --- stage 2, wrong: 0.1 * R_format + c1 * min(1, D_S / C_S) + c2 * min(1, D_Q / C_Q) --------


def test_stage2_wrong_pays_for_useful_exploration() -> None:
    # D_S = 5 - 1 = 4: 0.2 * 4/8 = 0.1; D_Q = 3 + 2 - 1 = 4: 0.2 * 4/16 = 0.05; 0.1 * 0.5 = 0.05
    calls = labels(UNIQUE_SEARCH=5, REDUNDANT_SEARCH=1, EXPLORATION=3, VERIFICATION=2, REDUNDANT_QUERY=1)
    b = stage2_reward(0.5, "incorrect", calls, PAPER)
    assert (b.d_s, b.d_q) == (4, 4) and b.rho == pytest.approx(2 / 12)
    assert b.terms == {"format": 0.05, "efficiency": 0.0, "search_diversity": 0.1, "page_reading": 0.05}
    assert b.reward == 0.2
    assert_terms_add_up(b)


def test_unknown_is_wrong_in_stage2() -> None:
    calls = labels(UNIQUE_SEARCH=5, REDUNDANT_SEARCH=1, EXPLORATION=3, VERIFICATION=2, REDUNDANT_QUERY=1)
    b = stage2_reward(0.5, "unknown", calls, PAPER)
    assert not b.correct and b.reward == 0.2 and b.verdict == "unknown"


def test_caps_at_c_s_and_c_q() -> None:
    # D_S = 12 > C_S = 8 and D_Q = 20 > C_Q = 16: both terms saturate at c = 0.2
    b = stage2_reward(1.0, "incorrect", labels(UNIQUE_SEARCH=12, EXPLORATION=20), PAPER)
    assert b.terms["search_diversity"] == 0.2 and b.terms["page_reading"] == 0.2
    assert b.reward == 0.5  # exactly, not 0.5000000000000001: the paper's boundary
    # exactly at the caps saturates too; one below does not
    at = stage2_reward(0.0, "incorrect", labels(UNIQUE_SEARCH=8, EXPLORATION=15), PAPER)
    assert at.terms["search_diversity"] == 0.2 and at.terms["page_reading"] == 0.1875  # 0.2 * 15/16
    small_caps = stage2_reward(0.0, "incorrect", labels(UNIQUE_SEARCH=2, EXPLORATION=2),
                               RewardSettings(cap_search=2, cap_query=4, c1=0.1, c2=0.3))
    assert small_caps.reward == 0.25  # 0.1 * 1 + 0.3 * 2/4


def test_negative_deltas_are_clipped_one_at_a_time() -> None:
    # D_S = 1 - 4 = -3 -> 0; D_Q = 4 + 0 - 0 = 4 -> 0.2 * 4/16 = 0.05
    b = stage2_reward(0.0, "incorrect", labels(UNIQUE_SEARCH=1, REDUNDANT_SEARCH=4, EXPLORATION=4), PAPER)
    assert (b.d_s, b.d_q) == (-3, 4) and b.reward == 0.05
    assert b.terms["search_diversity"] == 0.0
    # D_Q = 1 + 1 - 5 = -3 -> 0; D_S = 2 -> 0.05
    b = stage2_reward(0.0, "incorrect",
                      labels(UNIQUE_SEARCH=2, EXPLORATION=1, VERIFICATION=1, REDUNDANT_QUERY=5), PAPER)
    assert (b.d_s, b.d_q) == (2, -3) and b.reward == 0.05 and b.terms["page_reading"] == 0.0


def test_no_tool_calls() -> None:
    right = stage2_reward(1.0, "correct", [], PAPER)  # T = 0: rho = 0, nothing was redundant
    assert right.tool_calls == 0 and right.rho == 0.0 and right.reward == 1.1
    wrong = stage2_reward(1.0, "incorrect", [], PAPER)  # D_S = D_Q = 0: only the format term
    assert (wrong.d_s, wrong.d_q) == (0, 0) and wrong.reward == 0.1
    assert wrong.counts == dict.fromkeys(STEP_LABELS, 0)


def test_verifications_beyond_b_v_are_counted_as_labelled() -> None:
    # B_v = 1 is the labeller's rule (it labels the second verification REDUNDANT_QUERY); the
    # formula takes the labels as given: 4 VERIFICATION -> D_Q = 4
    b = stage2_reward(0.0, "incorrect", labels(VERIFICATION=4), PAPER)
    assert PAPER.verifications_allowed == 1
    assert b.d_q == 4 and b.reward == 0.05 and b.rho == 0.0
    # the labeller's version of the same calls: 1 verification, 3 redundant -> D_Q = -2 -> 0
    labelled = stage2_reward(0.0, "incorrect", labels(VERIFICATION=1, REDUNDANT_QUERY=3), PAPER)
    assert labelled.d_q == -2 and labelled.reward == 0.0


# --- the paper's ordering: wrong <= 0.5 <= correct -------------------------------------------


def test_wrong_never_beats_correct_with_the_paper_constants() -> None:
    assert stage2_bounds(PAPER) == (0.5, 0.5)
    worst_correct, best_wrong = 10.0, -10.0
    for r_format in (0.0, 0.3, 1.0):
        for counts in itertools.product(range(0, 20, 3), repeat=len(STEP_LABELS)):
            calls = labels(**dict(zip(STEP_LABELS, counts, strict=True)))
            worst_correct = min(worst_correct, stage2_reward(r_format, "correct", calls, PAPER).reward)
            best_wrong = max(best_wrong, stage2_reward(r_format, "incorrect", calls, PAPER).reward)
    assert best_wrong == 0.5 == worst_correct  # both bounds are reached, never crossed


@pytest.mark.parametrize("overrides", [{"c1": 0.3}, {"format_weight": 0.2}, {"correct_floor": 0.4}])
def test_settings_that_break_the_ordering(overrides: dict[str, float]) -> None:
    settings = RewardSettings(**overrides)  # type: ignore[arg-type]
    highest_wrong, lowest_correct = stage2_bounds(settings)
    assert highest_wrong > lowest_correct
    wrong = stage2_reward(1.0, "incorrect", labels(UNIQUE_SEARCH=8, EXPLORATION=16), settings)
    right = stage2_reward(0.0, "correct", labels(REDUNDANT_SEARCH=1), settings)
    assert wrong.reward == highest_wrong > right.reward == lowest_correct


# --- inputs, dispatch, serialisation ---------------------------------------------------------


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="R_format"):
        stage1_reward(1.2, "correct", PAPER)
    with pytest.raises(ValueError, match="verdict"):
        stage2_reward(1.0, "maybe", [], PAPER)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step label"):
        LabelledCall(step=0, index=0, label="USEFUL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stage"):
        compute_reward(1.0, "correct", [], PAPER, stage=3)


def test_compute_reward_follows_the_settings_stage() -> None:
    calls = labels(UNIQUE_SEARCH=1, REDUNDANT_SEARCH=1)
    assert compute_reward(1.0, "correct", calls, PAPER).stage == 1
    stage2 = compute_reward(1.0, "correct", calls, RewardSettings(stage=2))
    assert stage2.stage == 2 and stage2.reward == 0.6  # 0.1 + max(0.5, 0.5)


def test_breakdown_round_trips_through_json() -> None:
    calls = [LabelledCall(0, 0, "UNIQUE_SEARCH", "new entity"), LabelledCall(1, 0, "EXPLORATION")]
    b = stage2_reward(0.75, "incorrect", calls, PAPER)
    b.exact_match, b.f1, b.judge_model, b.labeller = 0.0, 0.4, "gpt-4.1", "embedding"
    data = json.loads(json.dumps(b.to_dict()))
    assert data["terms"]["search_diversity"] == 0.025 and data["labels"][0]["reason"] == "new entity"
    assert RewardBreakdown.from_dict(data) == b


# --- R_format on real loop trajectories ------------------------------------------------------


def search(query: str, think: str = "I need to search.") -> str:
    return p.format_turn(think, [("search_urls", {"query": query})])


def read(url: str, goal: str) -> str:
    return p.format_turn("This page looks right.", [("query_url", {"url": url, "goal": goal})])


def answer(text: str) -> str:
    return p.format_turn("Two sources agree.", answer=text)


async def run(*turns: str) -> Trajectory:
    loop = AgentLoop(ScriptedBackend(list(turns)), InMemoryTools(), AgentSettings(),
                     SamplingParams(temperature=0.6, logprobs=True))
    return await loop.run(K2)


async def test_a_well_formed_trajectory_scores_one() -> None:
    traj = await run(search("K2 first ascent"), read(K2_URL, "who first climbed K2"), answer("Lacedelli"))
    report = format_checks(traj)
    assert traj.stop_reason == "answered" and report.problems == ()
    assert format_reward(traj) == 1.0


async def test_answer_without_tools_is_well_formed() -> None:
    assert format_reward(await run(answer("Lacedelli"))) == 1.0


async def test_malformed_calls_cost_their_share() -> None:
    # 4 blocks: a wrong argument name, a good one, invalid JSON, an unknown tool; plus a stray close
    turn = ("\nLet me try.\n</think>\n\n<tool_call>\n{\"name\": \"search_urls\", \"arguments\": {\"q\": 1}}\n"
            "</tool_call>\n" + p.format_tool_call("search_urls", {"query": "K2"})
            + "\n<tool_call>\nnot json\n</tool_call>\n<tool_call>\n{\"name\": \"browse\", \"arguments\": {}}"
            "\n</tool_call>\n</tool_call>")
    traj = await run(turn, answer("Lacedelli"))
    report = format_checks(traj)
    assert report.tool_calls == 1 / 5 and report.think == 1.0 and report.answer == 1.0
    assert format_reward(traj) == 0.8  # (1 + 0.2 + 1 + 1) / 4
    assert sum("tool call" in x or "stray" in x for x in report.problems) == 3 + 1  # 3 bad blocks, 1 stray


async def test_missing_required_argument_and_unclosed_block() -> None:
    no_goal = p.format_turn("Read it.", [("query_url", {"url": K2_URL})])
    unclosed = ("\nSearch again.\n</think>\n<tool_call>\n"
                '{"name": "search_urls", "arguments": {"query": "K2"}}')
    traj = await run(no_goal, unclosed, answer("Lacedelli"))
    report = format_checks(traj)
    assert report.tool_calls == 0.0
    assert any("needs 'goal'" in x for x in report.problems)
    assert any("not closed" in x for x in report.problems)


@pytest.mark.parametrize(("first_turn", "problem"), [
    ("\nI should search for K2.\n" + p.format_tool_call("search_urls", {"query": "K2"}), "0 </think>"),
    ("\n<think>nested</think>\n" + p.format_tool_call("search_urls", {"query": "K2"}), "second <think>"),
    ("\nfirst</think> then </think>\n" + p.format_tool_call("search_urls", {"query": "K2"}), "2 </think>"),
    ("\n   \n</think>\n" + p.format_tool_call("search_urls", {"query": "K2"}), "thinking is empty"),
    ("\nsearching " + p.format_tool_call("search_urls", {"query": "K2"}) + "\n</think>",
     "inside the thinking"),
])
async def test_each_kind_of_think_failure(first_turn: str, problem: str) -> None:
    traj = await run(first_turn, answer("Lacedelli"))
    report = format_checks(traj)
    assert report.think == 0.5, report.problems  # the answering step is fine
    assert any(problem in x for x in report.problems)


async def test_no_boxed_answer_after_the_thinking() -> None:
    unanswered = await run(search("K2"), p.format_turn("I cannot tell."))
    assert format_checks(unanswered).answer == 0.0 and format_reward(unanswered) == 0.75
    in_thought = await run("\nMaybe \\boxed{Lacedelli}?\n</think>\nI am not sure.")
    assert format_checks(in_thought).answer == 0.0
    empty_box = await run(answer(" "))
    assert format_checks(empty_box).answer == 0.0


async def test_model_written_tool_responses() -> None:
    # "</tool_response>" is not a stop string: it reaches the step text
    closing = search("K2") + "\nK2 was first climbed by me.\n</tool_response>"
    traj = await run(closing, answer("Lacedelli"))
    report = format_checks(traj)
    assert report.tool_responses == 0.5 and any("</tool_response>" in x for x in report.problems)
    # "<tool_response>" is: the loop cuts the turn there, and the step records where it stopped
    opening = search("K2") + "\n<tool_response>\nK2 was first climbed by me.\n</tool_response>"
    traj = await run(opening, answer("Lacedelli"))
    assert p.RESPONSE_OPEN not in traj.steps[0].text
    traj.steps[0].meta.setdefault("stop", p.RESPONSE_OPEN)  # what the loop must record (see report)
    assert format_checks(traj).tool_responses == 0.5


async def test_an_empty_trajectory_scores_zero() -> None:
    assert format_reward(Trajectory(question=K2, prompt=p.build_prompt(K2))) == 0.0
