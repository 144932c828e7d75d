"""Fetch benchmark: throughput and latency of the httpx and browser paths, extraction correctness,
a mixed 90/10 load, and peak memory of this process plus its children (Chromium included).

Bars (on the project's reference box): static >= 100 pages/s, JS >= 10 pages/s, mixed >= 50
pages/s, peak memory <= 1.5 GB. This module measures and prints; it asserts nothing.

    python -m fathom.bench.fetch                     # built-in demo site (article + JS pages)
    python -m fathom.bench.fetch --corpus DIR        # the local web over a prepared corpus
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError
from fathom.tools.fetch.chain import FetchChain, ReadResult, build_fetch_chain
from fathom.tools.fetch.process_tree import tree_memory_kib

_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


class _MemorySampler:
    """Samples RSS and PSS of this process tree every ``every_s`` seconds; keeps the peaks."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.every_s = every_s
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = tree_memory_kib()
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self._stop.wait(self.every_s)

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _run_load(
    chain: FetchChain, urls: list[str], render: bool | None, concurrency: int
) -> tuple[float, list[float], dict[str, ReadResult], dict[str, str]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    results: dict[str, ReadResult] = {}
    errors: dict[str, str] = {}

    async def one(url: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                results[url] = await chain.read(url, render=render)
            except FetchError as exc:
                errors[url] = exc.message
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    return time.perf_counter() - started, latencies, results, errors


def _summary(name: str, n: int, wall: float, lat: list[float], errors: dict[str, str]) -> dict[str, Any]:
    return {
        "phase": name,
        "pages": n,
        "errors": len(errors),
        "error_examples": dict(list(errors.items())[:3]),
        "wall_s": round(wall, 3),
        "pages_per_s": round(n / wall, 1) if wall > 0 else float("nan"),
        "p50_ms": round(1000 * statistics.median(lat), 1) if lat else float("nan"),
        "p95_ms": round(1000 * _percentile(lat, 0.95), 1),
    }


def _correct(results: dict[str, ReadResult], expected: dict[str, str]) -> tuple[int, int, list[str]]:
    checked = found = 0
    misses: list[str] = []
    for url, sentence in expected.items():
        if url not in results:
            continue
        checked += 1
        if _norm(sentence) in _norm(results[url].text.text):
            found += 1
        else:
            misses.append(url)
    return found, checked, misses


def _cycle(urls: list[str], n: int) -> list[str]:
    return [urls[i % len(urls)] for i in range(n)] if urls else []


async def run_fetch_bench_async(
    base_url: str,
    static_urls: list[str],
    js_urls: list[str],
    expected: dict[str, str],
    *,
    settings: FetchSettings | None = None,
    static_pages: int = 1000,
    js_pages: int = 100,
    mixed_pages: int = 500,
    concurrency: int = 32,
    snapshot_dir: Path | None = None,
    extract_workers: int | None = None,
) -> dict[str, Any]:
    settings = settings or FetchSettings()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
    with tempfile.TemporaryDirectory(prefix="fathom-fetch-bench-") as tmp:
        chain = build_fetch_chain(
            settings, [origin], snapshot_dir=snapshot_dir or Path(tmp), extract_workers=extract_workers
        )
        report: dict[str, Any] = {
            "settings": {
                "browser_contexts": settings.browser_contexts,
                "concurrency": concurrency,
                "extract_workers": extract_workers,
                "snapshots": True,
            },
        }
        try:
            with _MemorySampler() as memory:
                # Warm-up (not timed): browser launch, extractor processes, first connections.
                warm = [chain.read(u, render=False) for u in static_urls[:4]]
                warm += [chain.read(u, render=True) for u in js_urls[:2]]
                await asyncio.gather(*warm, return_exceptions=True)

                phases: list[dict[str, Any]] = []
                all_results: dict[str, ReadResult] = {}

                urls = _cycle(static_urls, static_pages)
                wall, lat, res, err = await _run_load(chain, urls, False, concurrency)
                phases.append(_summary("static (httpx)", len(urls), wall, lat, err))
                all_results.update(res)

                urls = _cycle(js_urls, js_pages)
                js_conc = max(2, 2 * settings.browser_contexts)
                wall, lat, res, err = await _run_load(chain, urls, True, js_conc)
                phases.append(_summary("js (browser)", len(urls), wall, lat, err))
                all_results.update(res)

                n_js = round(mixed_pages * 0.1)
                mixed = _cycle(static_urls, mixed_pages - n_js) + _cycle(js_urls, n_js)
                random.Random(7).shuffle(mixed)
                wall, lat, res, err = await _run_load(chain, mixed, None, concurrency)
                mixed_summary = _summary("mixed 90/10 (auto)", len(mixed), wall, lat, err)
                mixed_summary["rendered"] = sum(1 for r in res.values() if r.page.fetcher == "browser")
                phases.append(mixed_summary)
                mixed_found, mixed_checked, _ = _correct(res, expected)
                mixed_summary["correct"] = f"{mixed_found}/{mixed_checked}"

            found, checked, misses = _correct(all_results, expected)
            report["phases"] = phases
            report["extraction"] = {"found": found, "checked": checked, "misses": misses[:5]}
            report["peak_rss_mb"] = round(memory.peak_rss_kib / 1024, 1)
            report["peak_pss_mb"] = round(memory.peak_pss_kib / 1024, 1)
        finally:
            await chain.aclose()
    return report


def run_fetch_bench(
    base_url: str,
    static_urls: list[str],
    js_urls: list[str],
    expected: dict[str, str],
    **options: Any,
) -> dict[str, Any]:
    """Run the benchmark against a live site; returns the numbers (see module doc)."""
    return asyncio.run(run_fetch_bench_async(base_url, static_urls, js_urls, expected, **options))


# --- a small built-in site, for running the benchmark without a prepared corpus -----------------

_DEMO_JS = """<!doctype html><html><head><title>JS {i}</title></head><body><div id="app"></div>
<script>
 const a = document.getElementById('app');
 const h = document.createElement('h1'); h.textContent = 'Script page {i}'; a.appendChild(h);
 for (let k = 0; k < 5; k++) {{ const p = document.createElement('p');
   p.textContent = 'Generated paragraph ' + k + ' of page {i}, about tides and harbour records.';
   a.appendChild(p); }}
 const s = document.createElement('p'); s.textContent = 'Script page {i} reports {n} boats in the harbour.';
 a.appendChild(s);
</script></body></html>"""


def _demo_static(i: int) -> str:
    paras = "".join(
        f"<p>Section {k} of article {i} describes the river crossing, the old mill and the weir "
        f"in plain words, with numbers like {i * 7 + k} and the year {1900 + k}.</p>"
        for k in range(8)
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Article {i}</title></head><body>"
        f"<nav><a href='/'>Home</a> <a href='/about'>About</a></nav><main><h1>Article {i}</h1>"
        f"<p>Article {i} records that the ferry carried {i * 3 + 11} passengers on its first day.</p>"
        f"{paras}</main><footer>Demo site footer</footer></body></html>"
    )


@contextmanager
def demo_site(
    n_static: int = 200, n_js: int = 20
) -> Iterator[tuple[str, list[str], list[str], dict[str, str]]]:
    pages = {f"/a/{i}": _demo_static(i).encode() for i in range(n_static)}
    pages.update({f"/js/{i}": _DEMO_JS.format(i=i, n=i * 5 + 2).encode() for i in range(n_js)})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            body = body or b"not found"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    static = [f"{base}/a/{i}" for i in range(n_static)]
    js = [f"{base}/js/{i}" for i in range(n_js)]
    expected = {
        u: f"Article {i} records that the ferry carried {i * 3 + 11} passengers" for i, u in enumerate(static)
    }
    expected.update(
        {u: f"Script page {i} reports {i * 5 + 2} boats in the harbour." for i, u in enumerate(js)}
    )
    try:
        yield base, static, js, expected
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def local_web_site(
    corpus_dir: Path, limit: int = 400
) -> Iterator[tuple[str, list[str], list[str], dict[str, str]]]:
    from fathom.corpus.web import LocalWeb

    with LocalWeb(corpus_dir) as web:
        ids = web.corpus.ids()[: limit * 4]
        static = [web.url_for(d) for d in ids if not web.is_js(d)][:limit]
        js = [web.url_for(d) for d in ids if web.is_js(d)][: max(10, limit // 10)]
        expected: dict[str, str] = {}
        for d in ids:
            sentence = _first_sentence(web.corpus.get(d).text)
            if sentence:
                expected[web.url_for(d)] = sentence
        yield web.base_url, static, js, expected


def _first_sentence(text: str) -> str | None:
    for line in text.splitlines():
        line = line.strip()
        if len(line) >= 40:
            return line.split(". ")[0][:120]
    return None


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, help="prepared corpus dir served by the local web")
    parser.add_argument("--static-pages", type=int, default=1000)
    parser.add_argument("--js-pages", type=int, default=100)
    parser.add_argument("--mixed-pages", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--browser-contexts", type=int, default=4)
    parser.add_argument("--extract-workers", type=int, default=None)
    args = parser.parse_args(list(argv) if argv is not None else None)
    settings = FetchSettings(browser_contexts=args.browser_contexts)
    site = local_web_site(args.corpus) if args.corpus else demo_site()
    with site as (base, static, js, expected):
        report = run_fetch_bench(
            base,
            static,
            js,
            expected,
            settings=settings,
            static_pages=args.static_pages,
            js_pages=args.js_pages,
            mixed_pages=args.mixed_pages,
            concurrency=args.concurrency,
            extract_workers=args.extract_workers,
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
