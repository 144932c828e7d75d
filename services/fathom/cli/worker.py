"""``fathom worker``: a Celery worker of the plane for some queues and a lane.

It runs the threads pool, so every task of the process shares one asyncio loop, one fetch chain (one
browser pool) and one extractor model (``fathom.queue.worker_runtime``). A worker of both lanes reads
``X.live`` before ``X.train``: live work first, training whenever live is idle.
"""

from __future__ import annotations

import os
import socket

import typer

from fathom.cli.output import print_error
from fathom.core.config import get_settings
from fathom.core.logging import configure_logging

# Threads per queue (their sum when a worker serves several): tool calls are I/O-bound and share
# one loop; synthesis and reward hold a model each.
# Threads per queue. A research task mostly waits (policy stream, tool results) on the worker's one
# event loop, so one worker holds many jobs; fetch/search threads share one browser pool and index.
DEFAULT_CONCURRENCY = {"fetch": 8, "search": 8, "research": 64, "synthesis": 2, "reward": 4}


def parse_queues(text: str) -> list[str]:
    """``fetch,search`` -> ``["fetch", "search"]``; ValueError naming what is wrong."""
    from fathom.queue.names import QUEUES

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"--queues is empty: expected some of {', '.join(QUEUES)}")
    unknown = [n for n in names if n not in QUEUES]
    if unknown:
        listed = ", ".join(repr(u) for u in unknown)
        raise ValueError(f"unknown queue {listed}: expected some of {', '.join(QUEUES)}")
    return list(dict.fromkeys(names))


def node_name(queues: list[str], lane: str, pid: int | None = None) -> str:
    """The Celery node name ``fathom worker`` runs under (the image health check pings it)."""
    return f"{'+'.join(queues)}.{lane}@{socket.gethostname()}-{os.getpid() if pid is None else pid}"


def worker_argv(queues: list[str], lane: str, concurrency: int | None, loglevel: str) -> list[str]:
    """The Celery worker command line for these choices."""
    from fathom.queue.names import worker_queues

    celery_queues = worker_queues(queues, lane)
    threads = concurrency or sum(DEFAULT_CONCURRENCY[q] for q in queues)
    return ["worker", "--pool=threads", f"--concurrency={threads}", "-Q", ",".join(celery_queues),
            "-n", node_name(queues, lane), f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        queues: str = typer.Option(
            ..., "--queues", "-q", help="Comma-separated: research,search,fetch,synthesis,reward."
        ),
        lane: str = typer.Option("both", "--lane", help="live, train or both (live first)."),
        concurrency: int | None = typer.Option(
            None, "--concurrency", "-c", min=1, help="Threads (default: per queue)."
        ),
        metrics_port: int | None = typer.Option(None, "--metrics-port", help="Prometheus /metrics port."),
        loglevel: str = typer.Option("INFO", "--loglevel", help="Log level."),
    ) -> None:
        """Run a Celery worker of the plane (threads pool) for QUEUES of LANE."""
        from fathom.queue.names import LANE_CHOICES

        try:
            names = parse_queues(queues)
            if lane not in LANE_CHOICES:
                raise ValueError(f"unknown lane {lane!r}: expected one of {', '.join(LANE_CHOICES)}")
        except ValueError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
        settings = get_settings()
        configure_logging(loglevel, settings.log_json, process_name=f"worker-{'+'.join(names)}")
        port = metrics_port if metrics_port is not None else settings.plane.metrics_port
        if port is not None:
            from fathom.core.metrics import start_metrics_server

            start_metrics_server(port)
        from fathom.queue.app import get_celery_app

        get_celery_app().worker_main(worker_argv(names, lane, concurrency, loglevel))
