"""What a research trajectory is made of. Plain dataclasses: the store, the CLI, the synthesizer,
and later the reward and training code all read these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class ToolCall:
    """One parsed (or unparsable) tool call of a turn."""

    index: int  # position within the turn
    name: str | None  # None when the call could not be parsed at all
    arguments: dict[str, Any]
    raw: str  # the text between <tool_call> and </tool_call> (or the stray text)
    error: str | None = None  # set when the call was malformed; the model sees it as the response
    result: str | None = None  # the tool response text the model sees
    ok: bool = False  # True when the tool ran and returned normally
    elapsed_s: float = 0.0
    snapshot_sha256: str | None = None  # query_url: the page snapshot it read
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """One assistant turn and the tool round that followed it."""

    index: int
    text: str  # generated text of the turn (after the forced "<think>")
    think: str | None
    tool_calls: list[ToolCall]
    answer: str | None  # content of the last \\boxed{} in this turn, if any
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_tokens: int = 0  # context length before the turn
    completion_tokens: int = 0
    tool_response_tokens: int = 0
    finish_reason: str = "stop"
    model_s: float = 0.0
    tools_s: float = 0.0
    overhead_s: float = 0.0
    forced_final: bool = False  # the loop asked for a final answer (budget or turn limit)
    # e.g. {"format_errors": [...], "guided_phases": [...]}: extra facts about how the turn was made
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ends_trajectory(self) -> bool:
        """A step after which the loop would not generate again (answer given, no calls, forced final)."""
        return self.forced_final or not self.tool_calls


StopReason = Literal[
    "answered", "no_tool_call", "max_turns", "context_budget", "max_tool_calls", "error", "cancelled"
]


@dataclass
class Trajectory:
    question: str
    prompt: str  # the initial prompt text (system + user + opened assistant turn)
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    stop_reason: StopReason | None = None
    total_tokens: int = 0
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def last_answer(self) -> str | None:
        """The answer of the last step that gave one (a later turn may add none)."""
        return next((s.answer for s in reversed(self.steps) if s.answer is not None), None)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [c for s in self.steps for c in s.tool_calls]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d
