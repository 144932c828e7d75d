"""The committed gRPC stubs are exactly what the one codegen command produces from protos/."""

from __future__ import annotations

from pathlib import Path

from fathom.rpc import codegen


def test_stubs_are_fresh(tmp_path: Path) -> None:
    written = codegen.generate(tmp_path / "gen")
    assert {p.name for p in written} >= {"research_pb2.py", "research_pb2_grpc.py", "common_pb2.py"}
    for fresh in written:
        committed = codegen.GEN_DIR / fresh.name
        assert committed.exists(), f"{committed} missing: run `make protos`"
        assert committed.read_text() == fresh.read_text(), f"{committed.name} is stale: run `make protos`"


def test_contract_round_trip() -> None:
    from fathom.rpc.gen import common_pb2, research_pb2

    job = research_pb2.Progress(
        kind="step",
        job_id="j1",
        step=common_pb2.Step(index=0, tool_calls=[common_pb2.ToolCall(name="search_urls")]),
    )
    again = research_pb2.Progress.FromString(job.SerializeToString())
    assert again.step.tool_calls[0].name == "search_urls"


def test_every_service_contract_is_generated() -> None:
    from fathom.rpc.gen import policy_pb2, research_pb2, reward_pb2, synthesis_pb2, tools_pb2

    methods = {
        research_pb2: ("ResearchService", {"Submit", "Get", "Watch", "Cancel", "List", "SubmitBatch",
                                           "GetBatch", "WatchBatch", "CancelBatch"}),
        policy_pb2: ("PolicyService", {"RunTrajectory", "ScoreTokens", "LoadWeights"}),
        tools_pb2: ("ToolsService", {"SearchUrls", "QueryUrl", "Fetch"}),
        synthesis_pb2: ("SynthesisService", {"Synthesize"}),
        reward_pb2: ("RewardService", {"Score"}),
    }
    for module, (service, names) in methods.items():
        found = {m.name for m in module.DESCRIPTOR.services_by_name[service].methods}
        assert found == names, service
    watch = research_pb2.DESCRIPTOR.services_by_name["ResearchService"].methods_by_name["Watch"]
    assert watch.server_streaming and watch.input_type.name == "WatchRequest"


def test_watch_resumes_from_an_event_index() -> None:
    from fathom.rpc.gen import common_pb2, research_pb2

    request = research_pb2.WatchRequest(job_id="j1", from_event=7)
    again = research_pb2.WatchRequest.FromString(request.SerializeToString())
    assert (again.job_id, again.from_event) == ("j1", 7)
    event = research_pb2.Progress(event_index=7, kind="job_done", state=common_pb2.JOB_STATE_SUCCEEDED)
    assert research_pb2.Progress.FromString(event.SerializeToString()).state == common_pb2.JOB_STATE_SUCCEEDED
