"""``fathom jobs watch|get|list|cancel`` and ``remote_research`` (``fathom research --remote``): the
gateway's ResearchService over gRPC.

The address and token are the configured ones (``FATHOM_PLANE__GATEWAY_ADDRESS``,
``FATHOM_PLANE__CLIENT_TOKEN``), or those of the stack running in the default stack dir. stdout holds
results only (JSON with ``--json``); progress goes to stderr (cli/output.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import typer
from rich.markup import escape

from fathom.cli.output import command_group, err_console, out_console, print_error
from fathom.core.config import Settings, get_settings
from fathom.core.errors import FathomError, Unavailable
from fathom.rpc.gen import common_pb2, research_pb2, research_pb2_grpc

app = command_group("Research jobs: from the store (list, show) or the gateway (watch, get, cancel, page).")

T = TypeVar("T")
TERMINAL = {common_pb2.JOB_STATE_SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED}
RECONNECT_DELAY_S = 0.5
RECONNECT_FOR_S = 120.0  # give up watching after the gateway has been away this long


def client_settings() -> Settings:
    from fathom.serve.stack import running_stack_settings

    return running_stack_settings(get_settings())


class Gateway:
    """An aio channel to the gateway with the bearer token on every call (TLS when configured)."""

    def __init__(self, settings: Settings) -> None:
        from fathom.rpc.tls import channel_credentials

        plane = settings.plane
        limit = plane.max_message_bytes
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        creds = channel_credentials(settings)
        self.channel = (grpc.aio.secure_channel(plane.gateway_address, creds, options=options) if creds
                        else grpc.aio.insecure_channel(plane.gateway_address, options=options))
        token = plane.client_token.get_secret_value() if plane.client_token else None
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self.stub = research_pb2_grpc.ResearchServiceStub(self.channel)

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def call(self, method: str, request: Any, timeout: float = 30.0) -> Any:
        try:
            return await getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _service_error(exc) from exc

    def stream(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.metadata)


def _service_error(exc: grpc.aio.AioRpcError) -> FathomError:
    from fathom.rpc.status import error_from_rpc

    return error_from_rpc(exc)


def run(coro: Awaitable[T]) -> T:
    """Run one gateway coroutine; a service error becomes ``error: ...`` on stderr and exit 1."""
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except FathomError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc


def state_name(state: int) -> str:
    return common_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def job_dict(job: research_pb2.Job) -> dict[str, Any]:
    return {
        "id": job.id, "state": state_name(job.state), "mode": common_pb2.Mode.Name(job.mode).removeprefix(
            "MODE_").lower(), "lane": common_pb2.Lane.Name(job.lane).removeprefix("LANE_").lower(),
        "question": job.question, "answer": job.answer, "error": job.error, "batch_id": job.batch_id,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "steps": job.steps, "tool_calls": job.tool_calls, "report_markdown": job.report_markdown,
    }


async def watch_progress(
    gw: Gateway, job_id: str, from_event: int = 0,
) -> AsyncIterator[research_pb2.Progress]:
    """Every event of the job from ``from_event`` on, across reconnects: on UNAVAILABLE (a gateway
    restart, a network blip) it reconnects with the index after the last event seen, so nothing is
    missed and nothing seen twice. Ends after the job's terminal event."""
    next_index = from_event
    away_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        try:
            request = research_pb2.WatchRequest(job_id=job_id, from_event=next_index)
            async for ev in gw.stream("Watch", request):
                away_since = None
                next_index = ev.event_index + 1
                yield ev
                if ev.state in TERMINAL and ev.kind in ("job_done", "job_failed", "job_cancelled"):
                    return
            return  # the server ended the stream: the job is over
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise _service_error(exc) from exc
            away_since = away_since or loop.time()
            if loop.time() - away_since > RECONNECT_FOR_S:
                why = f"gateway unavailable for {RECONNECT_FOR_S:.0f} s: {exc.details()}"
                raise Unavailable(why) from exc
            err_console.print(f"[dim]gateway unavailable, reconnecting from event {next_index} …[/dim]")
            await asyncio.sleep(RECONNECT_DELAY_S)


def print_progress(ev: research_pb2.Progress) -> None:
    """One line per event on stderr, like local mode's progress."""
    t = f"[dim]{ev.elapsed_s:7.1f}s[/dim]"
    if ev.kind == "step":
        calls = ", ".join(f"{c.name}{'' if c.ok else ' [red]✗[/red]'}" for c in ev.step.tool_calls)
        if not calls:
            calls = f"answer: {escape(ev.step.answer)}" if ev.step.answer else "no tool call"
        err_console.print(f"{t} turn {ev.step.index + 1:>2}  tokens {ev.step.completion_tokens:>6}  "
                          f"model {ev.step.model_s:5.1f}s tools {ev.step.tools_s:5.2f}s  {calls}")
    elif ev.kind == "job_failed":
        err_console.print(f"{t} [red]failed[/red]: {escape(ev.message)}")
    else:
        err_console.print(f"{t} {escape(ev.kind)}{': ' + escape(ev.message) if ev.message else ''}")


async def submit_and_watch(
    settings: Settings, question: str, mode: str, lane: str,
    on_event: Callable[[research_pb2.Progress], None] = print_progress,
) -> research_pb2.Job:
    """Submit one job, stream its progress to ``on_event``, return the finished job."""
    from fathom.rpc.convert import lane_to_proto, mode_to_proto

    async with Gateway(settings) as gw:
        job = await gw.call("Submit", research_pb2.SubmitRequest(
            question=question, mode=mode_to_proto(mode), lane=lane_to_proto(lane)))  # type: ignore[arg-type]
        err_console.print(f"[dim]job {job.id} submitted to {settings.plane.gateway_address}[/dim]")
        async for ev in watch_progress(gw, job.id):
            on_event(ev)
        return await gw.call("Get", research_pb2.GetRequest(job_id=job.id))  # type: ignore[no-any-return]


def remote_research(question: str, mode: str, lane: str, settings: Settings, as_json: bool = False) -> None:
    """``fathom research --remote``: the job runs on the plane; progress on stderr, then the same result
    lines as local mode (``answer:``, ``job:``, ``report:``), or the JSON document with ``as_json``.
    The report is written to data dir/reports/<job id>.md, so ``grep '^report: '`` finds a file."""
    from fathom.cli.research import _print_summary

    job = run(submit_and_watch(settings, question, mode, lane))
    report_path = None
    if job.report_markdown:
        report_path = settings.data_dir / "reports" / f"{job.id}.md"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(job.report_markdown)
    summary = {
        "job_id": job.id, "state": state_name(job.state), "answer": job.answer or None, "error": job.error,
        "stop_reason": state_name(job.state), "turns": job.steps, "tool_calls": job.tool_calls,
        "report_markdown": str(report_path.resolve()) if report_path else None,
    }
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    _print_summary(summary, err_console if as_json else out_console)
    if job.state != common_pb2.JOB_STATE_SUCCEEDED:
        print_error(f"job {job.id} ended {state_name(job.state)}: {job.error or '(no error recorded)'}")
        raise typer.Exit(1)


@app.command("watch")
def watch(
    job_id: str,
    from_event: int = typer.Option(0, "--from", min=0, help="First event index wanted (resume after N-1)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per event on stdout."),
) -> None:
    """Stream a job's progress until it ends; reconnects on its own when the gateway goes away."""
    from google.protobuf.json_format import MessageToDict

    async def main() -> research_pb2.Job:
        async with Gateway(client_settings()) as gw:
            async for ev in watch_progress(gw, job_id, from_event):
                if as_json:
                    sys.stdout.write(json.dumps(MessageToDict(ev)) + "\n")
                    sys.stdout.flush()
                else:
                    print_progress(ev)
            return await gw.call("Get", research_pb2.GetRequest(job_id=job_id))  # type: ignore[no-any-return]

    job = run(main())
    if not as_json:
        out_console.print(f"job {job.id}: {state_name(job.state)}  answer: {escape(job.answer or '(none)')}")


@app.command("get")
def get(job_id: str) -> None:
    """One job as JSON."""
    async def main() -> research_pb2.Job:
        async with Gateway(client_settings()) as gw:
            return await gw.call("Get", research_pb2.GetRequest(job_id=job_id))  # type: ignore[no-any-return]

    sys.stdout.write(json.dumps(job_dict(run(main())), indent=2) + "\n")


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job; prints the job as JSON."""
    async def main() -> research_pb2.Job:
        async with Gateway(client_settings()) as gw:
            return await gw.call("Cancel", research_pb2.GetRequest(job_id=job_id))  # type: ignore[no-any-return]

    sys.stdout.write(json.dumps(job_dict(run(main())), indent=2) + "\n")


@app.command("page")
def list_jobs(
    state: str | None = typer.Option(None, "--state", help="queued|running|succeeded|failed|cancelled"),
    lane: str | None = typer.Option(None, "--lane", help="live|train"),
    page_size: int = typer.Option(50, "--page-size", min=1, max=1000),
    page_token: str = typer.Option("", "--page-token"),
) -> None:
    """Jobs from the gateway, newest first, one page as JSON: ``{"jobs": [...], "next_page_token": ...}``
    (``fathom jobs list`` reads the store directly)."""
    from fathom.rpc.convert import lane_to_proto, state_to_proto

    if state is not None and state_to_proto(state) == common_pb2.JOB_STATE_UNSPECIFIED:
        raise typer.BadParameter(f"unknown state {state!r}", param_hint="--state")
    if lane is not None and lane not in ("live", "train"):
        raise typer.BadParameter(f"unknown lane {lane!r}", param_hint="--lane")

    async def main() -> research_pb2.ListResponse:
        async with Gateway(client_settings()) as gw:
            request = research_pb2.ListRequest(
                state=state_to_proto(state), lane=lane_to_proto(lane),  # type: ignore[arg-type]
                page=common_pb2.PageRequest(page_size=page_size, page_token=page_token))
            return await gw.call("List", request)  # type: ignore[no-any-return]

    reply = run(main())
    doc = {"jobs": [job_dict(j) for j in reply.jobs], "next_page_token": reply.next_page_token}
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _add_store_commands() -> None:
    """``fathom jobs list|show`` read the store itself (local mode, or any host with the database URL)."""
    from fathom.cli.research import jobs_list, jobs_show

    app.command("list")(jobs_list)
    app.command("show")(jobs_show)


_add_store_commands()
