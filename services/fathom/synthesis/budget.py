"""Fit a search trace into the synthesizer's context.

The prompt, the reformatted trace and the new tokens must fit ``context_tokens``. When the
trace is too long we give up tool responses first — failed calls, then the longest, oldest
first among similar lengths — first shortening them to their opening (where the extractor puts
its rationale and evidence), then dropping them. The numbered list of tool calls always stays.
Only if that is not enough is the assistant's reasoning shortened, oldest steps first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fathom.agent.trajectory import Trajectory
from fathom.core.errors import ConfigError
from fathom.synthesis.protocol import reformat_trace

CLIPPED_RESPONSE_CHARS = 1_200
CLIPPED_REASONING_CHARS = 800
_LENGTH_BAND_TOKENS = 500  # responses within one band count as equally long; older goes first


@dataclass
class TraceFit:
    text: str
    tokens: int
    budget_tokens: int
    clipped_responses: list[int] = field(default_factory=list)  # tool call numbers (1-based)
    dropped_responses: list[int] = field(default_factory=list)
    clipped_reasoning: list[int] = field(default_factory=list)  # step indices

    @property
    def compacted(self) -> bool:
        return bool(self.clipped_responses or self.dropped_responses or self.clipped_reasoning)


def fit_trace(traj: Trajectory, count_tokens: Callable[[str], int], budget_tokens: int) -> TraceFit:
    """The reformatted trace, compacted until ``count_tokens`` of it is at most ``budget_tokens``.

    Raises ConfigError when even the bare list of calls does not fit: the context is too small
    for this trace, and silently cutting the list would hide what the research did.
    """
    if budget_tokens <= 0:
        raise ConfigError(f"no room for the search trace: budget is {budget_tokens} tokens")
    text = reformat_trace(traj)
    tokens = count_tokens(text)
    fit = TraceFit(text=text, tokens=tokens, budget_tokens=budget_tokens)
    if tokens <= budget_tokens:
        return fit

    calls = []
    n = 0
    for step in traj.steps:
        for call in step.tool_calls:
            n += 1
            body = call.result if call.result is not None else (call.error or "")
            calls.append((n, call.ok, body, count_tokens(body) if body else 0))
    order = sorted(calls, key=lambda c: (c[1], -(c[3] // _LENGTH_BAND_TOKENS), c[0]))

    response_limits: dict[int, int] = {}
    reasoning_limits: dict[int, int] = {}
    estimate = tokens

    def settle() -> bool:
        """Recount for real once the running estimate says it fits."""
        nonlocal estimate
        if estimate > budget_tokens:
            return False
        fit.text = reformat_trace(traj, response_limits=response_limits, reasoning_limits=reasoning_limits)
        fit.tokens = estimate = count_tokens(fit.text)
        return estimate <= budget_tokens

    # Pass 1: shorten long responses to their opening. Pass 2: drop them.
    for limit, record in ((CLIPPED_RESPONSE_CHARS, fit.clipped_responses), (0, fit.dropped_responses)):
        for num, _ok, body, body_tokens in order:
            if len(body) <= limit or response_limits.get(num, len(body) + 1) <= limit:
                continue
            size = max(len(body), 1)
            now = body_tokens * min(response_limits.get(num, size), size) // size
            response_limits[num] = limit
            estimate -= now - body_tokens * limit // size
            record.append(num)
            if settle():
                return fit
    for limit in (CLIPPED_REASONING_CHARS, 0):
        for step in traj.steps:
            if len(step.text) <= limit or reasoning_limits.get(step.index, len(step.text) + 1) <= limit:
                continue
            reasoning_limits[step.index] = limit
            if step.index not in fit.clipped_reasoning:
                fit.clipped_reasoning.append(step.index)
            estimate = 0  # reasoning is rarely the culprit; just recount
            if settle():
                return fit
    estimate = 0
    if settle():
        return fit
    raise ConfigError(
        f"the search trace needs {fit.tokens} tokens even with every tool response dropped, "
        f"but only {budget_tokens} are available; raise the synthesizer's context_tokens"
    )
