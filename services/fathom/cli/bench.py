"""``fathom bench tools`` and ``fathom bench research``: numbers for the tools and for a job's steps."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer

from fathom.cli.output import command_group, err_console, out_console, print_error

app = command_group("Benchmarks: tool speed and recall, research step costs.")

# Questions the shipped sample corpus answers (each from one or two of its documents).
SAMPLE_QUESTIONS = (
    "In which year did Alexander Fleming discover penicillin?",
    "Who was Teutberga, queen of Lotharingia, married to?",
    "Which Nobel Prize did Marie Curie win in 1911?",
    "In which sub-range of the Himalayas is Mount Everest located?",
    "Which river is the largest in the world by discharge volume?",
    "Who succeeded his elder brother Guy as margrave of Tuscany in 928 or 929?",
)


def _dump(result: dict[str, Any]) -> None:
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command("tools")
def tools(
    data: Path | None = typer.Option(
        None, "--data", help="Shared data directory (default: ../shared/data beside the repository)."
    ),
    corpus: Path | None = typer.Option(
        None, "--corpus", help="Corpus directory to use instead of the pooled closed corpus."
    ),
    queries: int = typer.Option(2000, "--queries", min=1, help="Timed search queries."),
    dense: bool = typer.Option(True, "--dense/--no-dense", help="Hybrid recall when vectors are cached."),
    static_pages: int = typer.Option(1000, "--static-pages", min=1),
    js_pages: int = typer.Option(100, "--js-pages", min=1),
    mixed_pages: int = typer.Option(500, "--mixed-pages", min=1),
    concurrency: int = typer.Option(32, "--concurrency", min=1),
    browser_contexts: int = typer.Option(6, "--browser-contexts", min=1),
    extract_workers: int = typer.Option(
        2, "--extract-workers", min=0, help="Extraction processes (0: a thread in the fetch worker)."
    ),
    search: bool = typer.Option(True, "--search/--no-search", help="Run the search part."),
    fetch: bool = typer.Option(True, "--fetch/--no-fetch", help="Run the fetch part."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON (tables go to stderr)."),
) -> None:
    """Search latency/recall and fetch throughput/correctness/memory on the pooled corpus."""
    from fathom.bench.tools import FetchPlan, run_tools_bench
    from fathom.core.errors import FathomError

    plan = FetchPlan(
        static_pages=static_pages,
        js_pages=js_pages,
        mixed_pages=mixed_pages,
        concurrency=concurrency,
        browser_contexts=browser_contexts,
        extract_workers=extract_workers or None,
    )
    # With --json the tables are commentary: stderr, so that stdout is the JSON document alone.
    console = err_console if as_json else out_console
    try:
        result = run_tools_bench(
            data,
            corpus_dir=corpus,
            queries=queries,
            dense=dense,
            plan=plan,
            search=search,
            fetch=fetch,
            console=console,
        )
    except (FathomError, OSError, RuntimeError, ValueError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    if as_json:
        _dump(result)


@app.command("research")
def research(
    questions: int = typer.Option(
        1, "--questions", min=1, max=len(SAMPLE_QUESTIONS), help="How many built-in sample questions to run."
    ),
    mode: str = typer.Option("search", "--mode", help="search: short answer; report: answer + cited report"),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON at the end."),
) -> None:
    """Where a research job's time goes (model, tools, overhead), on the sample corpus."""
    from fathom.bench.research import run_research_bench
    from fathom.core.config import get_settings

    if mode not in ("search", "report"):
        raise typer.BadParameter("must be 'search' or 'report'", param_hint="--mode")
    console = err_console if as_json else out_console
    result = run_research_bench(get_settings(), list(SAMPLE_QUESTIONS[:questions]), mode, console=console)
    if as_json:
        _dump(result)


@app.command("plane")
def plane(
    latency_s: float = typer.Option(2.0, "--latency", min=0.01, help="Replay model seconds per turn."),
    tool_calls: int = typer.Option(200, "--tool-calls", min=10, help="Timed tool calls per side."),
    concurrency: str = typer.Option("1,8,32,64", "--concurrency",
                                    help="Comma-separated numbers of concurrent jobs for jobs/min."),
    directory: Path | None = typer.Option(None, "--dir", help="Stack directory (default: a temporary one)."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON (lines go to stderr)."),
) -> None:
    """The distributed plane on its own stack: tool-call overhead, jobs/min vs ideal, lanes under load."""
    import tempfile

    from fathom.bench.plane import PlaneBench, run_plane_bench, summary_lines
    from fathom.core.config import get_settings

    try:
        levels = tuple(int(c) for c in concurrency.split(",") if c.strip())
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter("expected positive numbers separated by commas, e.g. 1,8,32",
                                 param_hint="--concurrency") from None
    bench = PlaneBench(latency_s=latency_s, tool_calls=tool_calls, concurrency=levels)

    def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="fathom-bench-plane-") as tmp:
            return run_plane_bench(get_settings(), directory or Path(tmp), bench)

    _run_and_print(run, summary_lines, as_json)


def _run_and_print(run: Callable[[], dict[str, Any]],
                   summary_lines: Callable[[dict[str, Any]], Sequence[str]], as_json: bool) -> None:
    """A bench that starts its own processes: a failure is one clear line (exit 2); its summary lines
    go to stdout, or to stderr when stdout holds the JSON document."""
    from fathom.core.errors import FathomError

    try:
        result = run()
    except (FathomError, OSError, RuntimeError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    console = err_console if as_json else out_console
    for line in summary_lines(result):
        console.print(line)
    if as_json:
        _dump(result)


@app.command("rollouts")
def rollouts(
    latency_s: float = typer.Option(0.5, "--latency", min=0.0, help="Replay model seconds per turn."),
    prompts: int = typer.Option(2, "--prompts", min=1, help="(a): prompts in the measured batch."),
    train_prompts: int = typer.Option(1, "--train-prompts", min=1, help="(b), (c): prompts per step."),
    group_size: int = typer.Option(2, "--group", min=1, help="G rollouts per prompt."),
    bundled: bool = typer.Option(True, "--bundled/--no-bundled",
                                 help="(b): RAPO steps on the bundled model, synchronous and asynchronous."),
    plane: bool = typer.Option(True, "--plane/--no-plane",
                               help="(c): async RAPO, tools on the plane's train lane, beside live calls."),
    steps: int = typer.Option(3, "--steps", min=1, help="Trainer steps per run in (b) and (c)."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1, help="Bundled model tokens per turn."),
    max_turns: int = typer.Option(3, "--max-turns", min=1, help="Bundled model turns per rollout."),
    threads: int = typer.Option(2, "--threads", min=1, help="Torch threads of a trainer run."),
    live_rate: float = typer.Option(1.0, "--live-rate", min=0.1, help="(c): live tool calls per second."),
    live_idle_calls: int = typer.Option(20, "--live-idle-calls", min=1,
                                        help="(c): live calls timed before the training starts."),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="(c): tool worker threads (default: rollouts per step + 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON (lines go to stderr)."),
) -> None:
    """Rollouts per hour and the model / tools / reward / trainer split: replay model; bundled model
    through the trainer, sync vs async; async with the tools on the plane beside a live stream."""
    from fathom.bench.rollouts import RolloutBench, run_rollouts_bench, summary_lines
    from fathom.core.config import get_settings

    bench = RolloutBench(latency_s=latency_s, prompts=prompts, train_prompts=train_prompts,
                         group_size=group_size, bundled=bundled,
                         plane=plane, steps=steps, bundled_max_new_tokens=max_new_tokens,
                         bundled_max_turns=max_turns, torch_threads=threads, live_rate=live_rate,
                         live_idle_calls=live_idle_calls, workers=workers)
    _run_and_print(lambda: run_rollouts_bench(get_settings(), bench), summary_lines, as_json)
