"""``fathom stack up|status|down``: the whole distributed plane on one machine (``fathom.serve.stack``)."""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fathom.cli.output import command_group, err_console, out_console, print_error
from fathom.core.config import get_settings
from fathom.core.logging import configure_logging

app = command_group("Run every process of the distributed plane on this machine.")


def _dir(directory: Path | None) -> Path:
    from fathom.serve.stack import default_stack_dir

    return (directory or default_stack_dir(get_settings())).resolve()


@app.command("up")
def up(
    postgres: str | None = typer.Option(None, "--postgres", help="PostgreSQL URL (default: SQLite)"),
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory (default: data dir/stack)"),
    replay_model: bool = typer.Option(False, "--replay-model", help="Serve the policy from recordings."),
    foreground: bool = typer.Option(False, "--foreground", help="Stay attached; Ctrl-C stops the stack."),
    timeout_s: float = typer.Option(240.0, "--timeout", help="Seconds to wait for readiness."),
) -> None:
    """Start Redis (if none answers), the store, the local web, every gRPC service and the workers."""
    from fathom.serve.stack import STATE_FILE, Stack, StackError, StackSpec

    settings = get_settings()
    configure_logging("WARNING", settings.log_json)
    where = _dir(directory)
    if (where / STATE_FILE).exists() and any(p.alive for p in Stack.load(where).status()):
        print_error(f"a stack is already running in {where}: `fathom stack down --dir {where}` first")
        raise typer.Exit(1)
    spec = StackSpec.from_settings(settings, directory=where, postgres_url=postgres,
                                   replay_model=replay_model)
    stack = Stack(spec)
    err_console.print(f"starting {len(spec.processes)} processes in {escape(str(where))} …")
    try:
        statuses = stack.up(timeout_s=timeout_s)
    except StackError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    for st in statuses:
        port = f":{st.port}" if st.port else ""
        out_console.print(f"{st.name:<18} pid {st.pid:<8} {port:<7} log: {escape(st.log)}")
    out_console.print(f"gateway: {spec.gateway_address}  store: {escape(spec.database_url)}  "
                      f"broker: {escape(spec.broker_url)}")
    if not foreground:
        return
    _stay_attached(stack)


def _stay_attached(stack: object) -> None:
    """Foreground: wait for Ctrl-C or SIGTERM, then stop everything."""
    from fathom.serve.stack import Stack

    assert isinstance(stack, Stack)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.5)
    err_console.print("stopping the stack …")
    stack.down()


@app.command("status")
def status(
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory (default: data dir/stack)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every process of the stack: pid, alive, port, ready."""
    from fathom.serve.stack import Stack, StackError

    try:
        stack = Stack.load(_dir(directory))
    except StackError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    statuses = stack.status()
    if as_json:
        sys.stdout.write(json.dumps([asdict(s) for s in statuses], indent=2) + "\n")
    else:
        table = Table("name", "pid", "alive", "ready", "port", "metrics", "log")
        for s in statuses:
            table.add_row(s.name, str(s.pid or ""), "yes" if s.alive else "NO", "yes" if s.ready else "no",
                          str(s.port or ""), str(s.metrics_port or ""), escape(s.log))
        out_console.print(table)
    if not all(s.ready for s in statuses):
        raise typer.Exit(3)


@app.command("down")
def down(
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory (default: data dir/stack)"),
    grace_s: float = typer.Option(10.0, "--grace", help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop every process of the stack (SIGTERM, then SIGKILL after the grace period)."""
    from fathom.serve.stack import Stack, StackError

    try:
        stack = Stack.load(_dir(directory))
    except StackError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    stack.down(grace_s=grace_s)
    err_console.print(f"stack in {escape(str(stack.directory))} stopped")
