"""``fathom serve web``: the local web as its own process, on the configured origin.

Search hits, snapshots and stored reports carry the local web's URLs; served by its own process on
``settings.web.host:port`` they stay valid after the job (and the worker) that wrote them ends.
Research runtimes find it with ``ensure_local_web`` and reuse it. SIGTERM and SIGINT stop it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

from fathom.core.config import Settings
from fathom.core.errors import ConfigError
from fathom.core.logging import configure_logging, get_logger

log = get_logger(__name__)


async def main(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    *,
    index_dir: Path | None = None,
    metrics_port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the corpus (``index_dir``, else the configured or shipped sample one) until SIGTERM,
    SIGINT or ``stop`` is set. ``host``/``port`` default to ``settings.web``; ``metrics_port`` to
    ``settings.plane.metrics_port``. Raises ``ConfigError`` when the port is held (by another local
    web too: two servers cannot share a port, and the one there already serves)."""
    from fathom.corpus.web import LocalWeb, probe_local_web

    configure_logging(settings.log_level, settings.log_json, process_name="web")
    host = host or settings.web.host
    port = settings.web.port if port is None else port
    metrics_port = settings.plane.metrics_port if metrics_port is None else metrics_port
    corpus_dir = index_dir or settings.search.index_dir
    if corpus_dir is None:
        from fathom.corpus.sample import ensure_sample_index

        corpus_dir = await asyncio.to_thread(ensure_sample_index, settings)
    if port != 0 and await asyncio.to_thread(probe_local_web, host, port) is not None:
        raise ConfigError(
            f"a local web already serves on {host}:{port}; stop it or choose another port with "
            "FATHOM_WEB__PORT"
        )
    stop = stop or asyncio.Event()
    _install_signals(stop)
    if metrics_port is not None:
        from fathom.core.metrics import start_metrics_server

        start_metrics_server(metrics_port)
    # Loading the corpus takes a moment (the sample: about a second); the loop stays free for signals.
    web = await asyncio.to_thread(LocalWeb, corpus_dir, host, port, settings.web.js_share)
    web.site.standalone = True
    try:
        await asyncio.to_thread(web.start)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve the local web on {host}:{port} ({exc}); choose another port with FATHOM_WEB__PORT"
        ) from exc
    origin = web.base_url
    log.info("local_web_serving", origin=origin, corpus=web.site.corpus_id)
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(web.stop)
        log.info("local_web_stopped", origin=origin)


def _install_signals(stop: asyncio.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()

    def handle(signum: signal.Signals) -> None:
        log.info("local_web_signal", signal=signum.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)


if __name__ == "__main__":  # ``python -m fathom.serve.web``: the process without the CLI
    import sys

    from fathom.core.config import get_settings

    try:
        asyncio.run(main(get_settings()))
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
