"""``fathom serve reward``: the RewardService process (contract, health, auth; scoring in issue 8)."""

from __future__ import annotations

import grpc

from fathom.core.config import Settings
from fathom.rpc.server import run_service
from fathom.rpc.servicers.reward import SERVICE_NAME, RewardServicer, register


async def main(settings: Settings, address: str | None = None, metrics_port: int | None = None) -> None:
    servicer = RewardServicer()

    def add(server: grpc.aio.Server) -> None:
        register(server, servicer)

    await run_service(settings, name="reward", register=add, service_names=[SERVICE_NAME],
                      address=address or settings.plane.reward_address, metrics_port=metrics_port)
