"""Progress events of a research job, for a terminal, a gRPC stream or a log.

The same event is stored as a row of the job's stream (``job:<id>``) by the ``EventBus``:
``event_payload`` is its JSON form, with the job's ``state`` after the event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal[
    "job_started", "step", "synthesis_started", "synthesis_done", "job_done", "job_failed",
    "job_cancelled", "job_requeued",
]
TERMINAL_KINDS: frozenset[str] = frozenset({"job_done", "job_failed", "job_cancelled"})


@dataclass(frozen=True)
class ProgressEvent:
    kind: EventKind
    job_id: str
    elapsed_s: float
    turn: int = 0
    total_tokens: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{name, target, ok, error}]
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def event_payload(event: ProgressEvent, state: str) -> dict[str, Any]:
    """The stored JSON of an event: every field but the kind (the row has it), plus ``state``."""
    payload = asdict(event)
    payload.pop("kind")
    payload["state"] = state
    return payload


def event_from_payload(kind: str, payload: dict[str, Any]) -> ProgressEvent:
    """Back from a stored row (a remote watcher prints the same events as a local run)."""
    known = {k: payload[k] for k in ("turn", "total_tokens", "tool_calls", "message", "data") if k in payload}
    return ProgressEvent(kind, str(payload.get("job_id", "")),  # type: ignore[arg-type]
                         float(payload.get("elapsed_s", 0.0)), **known)
