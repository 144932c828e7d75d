"""Where a research step's time goes: the model, the tools, or our own overhead.

Overhead is everything in a step that is neither generation nor tool execution: parsing, prompt
assembly, token counting, scheduling, and persisting the step to the store.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from fathom.core.config import Settings


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


async def _run(settings: Settings, questions: list[str], mode: str) -> dict[str, Any]:
    from fathom.research.runtime import LocalRuntime

    rows: list[dict[str, float]] = []
    jobs: list[dict[str, Any]] = []
    async with LocalRuntime(settings) as rt:
        for q in questions:
            t0 = time.perf_counter()
            job_id = await rt.service.submit(q, mode)  # type: ignore[arg-type]
            res = await rt.service.run(job_id)
            wall = time.perf_counter() - t0
            for s in res.trajectory.steps:
                rows.append({"model": s.model_s, "tools": s.tools_s, "overhead": s.overhead_s,
                             "total": s.model_s + s.tools_s + s.overhead_s})
            jobs.append({"question": q, "steps": len(res.trajectory.steps), "wall_s": wall,
                         "synthesis_s": res.timings.get("synthesis_s", 0.0), "answer": res.answer})
    return {"steps": rows, "jobs": jobs}


def run_research_bench(
    settings: Settings, questions: list[str], mode: str = "search", console: Console | None = None
) -> dict[str, Any]:
    data = asyncio.run(_run(settings, questions, mode))
    rows = data["steps"]
    console = console or Console()
    table = Table(title=f"research job, per step ({len(rows)} steps, {len(questions)} jobs, mode {mode})")
    table.add_column("part")
    for col in ("mean s", "p50 s", "p95 s", "share of step"):
        table.add_column(col, justify="right")
    total = sum(r["total"] for r in rows) or 1.0
    summary: dict[str, Any] = {"steps": len(rows), "jobs": data["jobs"]}
    for part in ("model", "tools", "overhead"):
        vals = [r[part] for r in rows]
        share = sum(vals) / total
        summary[part] = {"mean_s": statistics.fmean(vals) if vals else 0.0, "p50_s": _pct(vals, 0.5),
                         "p95_s": _pct(vals, 0.95), "share": share}
        table.add_row(part, f"{summary[part]['mean_s']:.4f}", f"{summary[part]['p50_s']:.4f}",
                      f"{summary[part]['p95_s']:.4f}", f"{share:.2%}")
    console.print(table)
    for j in data["jobs"]:
        console.print(f"job: {j['steps']} steps, {j['wall_s']:.1f}s wall, synthesis {j['synthesis_s']:.1f}s, "
                      f"answer={j['answer']!r}")
    return summary
