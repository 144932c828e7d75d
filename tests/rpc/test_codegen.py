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
