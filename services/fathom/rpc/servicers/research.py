"""``ResearchService`` over ``fathom.research.gateway.JobGateway``.

Each method converts the request, calls the gateway (which validates and persists), converts back;
errors are typed and mapped by ``@maps_errors``. Watch streams end early when the server drains:
with UNAVAILABLE and the next event index, so a client reconnects elsewhere and misses nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from fathom.core.errors import Unavailable
from fathom.rpc import convert
from fathom.rpc.auth import current_client_id
from fathom.rpc.gen import research_pb2, research_pb2_grpc
from fathom.rpc.status import maps_errors

if TYPE_CHECKING:
    from fathom.research.gateway import JobGateway

T = TypeVar("T")
SERVICE_NAME = research_pb2.DESCRIPTOR.services_by_name["ResearchService"].full_name


async def until_stopped(items: AsyncIterator[T], stopping: asyncio.Event) -> AsyncIterator[T]:
    """Items of ``items`` until it ends or ``stopping`` is set (then Unavailable)."""
    stop_wait = asyncio.ensure_future(stopping.wait())
    try:
        while True:
            nxt = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                raise Unavailable("the server is shutting down: watch again from the next event index",
                                  reason="SERVER_DRAINING")
            try:
                yield nxt.result()
            except StopAsyncIteration:
                return
    finally:
        stop_wait.cancel()
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class ResearchServicer(research_pb2_grpc.ResearchServiceServicer):
    def __init__(self, gateway: JobGateway) -> None:
        self.gateway = gateway
        self.stopping = asyncio.Event()

    def drain(self) -> None:
        """Tell every open Watch to end (the server is stopping)."""
        self.stopping.set()

    async def _job(self, job: Any) -> research_pb2.Job:
        """One job with its progress counts and, once written, its report."""
        store = self.gateway.store
        steps, tool_calls = await asyncio.to_thread(store.job_progress, job.id)
        markdown = ""
        if job.mode == "report" and job.status == "succeeded":
            report = await asyncio.to_thread(store.get_report, job.id)
            markdown = report.markdown if report is not None else ""
        return convert.job_to_proto(job, steps=steps, tool_calls=tool_calls, report_markdown=markdown)

    @maps_errors
    async def Submit(self, request: research_pb2.SubmitRequest, context: Any) -> research_pb2.Job:
        job = await self.gateway.submit(
            request.question, convert.mode_from_proto(request.mode), convert.lane_from_proto(request.lane),
            request.priority, request.deadline_s or None, current_client_id.get(),
            request.client_request_id or None,
        )
        return await self._job(job)

    @maps_errors
    async def Get(self, request: research_pb2.GetRequest, context: Any) -> research_pb2.Job:
        return await self._job(await self.gateway.get(request.job_id))

    @maps_errors
    async def Cancel(self, request: research_pb2.GetRequest, context: Any) -> research_pb2.Job:
        return await self._job(await self.gateway.cancel(request.job_id))

    @maps_errors
    async def List(self, request: research_pb2.ListRequest, context: Any) -> research_pb2.ListResponse:
        jobs, token = await self.gateway.list(
            convert.state_from_proto(request.state), convert.lane_filter_from_proto(request.lane),
            request.page.page_size, request.page.page_token or None,
        )
        return research_pb2.ListResponse(jobs=[convert.job_to_proto(j) for j in jobs],
                                         next_page_token=token or "")

    @maps_errors
    async def Watch(self, request: research_pb2.WatchRequest, context: Any) -> AsyncIterator[Any]:
        # The client's cancellation or deadline cancels this task, and with it the gateway's iterator.
        events = self.gateway.watch(request.job_id, request.from_event)
        async for event in until_stopped(events, self.stopping):
            yield convert.progress_to_proto(event, request.job_id)

    @maps_errors
    async def SubmitBatch(self, request: research_pb2.SubmitBatchRequest, context: Any) -> research_pb2.Batch:
        items = [{"question": i.question, "id": i.id, "gold_answer": i.gold_answer} for i in request.items]
        batch = await self.gateway.submit_batch(
            items, convert.mode_from_proto(request.mode), convert.lane_from_proto(request.lane),
            request.priority, request.name, current_client_id.get(), request.client_request_id or None,
        )
        return convert.batch_to_proto(batch)

    @maps_errors
    async def GetBatch(self, request: research_pb2.GetBatchRequest, context: Any) -> research_pb2.Batch:
        return convert.batch_to_proto(await self.gateway.get_batch(request.batch_id))

    @maps_errors
    async def CancelBatch(self, request: research_pb2.GetBatchRequest, context: Any) -> research_pb2.Batch:
        return convert.batch_to_proto(await self.gateway.cancel_batch(request.batch_id))

    @maps_errors
    async def WatchBatch(self, request: research_pb2.WatchBatchRequest, context: Any) -> AsyncIterator[Any]:
        events = self.gateway.watch_batch(request.batch_id, request.from_event)
        batch = await self.gateway.get_batch(request.batch_id)
        async for event in until_stopped(events, self.stopping):
            counts = (event.payload or {}).get("counts")
            if isinstance(counts, dict):  # the counts after this event, carried by the event
                counts = {str(k): int(v) for k, v in counts.items()}
                done = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
                batch = dataclasses.replace(batch, counts=counts, done=done)
            else:
                batch = await self.gateway.get_batch(request.batch_id)
            yield convert.batch_progress_to_proto(event, batch)


def register(server: grpc.aio.Server, servicer: ResearchServicer) -> None:
    research_pb2_grpc.add_ResearchServiceServicer_to_server(servicer, server)
