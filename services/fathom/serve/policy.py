"""``fathom serve policy``: the PolicyService process.

It owns one policy backend (built once here, weights loaded before the port opens, closed on
stop), one Celery producer app and one tool-result waiter shared by every trajectory: each
trajectory's tool calls go to the ``search``/``fetch`` queues of its lane through a
``QueueToolRunner`` and are awaited without blocking the event loop.

A trainer keeps it on its latest weights through LoadWeights: it writes safetensors into
``plane.weights_dir`` (a volume both mount) and this process loads them into its backend, between
batches; only the transformers backend can take weights (others answer UNIMPLEMENTED).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fathom.core.config import Settings
from fathom.core.logging import get_logger

log = get_logger(__name__)


async def main(settings: Settings, address: str | None = None, metrics_port: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain (``plane.grace_s``) and close what was built."""
    from fathom.agent.policy_service import PolicyService
    from fathom.models.factory import new_backend
    from fathom.queue.app import make_celery
    from fathom.queue.results import ResultWaiter
    from fathom.queue.runner import QueueToolRunner
    from fathom.rpc.server import build_server, serve
    from fathom.rpc.servicers.policy import SERVICE_NAME, register

    address = address or settings.plane.policy_address
    port = metrics_port if metrics_port is not None else settings.plane.metrics_port
    if port is not None:
        from fathom.core.metrics import start_metrics_server

        start_metrics_server(port)
    backend = new_backend("policy", settings)
    waiter = ResultWaiter(settings.plane.resolved_redis_url)
    try:
        await asyncio.to_thread(_load, backend)  # weights in memory before the port opens
        celery_app = make_celery(settings)

        def tools_factory(lane: str, trajectory_id: str, job_id: str | None = None) -> Any:
            return QueueToolRunner(settings, lane, job_id=job_id, trajectory_id=trajectory_id,
                                   celery_app=celery_app, waiter=waiter)

        service = await asyncio.to_thread(PolicyService, backend, tools_factory, settings)
        server, health, bound = build_server(settings, register=register(service),
                                             service_names=[SERVICE_NAME], address=address)
        weights_dir = settings.plane.weights_dir
        log.info("policy_service_ready", address=address, port=bound, model=backend.name,
                 policy_version=service.policy_version, concurrency=settings.policy.concurrency,
                 weights_dir=str(weights_dir) if weights_dir else None,
                 weight_sync=weights_dir is not None and callable(getattr(backend, "load_weights", None)))
        await serve(server, health, grace_s=settings.plane.grace_s)
    finally:
        await waiter.aclose()
        await backend.aclose()


def _load(backend: Any) -> None:
    load = getattr(backend, "load", None)
    if callable(load):
        load()
