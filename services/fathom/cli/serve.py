"""``fathom serve gateway|policy|synthesis|reward|tools|web``: one plane process each (docs/PLANE.md).

Each runs until SIGTERM/SIGINT and then drains. A bad address or a port in use is one clear line on
stderr and exit status 2; the process modules are imported only for the service asked for.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any

import typer

from fathom.cli.output import command_group, print_error

app = command_group("Run one process of the distributed plane (gRPC services, the local web).")

ADDRESS_HELP = "HOST:PORT to listen on (default: the service's plane.*_address; port 0 = a free one)."
METRICS_HELP = "Serve Prometheus /metrics on this port (0: a free one; default: plane.metrics_port)."


def use_io_threads(settings: Any) -> None:
    """A default executor sized for many concurrent jobs' blocking calls (``plane.io_threads``)."""
    import concurrent.futures

    asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(
        settings.plane.io_threads, thread_name_prefix="fathom-io"))


def _run(service: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    from fathom.core.errors import FathomError

    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        raise typer.Exit(130) from None
    except (FathomError, OSError) as exc:
        print_error(f"fathom serve {service}: {exc}")
        raise typer.Exit(2) from exc


def _serve(service: str, address: str | None, metrics_port: int | None) -> None:
    from fathom.core.config import get_settings
    from fathom.core.errors import ConfigError
    from fathom.core.logging import configure_logging
    from fathom.rpc.server import check_address

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json, process_name=service)
    if address:
        try:  # before any model or index is loaded: a typo fails in a moment, not after a load
            check_address(address)
        except ConfigError as exc:
            print_error(f"fathom serve {service}: {exc}")
            raise typer.Exit(2) from exc
    module = importlib.import_module(f"fathom.serve.{service}")

    async def main() -> None:
        use_io_threads(settings)
        await module.main(settings, address, metrics_port)

    _run(service, main)


@app.command("gateway")
def gateway(address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
            metrics_port: int | None = typer.Option(None, "--metrics-port", help=METRICS_HELP)) -> None:
    """ResearchService: jobs and batches, the sweeper of lost work."""
    _serve("gateway", address, metrics_port)


@app.command("policy")
def policy(address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
           metrics_port: int | None = typer.Option(None, "--metrics-port", help=METRICS_HELP)) -> None:
    """PolicyService: trajectories as streams of steps."""
    _serve("policy", address, metrics_port)


@app.command("synthesis")
def synthesis(address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
              metrics_port: int | None = typer.Option(None, "--metrics-port", help=METRICS_HELP)) -> None:
    """SynthesisService: a job's trace to a cited report."""
    _serve("synthesis", address, metrics_port)


@app.command("reward")
def reward(address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
           metrics_port: int | None = typer.Option(None, "--metrics-port", help=METRICS_HELP)) -> None:
    """RewardService: scores trajectories (format, judged answer, step labels), alone or in batches."""
    _serve("reward", address, metrics_port)


@app.command("tools")
def tools(address: str | None = typer.Option(None, "--address", help=ADDRESS_HELP),
          metrics_port: int | None = typer.Option(None, "--metrics-port", help=METRICS_HELP)) -> None:
    """ToolsService: search_urls, query_url and fetch through the tool queues."""
    _serve("tools", address, metrics_port)


@app.command("web")
def web(address: str | None = typer.Option(None, "--address", help="HOST:PORT (default: web.host:web.port)."),
        metrics_port: int | None = typer.Option(None, "--metrics-port", help=METRICS_HELP)) -> None:
    """The local web that serves the sample corpus, on its configured, stable origin."""
    from fathom.core.config import get_settings
    from fathom.core.errors import ConfigError
    from fathom.core.logging import configure_logging
    from fathom.rpc.server import check_address

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    try:
        host, port = check_address(address) if address else (settings.web.host, settings.web.port)
    except ConfigError as exc:
        print_error(f"fathom serve web: {exc}")
        raise typer.Exit(2) from exc
    module = importlib.import_module("fathom.serve.web")

    async def main() -> None:
        if metrics_port is not None:
            from fathom.core.metrics import start_metrics_server

            start_metrics_server(metrics_port)
        await module.main(settings, host or settings.web.host, port)

    _run("web", main)
