"""The guided-policy evaluation's question picking and scoring, on the real shared question files."""

from __future__ import annotations

from fathom.agent.trajectory import Step, ToolCall, Trajectory
from fathom.bench.guided import (
    contains_gold,
    exact_match,
    normalise_answer,
    score_trajectory,
    select_questions,
    summarise,
)

from tests.shared_data import SHARED_DATA


def test_questions_are_picked_by_a_fixed_rule_from_the_offset() -> None:
    picked = select_questions(SHARED_DATA, offset=50, per_source=4)
    assert [q.source for q in picked] == ["hotpotqa"] * 4 + ["musique"] * 4
    assert picked == select_questions(SHARED_DATA, offset=50, per_source=4)  # the same every time
    dev = select_questions(SHARED_DATA, offset=0, per_source=50)
    assert not {q.id for q in picked} & {q.id for q in dev}  # held out from the first 50 of each
    assert all(len(q.gold_ids) == 2 and q.answers[0] for q in picked)
    # Questions whose gold pages are not all indexed are skipped, not scored as misses.
    one_gold = {next(iter(q.gold_ids)) for q in picked}
    assert select_questions(SHARED_DATA, offset=50, per_source=4, indexed=one_gold) == []


def test_answers_are_scored_after_normalisation() -> None:
    assert normalise_answer("  The Black-Sea! ") == "blacksea"
    assert exact_match("the Black Sea", ("Black Sea",)) and not exact_match("Black Sea coast", ("Black Sea",))
    assert contains_gold("the Black Sea coast", ("Black Sea",)) and not contains_gold(None, ("x",))
    assert exact_match("Stanley Hall", ("G. Stanley Hall", "Stanley Hall"))


def test_a_trajectory_is_scored_on_calls_turns_gold_pages_and_answer() -> None:
    q = select_questions(SHARED_DATA, offset=50, per_source=1)[0]
    gold_url = f"http://127.0.0.1:1/wiki/{sorted(q.gold_ids)[0]}"
    search = ToolCall(index=0, name="search_urls", arguments={"query": q.question}, raw="", ok=True,
                      meta={"urls": [gold_url, "http://127.0.0.1:1/wiki/Other-1"]})
    read = ToolCall(index=0, name="query_url", arguments={"url": gold_url, "goal": "g"}, raw="", ok=True)
    steps = [Step(index=0, text="", think=None, tool_calls=[search], answer=None),
             Step(index=1, text="", think=None, tool_calls=[read], answer=None),
             Step(index=2, text="", think=None, tool_calls=[], answer=q.answers[0])]
    traj = Trajectory(question=q.question, prompt="", steps=steps, answer=q.answers[0],
                      stop_reason="answered")
    row = score_trajectory(q, traj, 1.0)
    assert (row["turns"], row["tool_calls"], row["searches"], row["reads"]) == (3, 2, 1, 1)
    assert (row["gold_offered"], row["gold_read"], row["exact_match"]) == (1, 1, True)
    total = summarise([row, {**row, "exact_match": False, "contains_gold": False}])
    assert total["exact_match"] == 0.5 and total["mean_tool_calls"] == 2
