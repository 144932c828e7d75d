from __future__ import annotations

import pytest
from fathom.core.errors import ConfigError
from fathom.synthesis.budget import fit_trace
from fathom.synthesis.protocol import reformat_trace

from .traces import build_trajectory, long_trajectory


def chars_over_four(text: str) -> int:
    """A tokenizer-free count with the usual ~4 characters per token of English text."""
    return len(text) // 4


def test_trace_that_fits_is_left_alone() -> None:
    traj = build_trajectory()
    fit = fit_trace(traj, chars_over_four, 100_000)
    assert fit.text == reformat_trace(traj)
    assert not fit.compacted


def test_longest_response_is_shortened_first() -> None:
    traj = long_trajectory()
    full = chars_over_four(reformat_trace(traj))
    fit = fit_trace(traj, chars_over_four, full - 5_000)  # shortening the 40k page saves ~9.7k tokens
    assert fit.clipped_responses == [8]
    assert fit.dropped_responses == []
    assert fit.tokens <= full - 5_000 == fit.budget_tokens


def test_tight_budget_drops_responses_but_keeps_every_call_listed() -> None:
    traj = long_trajectory()
    fit = fit_trace(traj, chars_over_four, 2_500)
    assert fit.tokens == chars_over_four(fit.text) <= 2_500
    # the failed call goes first, then the longest, the older of equally long ones first
    assert fit.dropped_responses[0] == 6
    assert fit.clipped_responses[:3] == [8, 7, 9]
    listing = fit.text.split("TOOL CALLS MADE (10):\n", 1)[1].splitlines()
    assert [line.split(".", 1)[0] for line in listing] == [str(i) for i in range(1, 11)]
    assert "[SEARCH RESULT 8 for query_url(" in fit.text


def test_impossible_budget_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="context_tokens"):
        fit_trace(long_trajectory(), chars_over_four, 200)
    with pytest.raises(ConfigError):
        fit_trace(long_trajectory(), chars_over_four, 0)
