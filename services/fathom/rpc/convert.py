"""Dataclasses of the agent and the store <-> fathom.v1 protos.

One place for every conversion, so that a field added on one side is added here once. Enum values a
client sends that this server does not know (``mode = 99``) are InvalidArgument, never a default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fathom.agent.trajectory import Step, ToolCall
from fathom.core.errors import InvalidArgument
from fathom.rpc.gen import common_pb2, research_pb2, synthesis_pb2

_MODES: dict[int, str] = {common_pb2.MODE_SEARCH: "search", common_pb2.MODE_REPORT: "report",
          common_pb2.MODE_UNSPECIFIED: "report"}
_MODE_TO_PROTO: dict[str, common_pb2.Mode] = {"search": common_pb2.MODE_SEARCH,
                                              "report": common_pb2.MODE_REPORT}
_STATES: dict[str, common_pb2.JobState] = {
    "queued": common_pb2.JOB_STATE_QUEUED, "running": common_pb2.JOB_STATE_RUNNING,
    "succeeded": common_pb2.JOB_STATE_SUCCEEDED, "failed": common_pb2.JOB_STATE_FAILED,
    "cancelled": common_pb2.JOB_STATE_CANCELLED,
}
_STATE_FROM_PROTO: dict[int, str] = {v: k for k, v in _STATES.items()}
# The store's lane names (and the names it used before migration 0002).
_LANES: dict[str, common_pb2.Lane] = {"live": common_pb2.LANE_LIVE, "train": common_pb2.LANE_TRAIN,
          "interactive": common_pb2.LANE_LIVE, "training": common_pb2.LANE_TRAIN}
_LANE_FROM_PROTO: dict[int, str] = {common_pb2.LANE_UNSPECIFIED: "live", common_pb2.LANE_LIVE: "live",
                    common_pb2.LANE_TRAIN: "train"}


# -- enums ------------------------------------------------------------------------------------


def mode_from_proto(value: int) -> str:
    try:
        return _MODES[value]
    except KeyError:
        raise InvalidArgument(f"unknown mode enum value {value}", reason="UNKNOWN_MODE",
                              field="mode", value=value) from None


def mode_to_proto(mode: str) -> common_pb2.Mode:
    return _MODE_TO_PROTO.get(mode, common_pb2.MODE_UNSPECIFIED)


def state_from_proto(value: int) -> str | None:
    """JOB_STATE_UNSPECIFIED -> None (every state, in List)."""
    if value == common_pb2.JOB_STATE_UNSPECIFIED:
        return None
    try:
        return _STATE_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgument(f"unknown job state enum value {value}", reason="UNKNOWN_STATE",
                              field="state", value=value) from None


def state_to_proto(state: str | None) -> common_pb2.JobState:
    return _STATES.get(state or "", common_pb2.JOB_STATE_UNSPECIFIED)


def lane_from_proto(value: int) -> str:
    try:
        return _LANE_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgument(f"unknown lane enum value {value}", reason="UNKNOWN_LANE",
                              field="lane", value=value) from None


def lane_filter_from_proto(value: int) -> str | None:
    """List: LANE_UNSPECIFIED means every lane."""
    return None if value == common_pb2.LANE_UNSPECIFIED else lane_from_proto(value)


def lane_to_proto(lane: str | None) -> common_pb2.Lane:
    return _LANES.get(lane or "", common_pb2.LANE_UNSPECIFIED)


def timestamp(value: datetime | str | None) -> str:
    """RFC 3339 in UTC; naive datetimes from SQLite are UTC."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- steps and tool calls ---------------------------------------------------------------------


def tool_call_to_proto(call: ToolCall) -> common_pb2.ToolCall:
    return common_pb2.ToolCall(
        index=call.index, name=call.name or "",
        arguments_json=json.dumps(call.arguments, ensure_ascii=False, sort_keys=True),
        error=call.error or "", result=call.result or "", ok=call.ok, elapsed_s=call.elapsed_s,
        snapshot_sha256=call.snapshot_sha256 or "",
    )


def _arguments(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"tool call arguments are not JSON: {exc.msg}", reason="BAD_ARGUMENTS_JSON",
                              field="arguments_json") from None
    if not isinstance(value, dict):
        raise InvalidArgument("tool call arguments must be a JSON object", reason="BAD_ARGUMENTS_JSON",
                              field="arguments_json")
    return value


def tool_call_from_proto(msg: common_pb2.ToolCall) -> ToolCall:
    return ToolCall(
        index=msg.index, name=msg.name or None, arguments=_arguments(msg.arguments_json),
        raw=msg.arguments_json, error=msg.error or None, result=msg.result or None, ok=msg.ok,
        elapsed_s=msg.elapsed_s, snapshot_sha256=msg.snapshot_sha256 or None,
    )


def step_to_proto(step: Step) -> common_pb2.Step:
    return common_pb2.Step(
        index=step.index, text=step.text, think=step.think or "",
        tool_calls=[tool_call_to_proto(c) for c in step.tool_calls], answer=step.answer or "",
        token_ids=step.token_ids or [], logprobs=step.logprobs or [],
        prompt_tokens=step.prompt_tokens, completion_tokens=step.completion_tokens,
        tool_response_tokens=step.tool_response_tokens, finish_reason=step.finish_reason,
        model_s=step.model_s, tools_s=step.tools_s, overhead_s=step.overhead_s,
        forced_final=step.forced_final, meta_json=_meta_json(step.meta),
    )


def _meta_json(meta: Mapping[str, Any] | None) -> str:
    if not meta:
        return ""
    return json.dumps(meta, ensure_ascii=False, default=str, allow_nan=False)


def _meta_from_json(text: str) -> dict[str, Any]:
    """A step's meta from the wire; anything that is not a JSON object is refused (INVALID_ARGUMENT)."""
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise InvalidArgument("step meta_json must be a JSON object", reason="BAD_STEP_META",
                              field="meta_json")
    return meta


def step_from_proto(msg: common_pb2.Step) -> Step:
    return Step(
        index=msg.index, text=msg.text, think=msg.think or None,
        tool_calls=[tool_call_from_proto(c) for c in msg.tool_calls], answer=msg.answer or None,
        token_ids=list(msg.token_ids) or None, logprobs=list(msg.logprobs) or None,
        prompt_tokens=msg.prompt_tokens, completion_tokens=msg.completion_tokens,
        tool_response_tokens=msg.tool_response_tokens, finish_reason=msg.finish_reason or "stop",
        model_s=msg.model_s, tools_s=msg.tools_s, overhead_s=msg.overhead_s,
        forced_final=msg.forced_final, meta=_meta_from_json(msg.meta_json),
    )


def step_from_dict(data: Mapping[str, Any]) -> Step:
    """A Step from its ``asdict`` form (stored event payloads)."""
    calls = [ToolCall(**{k: v for k, v in c.items() if k in ToolCall.__dataclass_fields__})
             for c in data.get("tool_calls", [])]
    fields = {k: v for k, v in data.items() if k in Step.__dataclass_fields__ and k != "tool_calls"}
    return Step(tool_calls=calls, **fields)


# -- jobs, batches, events --------------------------------------------------------------------


def job_to_proto(job: Any, *, steps: int = 0, tool_calls: int = 0,
                 report_markdown: str = "") -> research_pb2.Job:
    """``job`` is a store JobInfo."""
    return research_pb2.Job(
        id=job.id, question=job.question, mode=mode_to_proto(job.mode), state=state_to_proto(job.status),
        answer=job.answer or "", error=job.error or "", created_at=timestamp(job.created_at),
        report_markdown=report_markdown, lane=lane_to_proto(job.lane),
        batch_id=getattr(job, "batch_id", None) or "", started_at=timestamp(getattr(job, "started_at", None)),
        finished_at=timestamp(getattr(job, "finished_at", None)), steps=steps, tool_calls=tool_calls,
    )


def _counts(batch: Any) -> dict[str, int]:
    counts = getattr(batch, "counts", None)
    if isinstance(counts, Mapping):
        return {str(k): int(v) for k, v in counts.items()}
    return {state: int(getattr(batch, state, 0) or 0) for state in _STATES}


def batch_to_proto(batch: Any) -> research_pb2.Batch:
    """``batch`` is a store BatchInfo (counts by state as ``counts`` or one attribute per state)."""
    counts = _counts(batch)
    total = int(getattr(batch, "total", 0) or sum(counts.values()))
    terminal = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
    finished = getattr(batch, "is_finished", None)
    return research_pb2.Batch(
        id=batch.id, name=getattr(batch, "name", None) or "", mode=mode_to_proto(batch.mode),
        lane=lane_to_proto(batch.lane), created_at=timestamp(batch.created_at), total=total,
        queued=counts.get("queued", 0), running=counts.get("running", 0),
        succeeded=counts.get("succeeded", 0), failed=counts.get("failed", 0),
        cancelled=counts.get("cancelled", 0),
        done=bool(finished) if finished is not None else total > 0 and terminal >= total,
    )


def progress_to_proto(event: Any, job_id: str = "") -> research_pb2.Progress:
    """``event`` is a store EventInfo of stream ``job:<id>`` (payload as ``event_payload`` writes)."""
    payload: Mapping[str, Any] = event.payload or {}
    data = payload.get("data") or {}
    step_data = payload.get("step") or (data.get("step") if isinstance(data, Mapping) else None)
    msg = research_pb2.Progress(
        event_index=event.index, kind=event.kind, job_id=str(payload.get("job_id") or job_id),
        elapsed_s=float(payload.get("elapsed_s") or 0.0), message=str(payload.get("message") or ""),
        state=state_to_proto(payload.get("state")),
    )
    if isinstance(step_data, Mapping):
        msg.step.CopyFrom(step_to_proto(step_from_dict(step_data)))
    elif event.kind == "step" and isinstance(data, Mapping):
        msg.step.CopyFrom(_step_summary(data, payload.get("tool_calls") or []))
    return msg


_TARGET_ARG = {"search_urls": "query", "query_url": "url"}


def _step_summary(data: Mapping[str, Any], calls: list[Any]) -> common_pb2.Step:
    """The Step of a worker's step event, which carries the turn's facts and a summary of its
    calls ({name, target, ok, error}) rather than the whole step."""
    tool_calls = []
    for i, call in enumerate(c for c in calls if isinstance(c, Mapping)):
        name = str(call.get("name") or "")
        target = call.get("target")
        arguments = {_TARGET_ARG[name]: target} if name in _TARGET_ARG and target else {}
        tool_calls.append(common_pb2.ToolCall(
            index=i, name="" if name == "?" else name, ok=bool(call.get("ok")),
            error=str(call.get("error") or ""), arguments_json=json.dumps(arguments, ensure_ascii=False)))
    return common_pb2.Step(
        index=int(data.get("index") or 0), text=str(data.get("text") or ""),
        answer=str(data.get("answer") or ""),
        tool_calls=tool_calls, completion_tokens=int(data.get("completion_tokens") or 0),
        finish_reason=str(data.get("finish_reason") or ""), model_s=float(data.get("model_s") or 0.0),
        tools_s=float(data.get("tools_s") or 0.0), overhead_s=float(data.get("overhead_s") or 0.0),
    )


def batch_progress_to_proto(event: Any, batch: Any) -> research_pb2.BatchProgress:
    """An event of stream ``batch:<id>`` with the batch's counts after it."""
    payload: Mapping[str, Any] = event.payload or {}
    return research_pb2.BatchProgress(
        event_index=event.index, job_id=str(payload.get("job_id") or ""),
        state=state_to_proto(payload.get("state")), batch=batch_to_proto(batch),
    )


def report_to_proto(report: Any, job_id: str, report_id: str = "") -> synthesis_pb2.Report:
    """``report`` is a fathom.synthesis.report.Report."""
    sections = [
        synthesis_pb2.SectionStats(
            heading=s.title, citations=len(s.citations),
            sentences=int(getattr(s, "sentences", 0) or 0),
            cited_sentences=int(getattr(s, "cited_sentences", 0) or 0),
        )
        for s in report.sections
    ]
    return synthesis_pb2.Report(
        job_id=job_id, markdown=report.markdown, plan=report.plan or "", sources=list(report.sources),
        valid_citations=int(report.citation_count),
        invalid_citations_removed=report.invalid_citations_removed, words=report.word_count,
        sections=sections, report_id=report_id,
    )
