"""``fathom serve synthesis``: the SynthesisService process.

The synthesizer model role is loaded once at startup and owned by this process (closed on stop);
each call synthesizes a job's stored trajectory and stores the report where every process reads it.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import grpc

from fathom.core.config import Settings
from fathom.rpc.server import run_service
from fathom.rpc.servicers.synthesis import SERVICE_NAME, SynthesisServicer, register


async def main(settings: Settings, address: str | None = None, metrics_port: int | None = None) -> None:
    from fathom.research.runtime import build_synthesizer, open_store
    from fathom.research.worker import synthesize_job

    stack = AsyncExitStack()
    try:
        store = open_store(settings, stack)
        synthesizer = build_synthesizer(settings, stack)
    except BaseException:
        await stack.aclose()
        raise

    async def synthesize(job_id: str) -> tuple[Any, str]:
        return await synthesize_job(job_id, store, synthesizer), ""

    servicer = SynthesisServicer(synthesize)

    def add(server: grpc.aio.Server) -> None:
        register(server, servicer)

    await run_service(settings, name="synthesis", register=add, service_names=[SERVICE_NAME],
                      address=address or settings.plane.synthesis_address, metrics_port=metrics_port,
                      on_stop=stack.aclose)
