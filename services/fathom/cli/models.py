"""`fathom models ...`: prepare the bundled model, list the configured roles, serve a role over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time

import typer
from rich.markup import escape
from rich.table import Table

from fathom.cli.output import command_group, out_console, print_error
from fathom.core.config import BUNDLED_MODEL, get_settings
from fathom.core.errors import ConfigError, ModelError

app = command_group("Model backends: bundled model, roles, OpenAI-compatible server.")


@app.command("prepare")
def prepare() -> None:
    """Convert the bundled SmolLM2-135M-Instruct GGUF into a ready-to-load model (once; ~20-40 s)."""
    from fathom.models.bundled import is_prepared, prepare_bundled

    models_dir = get_settings().models_dir
    already = is_prepared(models_dir)
    started = time.perf_counter()
    try:
        path = prepare_bundled(models_dir)
    except ModelError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    seconds = time.perf_counter() - started
    state = "already prepared" if already else f"prepared in {seconds:.1f} s"
    out_console.print(f"{BUNDLED_MODEL}: {escape(str(path))} ({state})")


@app.command("list")
def list_roles(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """The four model roles: backend, model, endpoint, and whether the bundled model is prepared."""
    from fathom.models.bundled import bundled_model_dir, is_prepared
    from fathom.models.factory import ROLES, role_settings

    settings = get_settings()
    rows = []
    for role in ROLES:
        cfg = role_settings(role, settings)
        bundled = cfg.backend == "transformers" and cfg.model == BUNDLED_MODEL
        rows.append(
            {
                "role": role,
                "backend": cfg.backend,
                "model": cfg.model,
                "endpoint": cfg.base_url if cfg.backend == "openai" else None,
                "api": cfg.api if cfg.backend == "openai" else None,
                "device": cfg.device if cfg.backend == "transformers" else None,
                "path": str(bundled_model_dir(settings.models_dir)) if bundled else None,
                "prepared": is_prepared(settings.models_dir) if bundled else None,
                "temperature": cfg.temperature,
                "max_new_tokens": cfg.max_new_tokens,
                "context_tokens": cfg.context_tokens,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Model roles")
    for column in ("role", "backend", "model", "endpoint / device", "prepared"):
        table.add_column(column)
    for row in rows:
        prepared = {True: "yes", False: "no", None: "-"}[row["prepared"]]  # type: ignore[index]
        where = row["endpoint"] or row["device"] or ""
        table.add_row(*(escape(str(v)) for v in (row["role"], row["backend"], row["model"], where, prepared)))
    out_console.print(table)


@app.command("serve")
def serve(
    role: str = typer.Option("policy", "--role", help="Which role's model to serve."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    name: str | None = typer.Option(
        None, "--name", help="Model name clients send (default: the role's model)."
    ),
) -> None:
    """Serve a role's model as an OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)."""
    from fathom.models.factory import build_backend, close_backends, default_params
    from fathom.models.server import ModelServer

    settings = get_settings()
    try:
        backend = build_backend(role, settings)
        defaults = default_params(role, settings)
    except (ConfigError, ModelError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc

    async def run() -> None:
        server = ModelServer(backend, model_name=name, defaults=defaults)
        load = getattr(backend, "load", None)
        if load is not None:  # load weights before accepting requests, not on the first one
            await asyncio.to_thread(load)
        # Containers stop us with SIGTERM: shut down as cleanly as on Ctrl-C.
        task = asyncio.current_task()
        if task is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        bound = await server.start(host, port)
        out_console.print(f"serving {server.model_name!r} on http://{host}:{bound}/v1")
        try:
            await server.serve_forever()
        finally:
            await server.stop()
            await close_backends()

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(run())
