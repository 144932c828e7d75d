"""``fathom serve reward``: the RewardService process.

It builds the answer judge, the step labeller (``reward.judge``, ``reward.labeller``) and the job
store once at startup and owns them: every call shares them (the LLM judge's verdict cache, the
embedding model loaded once), and they are closed when the server stops. The store lets a request
with ``trajectory_id`` keep its reward with that trajectory, where the trainer and reports read it.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import grpc

from fathom.core.config import Settings
from fathom.core.logging import get_logger
from fathom.rpc.server import run_service
from fathom.rpc.servicers.reward import SERVICE_NAME, RewardServicer, register

log = get_logger(__name__)


async def main(settings: Settings, address: str | None = None, metrics_port: int | None = None) -> None:
    from fathom.models.factory import close_backends
    from fathom.research.runtime import open_store
    from fathom.reward.service import build_scorer

    stack = AsyncExitStack()
    stack.push_async_callback(close_backends)  # the judge model role, when the judge or labeller is an LLM
    try:
        store = await asyncio.to_thread(open_store, settings, stack)
        scorer = build_scorer(settings, store)
    except BaseException:
        await stack.aclose()
        raise
    log.info("reward_service_built", judge=scorer.judge.name, labeller=scorer.labeller.name,
             stage=settings.reward.stage)
    servicer = RewardServicer(scorer)

    def add(server: grpc.aio.Server) -> None:
        register(server, servicer)

    await run_service(settings, name="reward", register=add, service_names=[SERVICE_NAME],
                      address=address or settings.plane.reward_address, metrics_port=metrics_port,
                      on_stop=stack.aclose)
