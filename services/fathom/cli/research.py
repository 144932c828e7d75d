"""``fathom research`` (local, or ``--remote`` on the plane's gateway), the store-reading
``fathom jobs list|show`` (added to the ``fathom jobs`` group of cli/jobs.py) and ``fathom report``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fathom.cli.output import CliConsole, command_group, err_console, out_console, print_error
from fathom.core.config import get_settings
from fathom.core.errors import FathomError
from fathom.core.logging import configure_logging
from fathom.research.events import ProgressEvent

jobs_app = command_group("Inspect stored research jobs.")  # its commands join cli/jobs.py's group


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _print_event(ev: ProgressEvent) -> None:
    """Progress goes to stderr: stdout is kept for the result (the JSON document with --json)."""
    t = f"[dim]{ev.elapsed_s:7.1f}s[/dim]"
    if ev.kind == "job_started":
        err_console.print(
            f"{t} [bold]job {ev.job_id[:8]}[/bold] started ({ev.data.get('mode')}): {escape(ev.message)}"
        )
    elif ev.kind == "step":
        calls = ", ".join(
            f"{c['name']}({escape(_short(c['target'], 50))}){'' if c['ok'] else ' [red]✗[/red]'}"
            for c in ev.tool_calls
        )
        if not calls:
            answer = ev.data.get("answer")
            calls = f"answer: {escape(_short(str(answer), 60))}" if answer else "no tool call"
        err_console.print(
            f"{t} turn {ev.turn:>2}  tokens {ev.total_tokens:>6}  "
            f"model {ev.data.get('model_s', 0):5.1f}s tools {ev.data.get('tools_s', 0):5.2f}s  {calls}"
        )
    elif ev.kind == "synthesis_started":
        err_console.print(f"{t} synthesizing the report…")
    elif ev.kind == "synthesis_done":
        err_console.print(
            f"{t} report written: {ev.data.get('words')} words, "
            f"{ev.data.get('invalid_citations_removed')} invalid citations removed"
        )
    elif ev.kind == "job_done":
        err_console.print(f"{t} [green]done[/green]")
    elif ev.kind == "job_failed":
        err_console.print(f"{t} [red]failed[/red]: {escape(ev.message)}")


def research(
    question: str = typer.Argument(..., help="The question to research."),
    mode: str = typer.Option("report", "--mode", help="search: short answer; report: answer + cited report"),
    out: Path | None = typer.Option(None, "--out", help="Folder for reports (default: data dir/reports)"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON at the end."),
    remote: bool = typer.Option(False, "--remote",
                                help="Run on the plane: submit to the gateway (FATHOM_PLANE__GATEWAY_ADDRESS "
                                     "or the running `fathom stack`) and stream its progress."),
    lane: str = typer.Option("live", "--lane", help="--remote only: live or train"),
) -> None:
    """Run one research job: the search agent investigates, the synthesizer writes the report."""
    from fathom.research.runtime import LocalRuntime

    settings = get_settings()
    configure_logging(settings.log_level if settings.log_level != "INFO" else "WARNING", settings.log_json)
    if mode not in ("search", "report"):
        raise typer.BadParameter("mode must be 'search' or 'report'")
    if lane not in ("live", "train"):
        raise typer.BadParameter("lane must be 'live' or 'train'")
    if remote:
        from fathom.cli.jobs import client_settings, remote_research

        try:
            remote_research(question, mode, lane, client_settings(), as_json)
        except FathomError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from exc
        return

    async def main() -> dict[str, Any]:
        async with LocalRuntime(settings, reports_dir=out) as rt:
            if rt.local_web_base:
                store = escape(settings.resolved_database_url)
                err_console.print(f"[dim]local web: {rt.local_web_base}  store: {store}[/dim]")
            job_id = await rt.service.submit(question, mode)  # type: ignore[arg-type]
            result = await rt.service.run(job_id, on_event=_print_event)
            return {
                "job_id": result.job_id,
                "answer": result.answer,
                "stop_reason": result.trajectory.stop_reason,
                "turns": len(result.trajectory.steps),
                "tool_calls": len(result.trajectory.tool_calls),
                "report_markdown": str(result.report_paths[0].resolve()) if result.report_paths else None,
                "report_json": str(result.report_paths[1].resolve()) if result.report_paths else None,
                "timings": result.timings,
            }

    try:
        summary = asyncio.run(main())
    except FathomError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    # With --json the same lines close the progress on stderr, for whoever watches the terminal.
    _print_summary(summary, err_console if as_json else out_console)


def _print_summary(summary: dict[str, Any], console: CliConsole) -> None:
    # One fact per line, label first: a script finds the report with `grep '^report: '`.
    console.print(f"\n[bold]answer:[/bold] {escape(summary['answer'] or '(none)')}")
    console.print(
        f"job: {summary['job_id']} ({summary['turns']} turns, {summary['tool_calls']} tool calls, "
        f"stop: {summary['stop_reason']})"
    )
    if summary["report_markdown"]:
        console.print(f"[bold]report:[/bold] {escape(summary['report_markdown'])}")


def _store():  # type: ignore[no-untyped-def]
    from fathom.store.db import Database
    from fathom.store.repository import JobStore

    db = Database(get_settings().resolved_database_url)
    db.migrate()
    return JobStore(db)


@jobs_app.command("list")
def jobs_list(
    status: str | None = typer.Option(None, "--status"),
    limit: int = typer.Option(20, "--limit"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List recent jobs."""
    jobs = _store().recent_jobs(status=status, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([_job_dict(j) for j in jobs], indent=2, default=str) + "\n")
        return
    table = Table("id", "status", "mode", "created", "question", "answer")
    for j in jobs:
        table.add_row(j.id[:8], j.status, j.mode, str(j.created_at)[:19], escape(_short(j.question, 50)),
                      escape(_short(j.answer or "", 30)))
    out_console.print(table)


def _job_dict(job: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(job) and not isinstance(job, type):
        return asdict(job)
    return dict(job)


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one job with its trajectory (id or unique id prefix)."""
    store = _store()
    try:
        job = store.get_job(job_id)
        traj = store.load_trajectory(job.id)
    except FathomError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    if as_json:
        shown = {"job": _job_dict(job), "trajectory": traj.to_dict() if traj else None}
        sys.stdout.write(json.dumps(shown, indent=2, default=str) + "\n")
        return
    out_console.print(f"[bold]{job.id}[/bold]  {job.status}  {job.mode}  {job.created_at}")
    out_console.print(f"Q: {escape(job.question)}")
    out_console.print(f"A: {escape(job.answer or '(none)')}")
    if traj is None:
        return
    for step in traj.steps:
        out_console.print(f"\n[bold]turn {step.index + 1}[/bold]  ({step.completion_tokens} tokens, "
                  f"model {step.model_s:.1f}s, tools {step.tools_s:.2f}s)")
        if step.think:
            out_console.print(f"[dim]think: {escape(_short(step.think, 200))}[/dim]")
        for c in step.tool_calls:
            status = "ok" if c.ok else f"error: {c.error or 'tool failed'}"
            arguments = escape(json.dumps(c.arguments, ensure_ascii=False)[:120])
            out_console.print(f"  {c.name}({arguments}) -> {escape(status)}")
        if step.answer:
            out_console.print(f"  answer: {escape(step.answer)}")


def report(job_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the stored report of a job (Markdown, or JSON with --json)."""
    store = _store()
    try:
        job = store.get_job(job_id)
        rep = store.get_report(job.id)
    except FathomError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    if rep is None:
        print_error(f"job {job.id} has no report (mode {job.mode}, status {job.status})")
        raise typer.Exit(1)
    if as_json:
        sys.stdout.write(json.dumps(rep.data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(rep.markdown + "\n")


def register(app: typer.Typer) -> None:
    app.command("research")(research)
    app.command("report")(report)
