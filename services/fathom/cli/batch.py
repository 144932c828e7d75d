"""``fathom batch submit|status|watch|cancel|export``: bulk research jobs on the gateway.

``submit`` reads every line first and refuses the whole file on the first bad line (naming it), so a
typo on line 9,000 submits nothing; it then sends chunks of at most 10,000 items per SubmitBatch
call (each one bulk insert on the gateway). stdout carries JSON only; the progress bar is on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from fathom.cli.jobs import Gateway, client_settings, run
from fathom.cli.output import command_group, err_console, print_error
from fathom.core.config import Settings
from fathom.rpc.gen import common_pb2, research_pb2

app = command_group("Bulk research jobs: submit a JSONL file, watch, cancel, export the results.")

CHUNK = 10_000


class BatchFileError(ValueError):
    """A line of the batch file is not a usable item; nothing was submitted."""


@dataclass(frozen=True)
class Item:
    question: str
    id: str
    gold_answer: str


def read_items(path: Path, max_question_chars: int) -> list[Item]:
    """Every item of a JSONL file, or a ``BatchFileError`` naming the first bad line."""
    items: list[Item] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchFileError(f"cannot read {path}: {exc}") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        items.append(_item(line, n, len(items), max_question_chars))
    if not items:
        raise BatchFileError(f"{path}: no questions (one JSON object a line: {{\"question\": ...}})")
    return items


def _item(line: str, n: int, position: int, max_chars: int) -> Item:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BatchFileError(f"line {n}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise BatchFileError(f"line {n}: expected a JSON object, got {type(data).__name__}")
    question = data.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BatchFileError(f"line {n}: 'question' must be a non-empty string")
    if len(question) > max_chars:
        raise BatchFileError(f"line {n}: question is {len(question)} characters (at most {max_chars})")
    gold = data.get("gold_answer", data.get("answer", ""))
    if isinstance(gold, list):  # several accepted answers: kept joined for the export
        gold = " | ".join(str(g) for g in gold)
    if not isinstance(gold, (str, int, float)):
        raise BatchFileError(f"line {n}: 'answer' must be a string")
    item_id = data.get("id", position)
    return Item(question, str(item_id), str(gold))


def chunks(items: list[Item], size: int = CHUNK) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def batch_dict(batch: research_pb2.Batch) -> dict[str, Any]:
    return {
        "id": batch.id, "name": batch.name,
        "mode": common_pb2.Mode.Name(batch.mode).removeprefix("MODE_").lower(),
        "lane": common_pb2.Lane.Name(batch.lane).removeprefix("LANE_").lower(),
        "created_at": batch.created_at,
        "total": batch.total, "queued": batch.queued, "running": batch.running, "succeeded": batch.succeeded,
        "failed": batch.failed, "cancelled": batch.cancelled, "done": batch.done,
    }


async def submit_items(
    settings: Settings, items: list[Item], *, mode: str, lane: str, priority: int, name: str,
) -> list[research_pb2.Batch]:
    """One SubmitBatch per chunk; the chunk index is in the idempotency key so a retried call of the
    same file returns the same batches."""
    import hashlib

    from fathom.rpc.convert import lane_to_proto, mode_to_proto

    digest = hashlib.sha256("\n".join(f"{i.id}\t{i.question}" for i in items).encode()).hexdigest()[:24]
    batches = []
    async with Gateway(settings) as gw:
        for k, chunk in enumerate(chunks(items)):
            request = research_pb2.SubmitBatchRequest(
                items=[research_pb2.BatchItem(question=i.question, id=i.id, gold_answer=i.gold_answer)
                       for i in chunk],
                mode=mode_to_proto(mode), lane=lane_to_proto(lane), priority=priority,  # type: ignore[arg-type]
                name=name if k == 0 else f"{name} ({k + 1})", client_request_id=f"batch-{digest}-{k}",
            )
            batches.append(await gw.call("SubmitBatch", request, timeout=120.0))
            err_console.print(f"[dim]submitted {sum(b.total for b in batches)}/{len(items)}[/dim]")
    return batches


@app.command("submit")
def submit(
    file: Path = typer.Argument(..., help="JSONL: {\"question\": ..., \"id\": ..., \"answer\": ...} a line"),
    mode: str = typer.Option("search", "--mode", help="search|report"),
    lane: str = typer.Option("train", "--lane", help="live|train"),
    priority: int = typer.Option(0, "--priority", min=0, max=9),
    name: str = typer.Option("", "--name", help="A name for the batch (default: the file name)"),
) -> None:
    """Submit every question of the file; prints the batch (or batches, past 10,000) as JSON."""
    if mode not in ("search", "report"):
        raise typer.BadParameter("mode must be 'search' or 'report'", param_hint="--mode")
    if lane not in ("live", "train"):
        raise typer.BadParameter("lane must be 'live' or 'train'", param_hint="--lane")
    settings = client_settings()
    try:
        items = read_items(file, settings.plane.max_question_chars)
    except BatchFileError as exc:
        print_error(f"{exc}; nothing was submitted")
        raise typer.Exit(2) from exc
    batches = run(submit_items(settings, items, mode=mode, lane=lane, priority=priority,
                               name=name or file.name))
    doc = batch_dict(batches[0]) if len(batches) == 1 else {"batches": [batch_dict(b) for b in batches]}
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


async def _get(batch_id: str) -> research_pb2.Batch:
    async with Gateway(client_settings()) as gw:
        return await gw.call("GetBatch", research_pb2.GetBatchRequest(batch_id=batch_id))  # type: ignore[no-any-return]


@app.command("status")
def status(batch_id: str) -> None:
    """Counts by state, as JSON."""
    sys.stdout.write(json.dumps(batch_dict(run(_get(batch_id))), indent=2) + "\n")


@app.command("cancel")
def cancel(batch_id: str) -> None:
    """Cancel every queued or running job of the batch; prints the batch as JSON."""
    async def main() -> research_pb2.Batch:
        async with Gateway(client_settings()) as gw:
            return await gw.call("CancelBatch", research_pb2.GetBatchRequest(batch_id=batch_id))  # type: ignore[no-any-return]

    sys.stdout.write(json.dumps(batch_dict(run(main())), indent=2) + "\n")


@app.command("watch")
def watch(batch_id: str) -> None:
    """A live progress bar (done/total, succeeded/failed, rate) until every job has ended."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    async def main() -> research_pb2.Batch:
        start = time.monotonic()
        async with Gateway(client_settings()) as gw:
            batch = await gw.call("GetBatch", research_pb2.GetBatchRequest(batch_id=batch_id))
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
            with Progress(*columns, console=err_console) as bar:
                task = bar.add_task(f"batch {batch_id[:8]}", total=batch.total, detail="")
                while True:
                    done = batch.succeeded + batch.failed + batch.cancelled
                    rate = 60.0 * done / max(time.monotonic() - start, 1e-6)
                    bar.update(task, completed=done, detail=f"ok {batch.succeeded} failed {batch.failed} "
                               f"cancelled {batch.cancelled} running {batch.running}  {rate:.1f}/min")
                    if batch.done:
                        return batch  # type: ignore[no-any-return]
                    batch = await _next_batch(gw, batch_id)

    sys.stdout.write(json.dumps(batch_dict(run(main())), indent=2) + "\n")


async def _next_batch(gw: Gateway, batch_id: str) -> research_pb2.Batch:
    """The batch's counts half a second later (a poll: the counts, not each event, drive the bar)."""
    import asyncio

    await asyncio.sleep(0.5)
    return await gw.call("GetBatch", research_pb2.GetBatchRequest(batch_id=batch_id))  # type: ignore[no-any-return]


@app.command("export")
def export(
    batch_id: str,
    out: Path = typer.Option(..., "--out", help="Output file"),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl|parquet"),
) -> None:
    """Answers, reports, traces and timings of every job, read from the store (FATHOM_DATABASE_URL, or
    the running stack's store). Prints ``{"rows": N, "out": PATH}``."""
    if fmt not in ("jsonl", "parquet"):
        raise typer.BadParameter("format must be 'jsonl' or 'parquet'", param_hint="--format")
    from fathom.core.errors import FathomError
    from fathom.store.db import Database
    from fathom.store.repository import JobStore

    settings = client_settings()
    db = Database(settings.resolved_database_url)
    try:
        rows = list(JobStore(db).export_rows(batch_id))
    except FathomError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    write_rows(rows, out, fmt)
    sys.stdout.write(json.dumps({"rows": len(rows), "out": str(out.resolve()), "format": fmt}) + "\n")


def write_rows(rows: list[dict[str, Any]], out: Path, fmt: str) -> None:
    """JSONL as is; parquet with nested values (trace, timings) as JSON text columns."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with out.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [{k: json.dumps(v, default=str) if isinstance(v, (dict, list)) else v for k, v in row.items()}
            for row in rows]
    pq.write_table(pa.Table.from_pylist(flat), out)
