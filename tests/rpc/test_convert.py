"""Conversions between the agent/store dataclasses and the fathom.v1 protos: round trips."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

import pytest
from fathom.agent.trajectory import Step, ToolCall
from fathom.core.errors import InvalidArgument
from fathom.rpc import convert
from fathom.rpc.gen import common_pb2
from fathom.store.records import BatchInfo, EventInfo, JobInfo


def _step() -> Step:
    calls = [
        ToolCall(index=0, name="search_urls", arguments={"query": "penicillin", "top_k": 5}, raw="{...}",
                 result="1. Fleming", ok=True, elapsed_s=0.25),
        ToolCall(index=1, name="query_url", arguments={"url": "http://x.test/a", "goal": "year"}, raw="{}",
                 result="1928", ok=True, elapsed_s=1.5, snapshot_sha256="ab" * 32),
        ToolCall(index=2, name=None, arguments={}, raw="garbage", error="not JSON"),
    ]
    return Step(index=3, text="<think>x</think> \\boxed{1928}", think="x", tool_calls=calls, answer="1928",
                token_ids=[1, 2, 3], logprobs=[-0.5, -0.25, -0.125], prompt_tokens=100, completion_tokens=3,
                tool_response_tokens=40, finish_reason="stop", model_s=0.5, tools_s=1.75, overhead_s=0.01,
                forced_final=True,
                meta={"stop": "<tool_response>", "token_mask": [1, 0, 1],
                      "segments": [{"kind": "sampled", "ids": [1], "logprobs": [-0.5]},
                                   {"kind": "prefill", "ids": [2], "logprobs": None}]})


def test_step_round_trip() -> None:
    step = _step()
    back = convert.step_from_proto(convert.step_to_proto(step))
    assert back.tool_calls[0].arguments == {"query": "penicillin", "top_k": 5}
    assert back.tool_calls[2].name is None and back.tool_calls[2].error == "not JSON"
    # raw is not carried by the proto (the arguments JSON stands in for it); everything else is.
    for original, copy in zip(step.tool_calls, back.tool_calls, strict=True):
        copy.raw = original.raw
    assert asdict(back) == asdict(step)
    assert convert.step_from_dict(asdict(step)) == step


def test_step_meta_that_is_not_a_json_object_is_refused() -> None:
    from fathom.core.errors import InvalidArgument
    from fathom.rpc.gen import common_pb2

    for bad in ("[1, 2]", "{not json", "7"):
        with pytest.raises(InvalidArgument):
            convert.step_from_proto(common_pb2.Step(index=0, text="t", meta_json=bad))


def test_step_without_optional_parts() -> None:
    step = Step(index=0, text="t", think=None, tool_calls=[], answer=None)
    assert convert.step_from_proto(convert.step_to_proto(step)) == step


def test_tool_call_arguments_must_be_a_json_object() -> None:
    for bad in ("[1, 2]", "{not json"):
        with pytest.raises(InvalidArgument) as err:
            convert.tool_call_from_proto(common_pb2.ToolCall(name="x", arguments_json=bad))
        assert err.value.reason == "BAD_ARGUMENTS_JSON"


def test_enums_both_ways_and_unknown_values() -> None:
    for mode in ("search", "report"):
        assert convert.mode_from_proto(convert.mode_to_proto(mode)) == mode
    assert convert.mode_from_proto(common_pb2.MODE_UNSPECIFIED) == "report"
    for state in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert convert.state_from_proto(convert.state_to_proto(state)) == state
    assert convert.state_from_proto(common_pb2.JOB_STATE_UNSPECIFIED) is None
    for lane in ("live", "train"):
        assert convert.lane_from_proto(convert.lane_to_proto(lane)) == lane
    assert convert.lane_from_proto(common_pb2.LANE_UNSPECIFIED) == "live"
    assert convert.lane_filter_from_proto(common_pb2.LANE_UNSPECIFIED) is None
    for fn, reason in ((convert.mode_from_proto, "UNKNOWN_MODE"), (convert.state_from_proto, "UNKNOWN_STATE"),
                       (convert.lane_from_proto, "UNKNOWN_LANE")):
        with pytest.raises(InvalidArgument) as err:
            fn(99)
        assert err.value.reason == reason and err.value.metadata["value"] == "99"


def test_job_batch_and_progress() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5)
    job = JobInfo(id="j1", kind="research", question="q?", mode="report", status="succeeded", lane="train",
                  created_at=created, batch_id="b1", answer="42", finished_at=created.replace(tzinfo=UTC))
    msg = convert.job_to_proto(job, steps=4, tool_calls=7, report_markdown="# r")
    assert (msg.id, msg.state, msg.mode, msg.lane) == ("j1", common_pb2.JOB_STATE_SUCCEEDED,
                                                       common_pb2.MODE_REPORT, common_pb2.LANE_TRAIN)
    assert msg.created_at == "2026-01-02T03:04:05Z" and msg.finished_at == msg.created_at
    assert (msg.steps, msg.tool_calls, msg.report_markdown) == (4, 7, "# r")
    assert (msg.batch_id, msg.answer) == ("b1", "42")
    assert msg.started_at == "" and msg.error == ""

    counts = {"queued": 1, "running": 1, "succeeded": 2, "failed": 0, "cancelled": 0}
    batch = BatchInfo(id="b1", name="n", mode="search", lane="live", priority=0, client_id="c",
                      client_request_id=None, total=4, created_at=created, counts=counts, done=2)
    b = convert.batch_to_proto(batch)
    assert (b.total, b.queued, b.running, b.succeeded, b.done) == (4, 1, 1, 2, False)
    finished = BatchInfo(id="b1", name="n", mode="search", lane="live", priority=0, client_id="c",
                         client_request_id=None, total=2, created_at=created,
                         counts={"succeeded": 1, "failed": 1}, done=2)
    assert convert.batch_to_proto(finished).done

    step = _step()
    event = EventInfo(stream="job:j1", index=5, kind="step", created_at=created,
                      payload={"job_id": "j1", "elapsed_s": 2.5, "state": "running", "message": "",
                               "data": {"step": asdict(step)}})
    p = convert.progress_to_proto(event)
    assert (p.event_index, p.kind, p.job_id, p.state) == (5, "step", "j1", common_pb2.JOB_STATE_RUNNING)
    assert convert.step_from_proto(p.step).answer == "1928"
    # What the research worker publishes: the turn's facts and a summary of its calls.
    summary = EventInfo(stream="job:j1", index=7, kind="step", created_at=created, payload={
        "job_id": "j1", "elapsed_s": 3.0, "state": "running", "turn": 2,
        "tool_calls": [{"name": "search_urls", "target": "penicillin", "ok": True, "error": None},
                       {"name": "?", "target": "", "ok": False, "error": "bad call"}],
        "data": {"answer": None, "model_s": 0.5, "tools_s": 1.0, "overhead_s": 0.1, "index": 1,
                 "text": "thinking", "completion_tokens": 12, "finish_reason": "stop"}})
    s = convert.progress_to_proto(summary).step
    assert (s.index, s.text, s.completion_tokens, s.model_s) == (1, "thinking", 12, 0.5)
    assert [(c.name, c.ok, c.error, c.arguments_json) for c in s.tool_calls] == [
        ("search_urls", True, "", '{"query": "penicillin"}'), ("", False, "bad call", "{}")]
    plain = EventInfo(stream="job:j1", index=6, kind="job_done", created_at=created,
                      payload={"message": "1928", "state": "succeeded"})
    q = convert.progress_to_proto(plain, "j1")
    assert (q.job_id, q.message, q.state) == ("j1", "1928", common_pb2.JOB_STATE_SUCCEEDED)
    assert not q.HasField("step")
    bp = convert.batch_progress_to_proto(
        EventInfo(stream="batch:b1", index=0, kind="job_ended", created_at=created,
                  payload={"job_id": "j1", "state": "failed"}), batch)
    assert (bp.job_id, bp.state, bp.batch.total) == ("j1", common_pb2.JOB_STATE_FAILED, 4)
