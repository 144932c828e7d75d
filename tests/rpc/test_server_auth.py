"""The shared server plumbing over real sockets: auth, health, reflection, errors, TLS, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from fathom.core.config import Settings
from fathom.core.errors import ConfigError, InvalidArgument, QuotaExceeded, Unauthenticated
from fathom.reward.judge import ExactJudge
from fathom.reward.labels import EmbeddingLabeller
from fathom.reward.service import RewardScorer
from fathom.rpc.auth import current_client_id, load_tokens, match_token
from fathom.rpc.clients import SynthesisClient, ToolsClient, channel
from fathom.rpc.gen import reward_pb2, reward_pb2_grpc, synthesis_pb2
from fathom.rpc.servicers import reward, synthesis, tools
from fathom.rpc.status import error_from_rpc
from fathom.synthesis.report import Report, ReportSection
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

TOKENS = "alice:tok-alice-123,bob:tok-bob-456"


def _report(text: str) -> Report:
    section = ReportSection(title="Answer", text=text, citations=["http://example.test/a"])
    return Report(question="q", plan="", markdown=f"## Answer\n{text}", sections=[section],
                  sources=["http://example.test/a"], invalid_citations_removed=0,
                  sentences_without_citation=0,
                  citations_per_section={"Answer": 1}, word_count=len(text.split()), model="test")


def _who_am_i_servicer() -> synthesis.SynthesisServicer:
    """A real SynthesisServicer whose synthesize step reports the authenticated client id."""

    async def synthesize(job_id: str) -> tuple[Report, str]:
        return _report(f"client={current_client_id.get()}"), f"r-{job_id}"

    return synthesis.SynthesisServicer(synthesize)


def _register_all(tools_servicer: tools.ToolsServicer | None = None) -> Any:
    def register(server: grpc.aio.Server) -> None:
        scorer = RewardScorer(ExactJudge(), EmbeddingLabeller(Settings()), Settings())
        reward.register(server, reward.RewardServicer(scorer))
        synthesis.register(server, _who_am_i_servicer())
        if tools_servicer is not None:
            tools.register(server, tools_servicer)

    return register


NAMES = [reward.SERVICE_NAME, synthesis.SERVICE_NAME]


def _with(settings: Settings, **plane: Any) -> Settings:
    return settings.model_copy(update={"plane": settings.plane.model_copy(update=plane)})


def test_load_tokens_from_env_string_and_file(settings: Settings, tmp_path: Path) -> None:
    from pydantic import SecretStr

    file = tmp_path / "tokens"
    file.write_text("# mounted secret\ncarol:tok-carol\n\n  dave : tok-dave \n")
    tokens = load_tokens(_with(settings, auth_tokens=SecretStr(TOKENS), auth_tokens_file=file))
    assert tokens == {"tok-alice-123": "alice", "tok-bob-456": "bob", "tok-carol": "carol",
                      "tok-dave": "dave"}
    assert match_token(tokens, "tok-bob-456") == "bob"
    assert match_token(tokens, "tok-bob-45") is None
    file.write_text("no-colon-here\n")
    with pytest.raises(ConfigError, match="entry 1") as err:
        load_tokens(_with(settings, auth_tokens_file=file))
    assert "no-colon-here" not in str(err.value)  # a malformed line may be a secret: never echoed


async def test_auth_refuses_missing_and_wrong_tokens_health_stays_open(settings: Settings,
                                                                       start_server: Any) -> None:
    from pydantic import SecretStr

    secured = _with(settings, auth_tokens=SecretStr(TOKENS))
    running = await start_server(secured, _register_all(), NAMES)

    # health and reflection without any token
    async with grpc.aio.insecure_channel(running.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", *NAMES):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        listed: set[str] = set()
        async for response in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        ):
            listed |= {s.name for s in response.list_services_response.service}
        assert set(NAMES) | {"grpc.health.v1.Health"} <= listed

    # no token, then a wrong one: UNAUTHENTICATED with ErrorInfo, typed on the client side
    for token in (None, "tok-alice-12", "tok-alice-1234"):
        client_settings = _with(settings, client_token=SecretStr(token) if token else None)
        async with SynthesisClient(client_settings, running.address) as client:
            with pytest.raises(Unauthenticated) as err:
                await client.synthesize("job-1", timeout=5)
            assert err.value.reason == "UNAUTHENTICATED"
            assert err.value.metadata["grpc_code"] == "UNAUTHENTICATED"

    # the right token: the servicer sees who called
    for token, client_id in (("tok-alice-123", "alice"), ("tok-bob-456", "bob")):
        async with SynthesisClient(_with(settings, client_token=SecretStr(token)), running.address) as client:
            report = await client.synthesize("job-1", timeout=5)
        assert report.job_id == "job-1" and report.report_id == "r-job-1"
        assert f"client={client_id}" in report.markdown
        assert report.sections[0].citations == 1 and report.valid_citations == 1


async def test_auth_off_without_tokens(settings: Settings, start_server: Any) -> None:
    running = await start_server(settings, _register_all(), NAMES)
    async with SynthesisClient(settings, running.address) as client:
        report = await client.synthesize("job-2", timeout=5)
    assert "client=" in report.markdown


async def test_reward_scores_and_refuses_bad_requests_with_error_info(settings: Settings,
                                                                     start_server: Any) -> None:
    running = await start_server(settings, _register_all(), NAMES)
    async with channel(settings, running.address) as ch:
        stub = reward_pb2_grpc.RewardServiceStub(ch)
        request = reward_pb2.ScoreRequest(question="q", answer="a", gold_answers=["A"])
        got = await stub.Score(request, timeout=5)
        assert (got.reward, got.verdict, got.judge_model) == (0.9, reward_pb2.VERDICT_CORRECT, "exact")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.Score(reward_pb2.ScoreRequest(stage=7), timeout=5)  # type: ignore[arg-type]
        typed = error_from_rpc(bad.value)
        assert isinstance(typed, InvalidArgument) and typed.reason == "UNKNOWN_REWARD_STAGE"


class _NothingQueued:
    """A runner factory that records any use: bad requests must be refused before a queue is touched."""

    def __init__(self) -> None:
        self.lanes: list[str] = []

    def __call__(self, lane: str) -> Any:
        self.lanes.append(lane)
        raise AssertionError("a malformed request reached the tool queue")


async def test_tools_refuse_malformed_requests_before_queueing(settings: Settings, start_server: Any) -> None:
    factory = _NothingQueued()
    running = await start_server(settings, _register_all(tools.ToolsServicer(factory)), [tools.SERVICE_NAME])
    async with ToolsClient(settings, running.address) as client:
        cases = [
            (client.search_urls("   "), "EMPTY_FIELD"),
            (client.search_urls("q", top_k=21), "TOP_K_OUT_OF_RANGE"),
            (client.search_urls("q", top_k=-1), "TOP_K_OUT_OF_RANGE"),
            (client.search_urls("q" * 1001), "FIELD_TOO_LONG"),
            (client.query_url("", "goal"), "EMPTY_FIELD"),
            (client.query_url("http://a.test/" + "x" * 5000, "goal"), "FIELD_TOO_LONG"),
            (client.query_url("http://a.test/", ""), "EMPTY_FIELD"),
            (client.fetch("http://a.test/", call_id="bad id with spaces"), "BAD_CALL_ID"),
        ]
        for call, reason in cases:
            with pytest.raises(InvalidArgument) as err:
                await call
            assert err.value.reason == reason
        with pytest.raises(InvalidArgument) as lane_err:
            await _raw_bad_lane(client)  # an unknown lane enum value, sent raw
        assert lane_err.value.reason == "UNKNOWN_LANE"
    assert factory.lanes == []


async def _raw_bad_lane(client: ToolsClient) -> None:
    from fathom.rpc.gen import tools_pb2

    try:
        await client.stub.SearchUrls(tools_pb2.SearchUrlsRequest(query="q", lane=9), timeout=5)  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None


async def test_message_size_limit_is_resource_exhausted(settings: Settings, start_server: Any) -> None:
    small = _with(settings, max_message_bytes=4096)
    factory = _NothingQueued()
    running = await start_server(small, _register_all(tools.ToolsServicer(factory)), [tools.SERVICE_NAME])
    # A client with a bigger limit than the server's: the server refuses the message.
    async with ToolsClient(settings, running.address) as client:
        with pytest.raises(QuotaExceeded) as err:
            await client.search_urls("q" * 10_000)
    assert err.value.metadata["grpc_code"] == "RESOURCE_EXHAUSTED"
    assert factory.lanes == []


async def test_bad_address_and_port_in_use(settings: Settings, start_server: Any) -> None:
    from fathom.rpc.server import build_server

    with pytest.raises(ConfigError, match="bad address"):
        build_server(settings, register=_register_all(), service_names=NAMES, address="localhost")
    running = await start_server(settings, _register_all(), NAMES)
    with pytest.raises(ConfigError, match="cannot listen"):
        build_server(settings, register=_register_all(), service_names=NAMES, address=running.address)


async def test_tls_and_mutual_tls(settings: Settings, start_server: Any, certs: Any) -> None:
    tls = _with(settings, tls_cert=certs.server_cert, tls_key=certs.server_key)
    running = await start_server(tls, _register_all(), NAMES)
    # A client trusting our CA reaches it over TLS; a plaintext client cannot.
    async with SynthesisClient(_with(settings, tls_ca=certs.ca), f"localhost:{running.port}") as client:
        assert (await client.synthesize("job-3", timeout=10)).job_id == "job-3"
    async with SynthesisClient(settings, f"127.0.0.1:{running.port}") as plain:
        with pytest.raises(Exception) as plain_err:
            await plain.synthesize("job-3", timeout=3)
    assert plain_err.value.metadata["grpc_code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")  # type: ignore[attr-defined]
    # A client trusting another CA refuses the server.
    async with SynthesisClient(_with(settings, tls_ca=certs.other_ca), f"localhost:{running.port}") as wrong:
        with pytest.raises(Exception) as wrong_err:
            await wrong.synthesize("job-3", timeout=3)
    assert wrong_err.value.metadata["grpc_code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")  # type: ignore[attr-defined]

    mtls = _with(tls, tls_client_ca=certs.ca)
    running_m = await start_server(mtls, _register_all(), NAMES)
    address = f"localhost:{running_m.port}"
    good = _with(settings, tls_ca=certs.ca, tls_client_cert=certs.client_cert,
                 tls_client_key=certs.client_key)
    async with SynthesisClient(good, address) as client:
        assert (await client.synthesize("job-4", timeout=10)).job_id == "job-4"
    for refused in (_with(settings, tls_ca=certs.ca),  # no client certificate
                    _with(settings, tls_ca=certs.ca, tls_client_cert=certs.rogue_cert,
                          tls_client_key=certs.rogue_key)):  # one from a CA the server does not trust
        async with SynthesisClient(refused, address) as client:
            with pytest.raises(Exception) as err:
                await client.synthesize("job-4", timeout=3)
        assert err.value.metadata["grpc_code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")  # type: ignore[attr-defined]


async def test_graceful_shutdown_drains_in_flight_calls(settings: Settings) -> None:
    """SIGTERM path without the signal: stop_event set while a slow call is in flight; the call
    finishes within grace, health turned NOT_SERVING first, on_stop ran last."""
    from fathom.rpc.server import build_server, serve

    release = asyncio.Event()
    order: list[str] = []

    async def slow(job_id: str) -> tuple[Report, str]:
        order.append("call_started")
        await release.wait()
        return _report("done"), "r"

    def register(server: grpc.aio.Server) -> None:
        synthesis.register(server, synthesis.SynthesisServicer(slow))

    server, health, port = build_server(settings, register=register, service_names=[synthesis.SERVICE_NAME],
                                        address="127.0.0.1:0")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(server, health, grace_s=10, stop_event=stop,
                                        on_drain=lambda: order.append("drain"),
                                        on_stop=lambda: order.append("stopped")))
    async with SynthesisClient(settings, f"127.0.0.1:{port}") as client:
        call = asyncio.create_task(client.synthesize("job-5", timeout=20))
        while "call_started" not in order:
            await asyncio.sleep(0.01)
        stop.set()
        while "drain" not in order:
            await asyncio.sleep(0.01)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), None)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        release.set()
        report = await call
    assert report.markdown.endswith("done")
    await asyncio.wait_for(serving, 10)
    assert order == ["call_started", "drain", "stopped"]
    assert isinstance(report, synthesis_pb2.Report)
