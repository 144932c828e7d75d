"""``fathom serve tools``: the ToolsService process; calls go onto the search / fetch queues."""

from __future__ import annotations

import grpc

from fathom.core.config import Settings
from fathom.rpc.server import run_service
from fathom.rpc.servicers.tools import SERVICE_NAME, QueueCaller, ToolsServicer, register


async def main(settings: Settings, address: str | None = None, metrics_port: int | None = None) -> None:
    from fathom.queue.app import make_celery
    from fathom.queue.runner import QueueToolRunner

    celery = make_celery(settings)

    def runner(lane: str) -> QueueCaller:
        return QueueToolRunner(settings, lane, celery_app=celery)

    servicer = ToolsServicer(runner)

    async def stop() -> None:
        await servicer.aclose()
        celery.close()

    def add(server: grpc.aio.Server) -> None:
        register(server, servicer)

    await run_service(settings, name="tools", register=add, service_names=[SERVICE_NAME],
                      address=address or settings.plane.tools_address, metrics_port=metrics_port,
                      on_stop=stop)
