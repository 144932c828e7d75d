"""The tools benchmark: ``search_urls`` and ``query_url`` measured on one pooled corpus.

Search part: ``fathom.bench.search`` on the pooled closed corpus (latency, queries/s, recall@5/@10
on HotpotQA and MuSiQue, for BM25, BM25 + feedback, and hybrid when vectors are cached).

Fetch part: the same corpus served as the local web by ``fathom corpus serve`` in its own process
(so the server does not share the fetcher's interpreter lock), and ``fathom.bench.fetch`` run in a
second process of its own, so that its memory figure is the fetch worker, its extraction processes
and its Chromium, and nothing else. Each page's expected text is a distinctive sentence of its
document; a page counts as correct when that sentence is in the extracted main text.

Bars: static >= 100 pages/s, JS >= 10 pages/s, mixed 90/10 >= 50 pages/s, peak memory <= 1.5 GB.
This module measures and prints them next to the numbers; it asserts nothing. Benchmarks may read
the shared data directory; the package itself never does.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

from fathom.core.config import FetchSettings, get_settings
from fathom.corpus.build import MANIFEST_FILE
from fathom.corpus.documents import CorpusFormatError
from fathom.corpus.pages import is_js_page
from fathom.corpus.snippets import split_sentences
from fathom.corpus.store import Corpus

BARS = {"static_pages_per_s": 100.0, "js_pages_per_s": 10.0, "mixed_pages_per_s": 50.0, "peak_mb": 1536.0}
_SERVER_START_S = 120.0  # loading ~22k documents takes a few seconds, longer on a busy box


@dataclass(frozen=True)
class FetchPlan:
    """What the fetch part asks for (the defaults are the full benchmark)."""

    static_pages: int = 1000
    js_pages: int = 100
    mixed_pages: int = 500
    concurrency: int = 32
    browser_contexts: int = 6
    extract_workers: int | None = 2
    js_share: float = 0.15


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def served_corpus(corpus_dir: Path, js_share: float = 0.15) -> Iterator[str]:
    """``fathom corpus serve`` in a child process; yields its base URL once it answers."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fathom.cli.main",
                "corpus",
                "serve",
                str(corpus_dir),
                "--port",
                str(port),
                "--js-share",
                str(js_share),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_until_up(base, proc, log)
            yield base
        finally:
            proc.terminate()  # SIGTERM: the serve command stops its server cleanly
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + _SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            detail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"local web exited with {proc.returncode}: {detail}")
        try:
            with urllib.request.urlopen(f"{base}/robots.txt", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"local web at {base} did not answer within {_SERVER_START_S:.0f}s")


def distinctive_sentence(text: str) -> str | None:
    """The longest sentence of moderate length: long enough to be unique, short enough to keep whole.

    Invisible format characters (zero-width joiners, BOMs, direction marks) are dropped: they are
    not text, and extractors rightly drop them too.
    """
    candidates = [s for s in split_sentences(text) if 40 <= len(s) <= 240]
    if not candidates:
        return None
    best = max(candidates, key=len)
    return "".join(ch for ch in best if unicodedata.category(ch) != "Cf")


def pick_pages(
    corpus: Corpus, base_url: str, n_static: int, n_js: int, js_share: float, seed: int = 11
) -> tuple[list[str], list[str], dict[str, str]]:
    """Distinct static and JS page URLs (random but fixed by ``seed``) and each one's expected sentence."""
    ids = list(corpus.ids())
    random.Random(seed).shuffle(ids)
    static: list[str] = []
    js: list[str] = []
    expected: dict[str, str] = {}
    for doc_id in ids:
        if len(static) >= n_static and len(js) >= n_js:
            break
        is_js = is_js_page(doc_id, js_share)
        bucket, want = (js, n_js) if is_js else (static, n_static)
        if len(bucket) >= want:
            continue
        sentence = distinctive_sentence(corpus.get(doc_id).text)
        if sentence is None:
            continue
        url = f"{base_url}/wiki/{quote(doc_id)}"
        bucket.append(url)
        expected[url] = sentence
    return static, js, expected


def _fetch_worker(conn: Any, args: dict[str, Any]) -> None:
    """Runs in a fresh process: its process tree is what the memory figure covers."""
    from fathom.bench.fetch import run_fetch_bench

    plan: FetchPlan = args["plan"]
    # Snapshots go where they go in production (under the data directory), not to /tmp: on this
    # box /tmp is a top-level ext4 directory and creating blob directories there costs ~3 ms each.
    try:
        data_dir = get_settings().data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bench-snapshots-", dir=data_dir) as snapshots:
            report = run_fetch_bench(
                args["base_url"],
                args["static"],
                args["js"],
                args["expected"],
                settings=FetchSettings(browser_contexts=plan.browser_contexts),
                static_pages=plan.static_pages,
                js_pages=plan.js_pages,
                mixed_pages=plan.mixed_pages,
                concurrency=plan.concurrency,
                snapshot_dir=Path(snapshots),
                extract_workers=plan.extract_workers,
            )
        conn.send(("ok", report))
    except BaseException as exc:  # report any failure to the parent instead of dying silently
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_fetch_part(corpus_dir: Path, plan: FetchPlan) -> dict[str, Any]:
    corpus = Corpus.open(corpus_dir)
    with served_corpus(corpus_dir, plan.js_share) as base:
        # Distinct pages, as an agent reads them; the mixed phase re-reads some of the same pages.
        static, js, expected = pick_pages(
            corpus, base, max(plan.static_pages, 8), max(min(plan.js_pages, 200), 4), plan.js_share
        )
        del corpus  # the worker gets only what it needs
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        args = {"base_url": base, "static": static, "js": js, "expected": expected, "plan": plan}
        load_before = load_average()
        proc = ctx.Process(target=_fetch_worker, args=(child, args), name="fathom-fetch-bench")
        proc.start()
        child.close()
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", "fetch worker died without a report"
        proc.join()
    if status != "ok":
        raise RuntimeError(f"fetch benchmark failed: {payload}")
    report: dict[str, Any] = payload
    report["load_average_before"] = [round(x, 2) for x in load_before]
    report["load_average_after"] = [round(x, 2) for x in load_average()]
    report["pages_available"] = {"static": len(static), "js": len(js)}
    report["bars"] = _bars(report)
    return report


def _phase(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(p for p in report["phases"] if p["phase"].startswith(prefix))


def _bars(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    measured = {
        "static_pages_per_s": _phase(report, "static")["pages_per_s"],
        "js_pages_per_s": _phase(report, "js")["pages_per_s"],
        "mixed_pages_per_s": _phase(report, "mixed")["pages_per_s"],
        "peak_mb": report["peak_rss_mb"],
    }
    out: dict[str, dict[str, Any]] = {}
    for name, bar in BARS.items():
        value = measured[name]
        met = value <= bar if name == "peak_mb" else value >= bar
        out[name] = {"value": value, "bar": bar, "met": met}
    return out


def print_fetch_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title="fetch bench (query_url path)")
    for col in ("phase", "pages", "errors", "pages/s", "p50 ms", "p95 ms", "correct"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in report["phases"]:
        table.add_row(
            p["phase"],
            str(p["pages"]),
            str(p["errors"]),
            str(p["pages_per_s"]),
            str(p["p50_ms"]),
            str(p["p95_ms"]),
            p.get("correct", ""),
        )
    console.print(table)
    ext = report["extraction"]
    console.print(
        f"extraction correctness: {ext['found']}/{ext['checked']} pages hold their expected sentence"
        + (f" (misses: {', '.join(ext['misses'])})" if ext["misses"] else "")
    )
    console.print(
        f"peak memory of the fetch worker + extraction processes + Chromium: "
        f"RSS {report['peak_rss_mb']} MB, PSS {report['peak_pss_mb']} MB"
    )
    bars = Table(title="bars")
    for col in ("measure", "value", "bar", "met"):
        bars.add_column(col)
    for name, b in report["bars"].items():
        sign = "<=" if name == "peak_mb" else ">="
        bars.add_row(name, str(b["value"]), f"{sign} {b['bar']:g}", "yes" if b["met"] else "[red]no[/red]")
    console.print(bars)
    console.print(
        f"load average (1/5/15 min) before {report['load_average_before']}, "
        f"after {report['load_average_after']} on {os.cpu_count()} cores"
    )


def run_tools_bench(
    data_dir: Path | None = None,
    *,
    corpus_dir: Path | None = None,
    queries: int = 2000,
    dense: bool = True,
    plan: FetchPlan | None = None,
    search: bool = True,
    fetch: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run both parts and return their numbers; ``corpus_dir`` defaults to the pooled corpus."""
    from fathom.bench.search import default_data_dir, pooled_corpus, run_search_bench

    console = console or Console()
    data_dir = data_dir or default_data_dir()
    if corpus_dir is not None and not (corpus_dir / MANIFEST_FILE).is_file():
        raise CorpusFormatError(f"{corpus_dir}: not a corpus directory (build it with `fathom corpus build`)")
    if (search or corpus_dir is None) and not (data_dir / "closed").is_dir():
        raise CorpusFormatError(f"{data_dir}: no closed/ datasets here (pass the shared data dir as --data)")
    corpus_dir = corpus_dir or pooled_corpus(data_dir, get_settings().cache_dir)
    result: dict[str, Any] = {
        "corpus_dir": str(corpus_dir),
        "cpu_count": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in load_average()],
    }
    if search:
        result["search"] = run_search_bench(
            corpus_dir=corpus_dir,
            queries=queries,
            data_dir=data_dir,
            dense="cached" if dense else "off",
            console=console,
        )
    if fetch:
        result["fetch"] = run_fetch_part(corpus_dir, plan or FetchPlan())
        print_fetch_report(result["fetch"], console)
    return result
