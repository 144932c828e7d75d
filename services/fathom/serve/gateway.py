"""``fathom serve gateway``: the ResearchService process.

It owns what it builds (store, event bus, Celery producer, the sweeper of lost work) and closes it
on stop, after the server drained: open Watch streams are told to end first (clients resume from
their next event index elsewhere), in-flight unary calls get ``plane.grace_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

import grpc

from fathom.core.config import Settings
from fathom.core.logging import get_logger
from fathom.rpc.server import run_service
from fathom.rpc.servicers.research import SERVICE_NAME, ResearchServicer, register

log = get_logger(__name__)


async def main(settings: Settings, address: str | None = None, metrics_port: int | None = None) -> None:
    from fathom.queue.app import make_celery
    from fathom.queue.runner import CeleryEnqueuer
    from fathom.research.bus import EventBus
    from fathom.research.gateway import JobGateway
    from fathom.research.runtime import open_store
    from fathom.research.sweeper import Sweeper

    stack = AsyncExitStack()
    store = open_store(settings, stack)
    bus = EventBus(store, settings.plane.resolved_redis_url)
    stack.callback(bus.close)
    celery = make_celery(settings)
    stack.callback(celery.close)
    enqueuer = CeleryEnqueuer(celery)
    servicer = ResearchServicer(JobGateway(store, bus, enqueuer, settings))
    sweeper = asyncio.create_task(Sweeper(store, enqueuer, settings).run_forever(), name="sweeper")
    gauges = asyncio.create_task(_collect_gauges(settings, store), name="gauges")

    async def stop() -> None:
        for task in (sweeper, gauges):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await stack.aclose()
        log.info("gateway_closed")

    def add(server: grpc.aio.Server) -> None:
        register(server, servicer)

    await run_service(settings, name="gateway", register=add, service_names=[SERVICE_NAME],
                      address=address or settings.plane.gateway_address, metrics_port=metrics_port,
                      on_drain=servicer.drain, on_stop=stop)


async def _collect_gauges(settings: Settings, store: object, every_s: float = 5.0) -> None:
    """Queue depth per queue and lane (Redis broker lists) and jobs by state, for ``/metrics``: the
    gateway is the one process every deployment runs, so the shared gauges are read here."""
    from fathom.core.metrics import collect_job_states, collect_queue_depth

    redis_broker = settings.plane.broker_url.startswith(("redis://", "rediss://"))
    while True:
        try:
            if redis_broker:
                await asyncio.to_thread(collect_queue_depth, settings.plane.broker_url)
            await asyncio.to_thread(collect_job_states, store)  # type: ignore[arg-type]
        except Exception as exc:  # Redis or the store away for a moment: the next round retries
            log.warning("gauges_not_collected", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every_s)
