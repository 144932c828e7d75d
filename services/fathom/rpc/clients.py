"""Channels and thin clients of the plane's gRPC services.

``channel`` applies what every client needs once: TLS / mutual TLS from settings, message limits,
keepalive, and an interceptor that sends the bearer token (``plane.client_token``) and the trace id
bound in structlog's contextvars (or a new one), so one trace id follows a job across processes.
Client methods raise the typed ``fathom.core.errors`` a failed call stands for (``error_from_rpc``).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from fathom.core.config import Settings
from fathom.core.logging import bind_trace, current_trace_id
from fathom.rpc import convert
from fathom.rpc.gen import (
    research_pb2,
    research_pb2_grpc,
    synthesis_pb2,
    synthesis_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
)
from fathom.rpc.server import TRACE_KEY, check_address
from fathom.rpc.status import error_from_rpc
from fathom.rpc.tls import channel_credentials

if TYPE_CHECKING:
    from fathom.rpc.policy_client import PolicyClient

__all__ = ["GatewayClient", "PolicyClient", "SynthesisClient", "ToolsClient", "channel", "trace_id"]

T = TypeVar("T")


def trace_id() -> str:
    """The trace id bound in this context, or a new one (bound from now on)."""
    return current_trace_id() or bind_trace()


def _metadata(details: Any, token: str | None) -> Any:
    metadata = list(details.metadata or [])
    keys = {k for k, _ in metadata}
    if token and "authorization" not in keys:
        metadata.append(("authorization", f"Bearer {token}"))
    if TRACE_KEY not in keys:
        metadata.append((TRACE_KEY, trace_id()))
    return details._replace(metadata=metadata)


class _OutgoingUnary(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds ``authorization`` and ``x-fathom-trace-id`` to unary calls. (grpc.aio files an
    interceptor under its first matching kind only: one class per kind.)"""

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_metadata(client_call_details, self.token), request)


class _OutgoingStream(grpc.aio.UnaryStreamClientInterceptor):
    """The same for server-streaming calls (Watch, RunTrajectory)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_metadata(client_call_details, self.token), request)


def channel(settings: Settings, address: str) -> grpc.aio.Channel:
    """A channel to ``address`` (HOST:PORT) with TLS, limits, keepalive, token and trace id."""
    check_address(address)
    plane = settings.plane
    options = [
        ("grpc.max_send_message_length", plane.max_message_bytes),
        ("grpc.max_receive_message_length", plane.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    token = plane.client_token.get_secret_value() if plane.client_token is not None else None
    interceptors: list[grpc.aio.ClientInterceptor] = [_OutgoingUnary(token), _OutgoingStream(token)]
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


async def _call(call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None


async def _stream(call: Any) -> AsyncIterator[Any]:
    try:
        async for item in call:
            yield item
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc) from None
    finally:
        call.cancel()


class _Client:
    """Owns its channel: ``async with`` or ``await close()``."""

    def __init__(self, settings: Settings, address: str) -> None:
        self.address = address
        self.channel = channel(settings, address)

    async def close(self) -> None:
        await self.channel.close()

    async def aclose(self) -> None:
        await self.close()

    async def __aenter__(self: Any) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class GatewayClient(_Client):
    """ResearchService; methods mirror ``JobGateway`` and return protos."""

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        super().__init__(settings, address or settings.plane.gateway_address)
        self.stub = research_pb2_grpc.ResearchServiceStub(self.channel)

    async def submit(self, question: str, mode: str = "report", lane: str = "live", *, priority: int = 0,
                     deadline_s: float = 0.0, client_request_id: str = "",
                     timeout: float | None = 30.0) -> research_pb2.Job:
        request = research_pb2.SubmitRequest(
            question=question, mode=convert.mode_to_proto(mode), lane=convert.lane_to_proto(lane),
            priority=priority, deadline_s=deadline_s, client_request_id=client_request_id,
        )
        return await _call(self.stub.Submit(request, timeout=timeout))

    async def get(self, job_id: str, *, timeout: float | None = 30.0) -> research_pb2.Job:
        return await _call(self.stub.Get(research_pb2.GetRequest(job_id=job_id), timeout=timeout))

    async def cancel(self, job_id: str, *, timeout: float | None = 30.0) -> research_pb2.Job:
        return await _call(self.stub.Cancel(research_pb2.GetRequest(job_id=job_id), timeout=timeout))

    async def list(self, state: str | None = None, lane: str | None = None, page_size: int = 50,
                   page_token: str = "", *, timeout: float | None = 30.0) -> research_pb2.ListResponse:
        from fathom.rpc.gen import common_pb2

        request = research_pb2.ListRequest(
            state=convert.state_to_proto(state), lane=convert.lane_to_proto(lane),
            page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
        )
        return await _call(self.stub.List(request, timeout=timeout))

    def watch(self, job_id: str, from_event: int = 0, *,
              timeout: float | None = None) -> AsyncIterator[research_pb2.Progress]:
        request = research_pb2.WatchRequest(job_id=job_id, from_event=from_event)
        return _stream(self.stub.Watch(request, timeout=timeout))

    async def submit_batch(self, items: builtins.list[dict[str, str]], mode: str = "report",
                           lane: str = "train", *, priority: int = 0, name: str = "",
                           client_request_id: str = "",
                           timeout: float | None = 120.0) -> research_pb2.Batch:
        request = research_pb2.SubmitBatchRequest(
            items=[research_pb2.BatchItem(question=i.get("question", ""), id=i.get("id", ""),
                                          gold_answer=i.get("gold_answer", "")) for i in items],
            mode=convert.mode_to_proto(mode), lane=convert.lane_to_proto(lane), priority=priority,
            name=name, client_request_id=client_request_id,
        )
        return await _call(self.stub.SubmitBatch(request, timeout=timeout))

    async def get_batch(self, batch_id: str, *, timeout: float | None = 30.0) -> research_pb2.Batch:
        request = research_pb2.GetBatchRequest(batch_id=batch_id)
        return await _call(self.stub.GetBatch(request, timeout=timeout))

    async def cancel_batch(self, batch_id: str, *, timeout: float | None = 60.0) -> research_pb2.Batch:
        request = research_pb2.GetBatchRequest(batch_id=batch_id)
        return await _call(self.stub.CancelBatch(request, timeout=timeout))

    def watch_batch(self, batch_id: str, from_event: int = 0, *,
                    timeout: float | None = None) -> AsyncIterator[research_pb2.BatchProgress]:
        request = research_pb2.WatchBatchRequest(batch_id=batch_id, from_event=from_event)
        return _stream(self.stub.WatchBatch(request, timeout=timeout))


class SynthesisClient(_Client):
    def __init__(self, settings: Settings, address: str | None = None) -> None:
        super().__init__(settings, address or settings.plane.synthesis_address)
        self.stub = synthesis_pb2_grpc.SynthesisServiceStub(self.channel)

    async def synthesize(self, job_id: str, timeout: float | None = None) -> synthesis_pb2.Report:
        request = synthesis_pb2.SynthesizeRequest(job_id=job_id, deadline_s=timeout or 0.0)
        return await _call(self.stub.Synthesize(request, timeout=timeout))


class ToolsClient(_Client):
    def __init__(self, settings: Settings, address: str | None = None) -> None:
        super().__init__(settings, address or settings.plane.tools_address)
        self.stub = tools_pb2_grpc.ToolsServiceStub(self.channel)

    async def search_urls(self, query: str, top_k: int = 10, *, lane: str = "live", call_id: str = "",
                          timeout: float | None = 60.0) -> tools_pb2.ToolResult:
        request = tools_pb2.SearchUrlsRequest(query=query, top_k=top_k, lane=convert.lane_to_proto(lane),
                                              call_id=call_id)
        return await _call(self.stub.SearchUrls(request, timeout=timeout))

    async def query_url(self, url: str, goal: str, *, lane: str = "live", call_id: str = "",
                        timeout: float | None = 120.0) -> tools_pb2.ToolResult:
        request = tools_pb2.QueryUrlRequest(url=url, goal=goal, lane=convert.lane_to_proto(lane),
                                            call_id=call_id)
        return await _call(self.stub.QueryUrl(request, timeout=timeout))

    async def fetch(self, url: str, *, lane: str = "live", call_id: str = "",
                    timeout: float | None = 60.0) -> tools_pb2.FetchResponse:
        request = tools_pb2.FetchRequest(url=url, lane=convert.lane_to_proto(lane), call_id=call_id)
        return await _call(self.stub.Fetch(request, timeout=timeout))


def __getattr__(name: str) -> Any:
    """``PolicyClient`` lives in ``fathom.rpc.policy_client`` (its own owner); imported on first use."""
    if name == "PolicyClient":
        from fathom.rpc.policy_client import PolicyClient

        return PolicyClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
