"""Trajectory dataclasses to table rows and back, field for field.

Log-probabilities may be ``-inf`` (a token outside top-p, a forced token); strict JSON has no
infinities, so non-finite values travel as the strings ``"-Infinity"``, ``"Infinity"``, ``"NaN"``.
PostgreSQL's JSONB keeps numbers as ``numeric``, which has no negative zero, so ``-0.0`` travels
as ``"-0"``: the token record comes back bit for bit.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, cast

from fathom.agent.trajectory import Step, StopReason, ToolCall, Trajectory
from fathom.core.errors import StoreError
from fathom.store.columns import utc
from fathom.store.models import PageSnapshotRecord, StepRecord, ToolCallRecord, TrajectoryRecord
from fathom.tools.fetch.base import PageSnapshot

_SPECIAL_FLOATS = {"-Infinity": -math.inf, "Infinity": math.inf, "NaN": math.nan, "-0": -0.0}


def encode_logprobs(values: list[float] | None) -> list[float | str] | None:
    if values is None:
        return None
    out: list[float | str] = []
    for v in values:
        f = float(v)
        if f == 0.0 and math.copysign(1.0, f) < 0:
            out.append("-0")
        elif math.isfinite(f):
            out.append(f)
        else:
            out.append("NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity"))
    return out


def decode_logprobs(values: list[Any] | None) -> list[float] | None:
    if values is None:
        return None
    return [_SPECIAL_FLOATS[v] if isinstance(v, str) else float(v) for v in values]


def step_row(step: Step) -> dict[str, Any]:
    return {
        "index": int(step.index),
        "text": step.text,
        "think": step.think,
        "answer": step.answer,
        "token_ids": None if step.token_ids is None else [int(t) for t in step.token_ids],
        "logprobs": encode_logprobs(step.logprobs),
        "prompt_tokens": int(step.prompt_tokens),
        "completion_tokens": int(step.completion_tokens),
        "tool_response_tokens": int(step.tool_response_tokens),
        "finish_reason": step.finish_reason,
        "model_s": float(step.model_s),
        "tools_s": float(step.tools_s),
        "overhead_s": float(step.overhead_s),
        "forced_final": bool(step.forced_final),
        "meta": dict(step.meta),
    }


def tool_call_row(call: ToolCall) -> dict[str, Any]:
    return {
        "index": int(call.index),
        "name": call.name,
        "arguments": dict(call.arguments),
        "raw": call.raw,
        "error": call.error,
        "result": call.result,
        "ok": bool(call.ok),
        "elapsed_s": float(call.elapsed_s),
        "snapshot_sha256": call.snapshot_sha256,
        "meta": dict(call.meta),
    }


def tool_call_from(row: ToolCallRecord) -> ToolCall:
    return ToolCall(
        index=row.index,
        name=row.name,
        arguments=dict(row.arguments or {}),
        raw=row.raw,
        error=row.error,
        result=row.result,
        ok=row.ok,
        elapsed_s=row.elapsed_s,
        snapshot_sha256=row.snapshot_sha256,
        meta=dict(row.meta or {}),
    )


def step_from(row: StepRecord) -> Step:
    return Step(
        index=row.index,
        text=row.text,
        think=row.think,
        tool_calls=[tool_call_from(c) for c in sorted(row.tool_calls, key=lambda c: c.index)],
        answer=row.answer,
        token_ids=None if row.token_ids is None else list(row.token_ids),
        logprobs=decode_logprobs(row.logprobs),
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        tool_response_tokens=row.tool_response_tokens,
        finish_reason=row.finish_reason,
        model_s=row.model_s,
        tools_s=row.tools_s,
        overhead_s=row.overhead_s,
        forced_final=row.forced_final,
        meta=dict(row.meta or {}),
    )


def trajectory_from(row: TrajectoryRecord) -> Trajectory:
    return Trajectory(
        question=row.question,
        prompt=row.prompt,
        steps=[step_from(s) for s in sorted(row.steps, key=lambda s: s.index)],
        answer=row.answer,
        stop_reason=cast(StopReason | None, row.stop_reason),
        total_tokens=row.total_tokens,
        model=row.model,
        meta=dict(row.meta or {}),
    )


# -- page snapshots ---------------------------------------------------------------------------

_SNAPSHOT_FIELDS = ("sha256", "url", "final_url", "status", "content_type", "fetched_at", "fetcher",
                    "extractor_version", "size")


def snapshot_row(snap: PageSnapshot) -> dict[str, Any]:
    sha = snap.sha256.lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise StoreError(f"page snapshot of {snap.url}: sha256 {snap.sha256!r} is not 64 hex digits")
    return {
        "sha256": sha,
        "url": snap.url,
        "final_url": snap.final_url,
        "status": int(snap.status),
        "content_type": snap.content_type,
        "fetched_at": utc(snap.fetched_at),
        "fetcher": snap.fetcher,
        "extractor_version": snap.extractor_version,
        "size": int(snap.size),
        "encoding": snap.encoding,
        "truncated": bool(snap.truncated),
    }


def snapshot_from_dict(data: dict[str, Any]) -> PageSnapshot:
    """A ``PageSnapshot`` from its dict form (``dataclasses.asdict`` or JSON, where ``fetched_at``
    is an ISO 8601 string). Keys beyond the snapshot's fields are ignored."""
    missing = [k for k in _SNAPSHOT_FIELDS if data.get(k) is None]
    if missing:
        raise StoreError(f"page snapshot {data.get('url')!r} lacks {', '.join(missing)}")
    fetched = data["fetched_at"]
    if isinstance(fetched, str):
        try:
            fetched = datetime.fromisoformat(fetched)
        except ValueError as exc:
            raise StoreError(f"page snapshot {data['url']!r}: bad fetched_at {fetched!r}") from exc
    if not isinstance(fetched, datetime):
        raise StoreError(f"page snapshot {data['url']!r}: fetched_at must be a datetime or ISO string")
    try:
        return PageSnapshot(
            sha256=str(data["sha256"]),
            url=str(data["url"]),
            final_url=str(data["final_url"]),
            status=int(data["status"]),
            content_type=str(data["content_type"]),
            fetched_at=fetched,
            fetcher=str(data["fetcher"]),
            extractor_version=str(data["extractor_version"]),
            size=int(data["size"]),
            encoding=None if data.get("encoding") is None else str(data["encoding"]),
            truncated=bool(data.get("truncated", False)),
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"page snapshot {data['url']!r}: {exc}") from exc


def snapshot_from(row: PageSnapshotRecord) -> PageSnapshot:
    return PageSnapshot(
        sha256=row.sha256,
        url=row.url,
        final_url=row.final_url,
        status=row.status,
        content_type=row.content_type,
        fetched_at=row.fetched_at,
        fetcher=row.fetcher,
        extractor_version=row.extractor_version,
        size=row.size,
        encoding=row.encoding,
        truncated=row.truncated,
    )


def export_step(step: Step) -> dict[str, Any]:
    """A step and its tool calls as plain JSON-safe dicts (log-probs encoded as stored)."""
    return {**step_row(step), "tool_calls": [tool_call_row(c) for c in step.tool_calls]}
