"""The rewards of RAPO, one function per formula, to be read against the paper.

FATHOM.md, "RAPO" and "The steerable step-level reward". Pure: no I/O, no model; the judge gives
the verdict, the labeller gives the step labels, this file turns them into a number.

1. ``format_reward``: R_format in [0, 1], from the tags of the trajectory's own text.
2. ``stage1_reward``: ``r = 0.1 * R_format + 0.9 * correct``.
3. ``stage2_reward``: the steerable step-level reward. With T labelled tool calls,
   ``rho = (n_red_search + n_red_query) / T``, ``D_S = n_unique_search - n_red_search``,
   ``D_Q = n_explore + n_verify - n_red_query``;
   correct: ``r = 0.1 * R_format + max(1 - rho, 0.5)``;
   wrong:   ``r = 0.1 * R_format + c1 * min(1, D_S / C_S) + c2 * min(1, D_Q / C_Q)``.

Every constant comes from ``RewardSettings`` (defaults are the paper's). What the paper leaves
open, decided here:

- A verdict of "unknown" (the judge could not tell) counts as wrong.
- T = 0 (no labelled tool call): rho = 0, so a correct answer without tools earns the full
  ``1 - rho = 1`` (nothing it did was redundant); for a wrong answer D_S = D_Q = 0, so only the
  format term remains. No division by zero, and no bonus for searching nothing.
- Negative D (more redundant calls than useful ones) is clipped at 0, so each term lies in
  [0, c]. Redundancy already costs a wrong trajectory its diversity term; without the clip
  ``min(1, D / C)`` has no lower bound and a long redundant loop would drive the reward below
  0, below a wrong answer that made no call at all, which would teach the policy not to search.
- T counts the labelled calls: the labeller labels every well-formed ``search_urls`` /
  ``query_url`` call and skips malformed ones, whose cost is already in R_format.
- VERIFICATION beyond B_v is the labeller's call (it labels them REDUNDANT_QUERY); the counts
  here are taken as given.

The paper's ordering "wrong <= 0.5 <= correct" holds exactly when
``format_weight + c1 + c2 <= correct_floor`` (``stage2_bounds``): true for the defaults
(0.1 + 0.2 + 0.2 = 0.5 = floor), broken by e.g. c1 = 0.3 or format_weight = 0.2. The replay
buffer's "reward > 0.5" relies on it. Rewards are rounded to 12 decimals so that such sums land
on the paper's boundaries exactly (0.1 + 0.2 + 0.2 is 0.5000000000000001 in binary floats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from fathom.agent import protocol
from fathom.agent.trajectory import Step, Trajectory
from fathom.core.config import RewardSettings
from fathom.tools.base import TOOL_SPECS, ToolSpec

StepLabel = Literal["UNIQUE_SEARCH", "REDUNDANT_SEARCH", "EXPLORATION", "VERIFICATION", "REDUNDANT_QUERY"]
STEP_LABELS: tuple[StepLabel, ...] = get_args(StepLabel)
Verdict = Literal["correct", "incorrect", "unknown"]  # unknown counts as wrong
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)

_DECIMALS = 12


def _tidy(x: float) -> float:
    """Round away binary-float noise so that sums of the paper's constants hit its boundaries."""
    return round(x, _DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


# --- 1. the format reward --------------------------------------------------------------------


@dataclass(frozen=True)
class FormatReport:
    """The four checks of R_format, each a fraction in [0, 1], and what failed, in words.

    - ``think``: steps whose text holds a well-formed think block. The loop writes the opening
      ``<think>`` itself, so a step's text must: not open another ``<think>``, close the block with
      exactly one ``</think>``, think something (non-empty), and not start a ``<tool_call>``
      before ``</think>``.
    - ``tool_calls``: ``<tool_call>`` blocks that are well formed, read by the agent's own parser
      (``protocol.parse_turn``): closed, valid JSON, a known tool name, its required arguments
      of the right types. A stray ``</tool_call>`` counts as one more malformed block. No block
      at all scores 1.0: nothing is malformed (using tools is rewarded elsewhere).
    - ``tool_responses``: steps that leave the tool responses to the tools. Responses are
      written by the loop, well formed by construction, so what the policy can get wrong is
      writing ``<tool_response>`` / ``</tool_response>`` or a new ChatML turn itself
      (hallucinating the environment). The loop cuts generation at those stop strings, so the
      step also fails when ``step.meta["stop"]`` records that it was cut at one of them.
    - ``answer``: 1.0 when the last step, after its thinking, gives a non-empty ``\\boxed{}``.
    """

    think: float
    tool_calls: float
    tool_responses: float
    answer: float
    problems: tuple[str, ...] = ()

    @property
    def score(self) -> float:
        """R_format: the mean of the four checks."""
        return _tidy((self.think + self.tool_calls + self.tool_responses + self.answer) / 4)


def format_checks(traj: Trajectory, tools: Sequence[ToolSpec] = TOOL_SPECS) -> FormatReport:
    """Score every step's text against the protocol's tags. A trajectory with no steps scores 0."""
    if not traj.steps:
        return FormatReport(0.0, 0.0, 0.0, 0.0, ("the trajectory has no steps",))
    problems: list[str] = []
    think_ok = responses_ok = calls_ok = calls_total = 0
    for step in traj.steps:
        think_problem = _think_problem(step.text)
        if think_problem is None:
            think_ok += 1
        else:
            problems.append(f"step {step.index}: {think_problem}")
        response_problem = _response_problem(step)
        if response_problem is None:
            responses_ok += 1
        else:
            problems.append(f"step {step.index}: {response_problem}")
        good, total, call_problems = _call_counts(step.text, tools)
        calls_ok, calls_total = calls_ok + good, calls_total + total
        problems.extend(f"step {step.index}: {p}" for p in call_problems)
    answer = _final_answer(traj.steps[-1].text)
    if answer is None:
        problems.append("the last step gives no \\boxed{} answer after its thinking")
    n = len(traj.steps)
    return FormatReport(
        think=think_ok / n,
        tool_calls=calls_ok / calls_total if calls_total else 1.0,
        tool_responses=responses_ok / n,
        answer=1.0 if answer else 0.0,
        problems=tuple(problems),
    )


def format_reward(traj: Trajectory, tools: Sequence[ToolSpec] = TOOL_SPECS) -> float:
    """R_format in [0, 1]: the mean of the four checks of ``FormatReport``.

    A graded score rather than 0/1 because a small policy learning the protocol needs a signal
    that moves before every tag of every turn is right: with 0/1, whole groups score 0 and their
    advantages vanish. The weight in the reward is small (0.1) either way.
    """
    return format_checks(traj, tools).score


def _think_problem(text: str) -> str | None:
    if protocol.THINK_OPEN in text:
        return f"a second {protocol.THINK_OPEN} inside the turn (the loop already opened one)"
    closes = text.count(protocol.THINK_CLOSE)
    if closes != 1:
        return f"{closes} {protocol.THINK_CLOSE} tags instead of one"
    thought, _, _ = text.partition(protocol.THINK_CLOSE)
    if protocol.CALL_OPEN in thought:
        return f"a {protocol.CALL_OPEN} inside the thinking"
    if not thought.strip():
        return "the thinking is empty"
    return None


_ENVIRONMENT_TAGS = (protocol.RESPONSE_OPEN, protocol.RESPONSE_CLOSE, protocol.IM_START)


def _response_problem(step: Step) -> str | None:
    written = [tag for tag in _ENVIRONMENT_TAGS if tag in step.text]
    if written:
        return f"the model wrote {', '.join(written)} itself"
    stop = step.meta.get("stop")
    if stop in (protocol.RESPONSE_OPEN, protocol.IM_START):
        return f"the model started writing {stop} itself (cut there)"
    return None


def _call_counts(text: str, tools: Sequence[ToolSpec]) -> tuple[int, int, list[str]]:
    """(well-formed blocks, all blocks, problems) of one step's text."""
    calls = protocol.parse_turn(text, tools).tool_calls
    stray = max(0, text.count(protocol.CALL_CLOSE) - text.count(protocol.CALL_OPEN))
    problems = [f"tool call {c.index}: {c.error}" for c in calls if c.error is not None]
    problems += [f"stray {protocol.CALL_CLOSE}"] * stray
    good = sum(1 for c in calls if c.error is None)
    return good, len(calls) + stray, problems


def _final_answer(text: str) -> str | None:
    """The boxed answer written after the thinking (inside it, it is still a thought)."""
    _, closed, after = text.partition(protocol.THINK_CLOSE)
    answer = protocol.extract_boxed(after if closed else text)
    return answer or None


# --- the breakdown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledCall:
    """The label of one tool call: ``traj.steps[step].tool_calls[index]``."""

    step: int
    index: int
    label: StepLabel
    reason: str = ""  # the labeller's why, for reading and for agreement reports; not scored

    def __post_init__(self) -> None:
        if self.label not in STEP_LABELS:
            raise ValueError(f"unknown step label {self.label!r}; expected one of {', '.join(STEP_LABELS)}")


def _zero_counts() -> dict[StepLabel, int]:
    return dict.fromkeys(STEP_LABELS, 0)


@dataclass
class RewardBreakdown:
    """A reward and everything it was made of. ``terms`` names every term of the stage's formula
    with its value (the branch not taken at 0.0), and ``sum(terms.values()) == reward``.

    ``d_s`` and ``d_q`` are the raw differences (possibly negative); the terms use them clipped.
    ``exact_match``, ``f1``, ``judge_model`` and ``labeller`` are filled in by the scorer.
    """

    reward: float
    r_format: float
    verdict: Verdict
    correct: bool
    stage: int
    exact_match: float | None = None
    f1: float | None = None
    tool_calls: int = 0  # T: the labelled tool calls (stage 2)
    rho: float = 0.0
    d_s: int = 0
    d_q: int = 0
    counts: dict[StepLabel, int] = field(default_factory=_zero_counts)
    labels: list[LabelledCall] = field(default_factory=list)
    terms: dict[str, float] = field(default_factory=dict)
    judge_model: str = ""
    labeller: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardBreakdown:
        """The inverse of ``to_dict`` (a breakdown read back from the store or the wire)."""
        fields = dict(data)
        fields["labels"] = [LabelledCall(**lab) for lab in fields.get("labels", [])]
        fields["counts"] = {**_zero_counts(), **fields.get("counts", {})}
        return cls(**fields)


def _check_inputs(r_format: float, verdict: str) -> None:
    if not 0.0 <= r_format <= 1.0:
        raise ValueError(f"R_format must lie in [0, 1], not {r_format}")
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(VERDICTS)}")


# --- 2. stage 1 ------------------------------------------------------------------------------


def stage1_reward(r_format: float, verdict: Verdict, settings: RewardSettings) -> RewardBreakdown:
    """``r = format_weight * R_format + correct_weight * correct`` (paper: 0.1 and 0.9)."""
    _check_inputs(r_format, verdict)
    correct = verdict == "correct"
    terms = {"format": _tidy(settings.format_weight * r_format),
             "correct": _tidy(settings.correct_weight * float(correct))}
    return RewardBreakdown(reward=_tidy(sum(terms.values())), r_format=r_format, verdict=verdict,
                           correct=correct, stage=1, terms=terms)


# --- 3. stage 2: the steerable step-level reward ---------------------------------------------


def label_counts(labels: Sequence[LabelledCall]) -> dict[StepLabel, int]:
    """How many calls carry each label (every label present, zeros included)."""
    counts = _zero_counts()
    for call in labels:
        counts[call.label] += 1
    return counts


def redundancy_ratio(counts: dict[StepLabel, int]) -> float:
    """``rho = (n_red_search + n_red_query) / T``; 0 when T = 0 (nothing was redundant)."""
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return (counts["REDUNDANT_SEARCH"] + counts["REDUNDANT_QUERY"]) / total


def search_diversity(counts: dict[StepLabel, int]) -> int:
    """``D_S = n_unique_search - n_red_search`` (may be negative; clipped where it is used)."""
    return counts["UNIQUE_SEARCH"] - counts["REDUNDANT_SEARCH"]


def page_reading(counts: dict[StepLabel, int]) -> int:
    """``D_Q = n_explore + n_verify - n_red_query`` (may be negative; clipped where it is used)."""
    return counts["EXPLORATION"] + counts["VERIFICATION"] - counts["REDUNDANT_QUERY"]


def capped_share(d: int, cap: int) -> float:
    """``min(1, D / C)`` with negative D clipped at 0, so the term lies in [0, 1]."""
    return min(1.0, max(0, d) / cap)


def stage2_reward(r_format: float, verdict: Verdict, labels: Sequence[LabelledCall],
                  settings: RewardSettings) -> RewardBreakdown:
    """The steerable reward: efficiency when correct, useful exploration when wrong.

    correct: ``format_weight * R_format + max(1 - rho, correct_floor)``;
    wrong:   ``format_weight * R_format + c1 * min(1, D_S / C_S) + c2 * min(1, D_Q / C_Q)``.
    """
    _check_inputs(r_format, verdict)
    correct = verdict == "correct"
    counts = label_counts(labels)
    rho, d_s, d_q = redundancy_ratio(counts), search_diversity(counts), page_reading(counts)
    terms = {"format": _tidy(settings.format_weight * r_format),
             "efficiency": 0.0, "search_diversity": 0.0, "page_reading": 0.0}
    if correct:
        terms["efficiency"] = _tidy(max(1.0 - rho, settings.correct_floor))
    else:
        terms["search_diversity"] = _tidy(settings.c1 * capped_share(d_s, settings.cap_search))
        terms["page_reading"] = _tidy(settings.c2 * capped_share(d_q, settings.cap_query))
    return RewardBreakdown(
        reward=_tidy(sum(terms.values())), r_format=r_format, verdict=verdict, correct=correct, stage=2,
        tool_calls=len(labels), rho=_tidy(rho), d_s=d_s, d_q=d_q, counts=counts, labels=list(labels),
        terms=terms)


def stage2_bounds(settings: RewardSettings) -> tuple[float, float]:
    """(the highest reward a wrong answer can get, the lowest a correct one can get) in stage 2.

    The paper's "wrong <= 0.5 <= correct" is ``highest_wrong <= lowest_correct``; it holds iff
    ``format_weight + c1 + c2 <= correct_floor`` (for non-negative constants).
    """
    fw = settings.format_weight
    highest_wrong = max(0.0, fw) + max(0.0, settings.c1) + max(0.0, settings.c2)
    lowest_correct = min(0.0, fw) + max(0.0, settings.correct_floor)  # rho = 1 at worst
    return _tidy(highest_wrong), _tidy(lowest_correct)


def compute_reward(r_format: float, verdict: Verdict, labels: Sequence[LabelledCall],
                   settings: RewardSettings, stage: int | None = None) -> RewardBreakdown:
    """The reward of ``stage`` (default: ``settings.stage``); stage 1 ignores the labels."""
    chosen = settings.stage if stage is None else stage
    if chosen == 1:
        return stage1_reward(r_format, verdict, settings)
    if chosen == 2:
        return stage2_reward(r_format, verdict, labels, settings)
    raise ValueError(f"unknown reward stage {chosen!r}; expected 1 or 2")
