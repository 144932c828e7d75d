"""Measure what a fetch-worker pod holds in memory under load, to size its Kubernetes requests/limits.

A real ``fathom worker --queues fetch --lane live`` process (the Celery threads pool and the project's
browser pool, as the fetch-worker Deployment runs it) is fed ``fathom.tools.fetch`` tasks with
``render=True`` over a real Redis queue, so Chromium renders every page: pages of the local web (the
sample corpus, its JavaScript-built pages included), then heavy pages at the fetch size cap (1.9 MB of
HTML whose script builds a 20,000-node DOM). A last phase sends ``query_url`` tasks for plain pages (no
rendering), which load the extractor model in the worker (the bundled model in the dev overlay; a
remote vLLM in prod).

Every 0.2 s the worker's process tree is read from /proc: RSS and PSS of each process, Chromium's
processes (browser, renderers, GPU/utility helpers) summed apart. PSS shares each shared page between
the processes that map it, so the PSS sum is close to what the pod's memory cgroup is charged; the RSS
sum counts shared pages once per process and is an upper bound. Prints one JSON document.

    .venv/bin/python -m tests.deploy.measure_fetch_memory [--pages 240] [--heavy 40] [--extract 12]

Needs ``redis-server`` and Chromium (``make setup``); starts its own Redis on a free loopback port and
its own local web, and stops both. This measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fathom.serve.stack import free_port, private_redis
from fathom.tools.fetch.process_tree import cmdline, descendants, memory_kib

KIB_PER_MIB = 1024


def _is_chromium(pid: int) -> bool:
    args = cmdline(pid)
    return bool(args) and "chrom" in Path(args[0]).name.lower()


class TreeSampler:
    """Samples the memory of ``root`` and all its descendants; keeps the peaks (KiB)."""

    def __init__(self, root: int, every_s: float = 0.2) -> None:
        self.root = root
        self.every_s = every_s
        self.peak: dict[str, int] = {"tree_rss": 0, "tree_pss": 0, "chromium_rss": 0, "chromium_pss": 0,
                                     "chromium_processes": 0, "worker_rss": 0, "worker_pss": 0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, int]:
        now = dict.fromkeys(self.peak, 0)
        for pid in [self.root, *descendants(self.root)]:
            rss, pss = memory_kib(pid)
            now["tree_rss"] += rss
            now["tree_pss"] += pss
            if pid == self.root:
                now["worker_rss"], now["worker_pss"] = rss, pss
            elif _is_chromium(pid):
                now["chromium_rss"] += rss
                now["chromium_pss"] += pss
                now["chromium_processes"] += 1
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.sample()
            self.samples += 1
            for key, value in now.items():
                self.peak[key] = max(self.peak[key], value)
            self._stop.wait(self.every_s)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peaks_mib(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for key, value in self.peak.items():
            out[key if key == "chromium_processes" else f"{key}_mib"] = (
                value if key == "chromium_processes" else round(value / KIB_PER_MIB, 1))
        return out


def _subject(url: str) -> str:
    """``.../wiki/Lambert_Margrave_of_Tuscany-b18af29120ac`` -> ``Lambert Margrave of Tuscany``."""
    return url.rsplit("/", 1)[-1].rsplit("-", 1)[0].replace("_", " ")


def heavy_page(i: int, target_bytes: int = 1_900_000) -> bytes:
    """A page at the fetch size cap whose script builds a large DOM (a worst case for a renderer)."""
    head = (f"<!doctype html><html><head><title>Heavy page {i}</title></head><body><h1>Heavy page {i}</h1>"
            "<div id=app></div><script>const a=document.getElementById('app');"
            "for(let k=0;k<20000;k++){const p=document.createElement('p');"
            "p.textContent='Generated row '+k+' of a long ledger about tides, harbours and boats.';"
            "a.appendChild(p);}</script>")
    row = "<tr><td>harbour record</td><td>tide table entry with several words of text</td><td>1893</td></tr>"
    body = [head, "<table>"]
    size = len(head)
    while size < target_bytes:
        body.append(row)
        size += len(row)
    body.append("</table></body></html>")
    return "".join(body).encode()


@contextlib.contextmanager
def heavy_site(pages: int) -> Iterator[tuple[str, list[str]]]:
    cache = {i: heavy_page(i) for i in range(min(pages, 8))}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            try:
                i = int(self.path.rsplit("/", 1)[1])
            except (IndexError, ValueError):
                self.send_error(404)
                return
            body = cache[i % len(cache)]
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield origin, [f"{origin}/heavy/{i}" for i in range(pages)]
    finally:
        server.shutdown()
        server.server_close()


def _wait_worker_ready(log: Path, proc: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def run_phase(app: Any, results: Any, task: str, calls: list[dict[str, Any]], timeout_s: float
              ) -> dict[str, Any]:
    """Queue every call on fetch.live at once (the worker takes as many as it has threads), wait for
    all results; return counts and wall time."""
    started = time.perf_counter()
    ids = []
    for kwargs in calls:
        call_id = f"measure-{uuid.uuid4().hex}"
        ids.append(call_id)
        app.send_task(task, kwargs={"call_id": call_id, **kwargs}, queue="fetch.live",
                      routing_key="fetch.live")
    pending = set(ids)
    ok = errors = 0
    first_error = ""
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for call_id in list(pending):
            got = results.get(call_id)
            if got is not None:
                pending.discard(call_id)
                if got.get("ok"):
                    ok += 1
                else:
                    errors += 1
                    first_error = first_error or str(got.get("text", ""))[:200]
        time.sleep(0.1)
    return {"task": task, "sent": len(ids), "ok": ok, "errors": errors, "unfinished": len(pending),
            "wall_s": round(time.perf_counter() - started, 1), "first_error": first_error}


def measure(pages: int, heavy: int, extract: int, threads: int | None) -> dict[str, Any]:
    from fathom.core.config import PlaneSettings, Settings
    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.web import LocalWeb
    from fathom.queue.app import make_celery
    from fathom.queue.results import ToolResultStore

    work = Path(tempfile.mkdtemp(prefix="fathom-measure-"))
    report: dict[str, Any] = {"method": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else ""}
    try:
        with private_redis("the fetch memory measurement") as redis_url, \
                heavy_site(heavy) as (heavy_origin, heavy_urls):
            index = ensure_sample_index(Settings())
            web = LocalWeb(index, port=free_port()).start()
            try:
                ids = web.corpus.ids()
                js = [web.url_for(d) for d in ids if web.is_js(d)]
                static = [web.url_for(d) for d in ids if not web.is_js(d)]
                # Mostly JavaScript-built pages, all rendered by Chromium.
                urls = [u for pair in zip(js, static, strict=False) for u in pair][:pages]
                env = {
                    **os.environ,
                    "FATHOM_PLANE__BROKER_URL": redis_url,
                    "FATHOM_PLANE__REDIS_URL": redis_url,
                    "FATHOM_DATA_DIR": str(work / "data"),
                    "FATHOM_SEARCH__BACKEND": "local",
                    "FATHOM_WEB__HOST": "127.0.0.1",
                    "FATHOM_WEB__PORT": str(web.port),
                    "FATHOM_FETCH__ALLOW_ORIGINS": json.dumps([heavy_origin]),
                    "FATHOM_LOG_JSON": "true",
                    # Every extraction runs the model (the shared cache could answer from disk).
                    "FATHOM_EXTRACT__CACHE": "false",
                }
                argv = [sys.executable, "-m", "fathom.cli.main", "worker", "--queues", "fetch",
                        "--lane", "live"]
                if threads:
                    argv += ["--concurrency", str(threads)]
                log = work / "worker.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
                try:
                    _wait_worker_ready(log, proc)
                    settings = Settings(plane=PlaneSettings(broker_url=redis_url, redis_url=redis_url))
                    app = make_celery(settings)
                    results = ToolResultStore(redis_url)
                    sampler = TreeSampler(proc.pid)
                    report["idle_before_load"] = {k: round(v / KIB_PER_MIB, 1) if k != "chromium_processes"
                                                  else v for k, v in sampler.sample().items()}
                    phases = []
                    with sampler:
                        if urls:
                            phases.append(run_phase(app, results, "fathom.tools.fetch",
                                                    [{"url": u, "render": True} for u in urls], 900))
                        after_web = sampler.peaks_mib()
                        if heavy_urls:
                            phases.append(run_phase(app, results, "fathom.tools.fetch",
                                                    [{"url": u, "render": True} for u in heavy_urls], 900))
                        after_heavy = sampler.peaks_mib()
                        if extract:
                            # Plain pages over httpx: what this phase adds is the extractor's model.
                            # The goal names the page's subject (from its URL), so sentences match it
                            # and the model scores them (a goal sharing no word is answered without it).
                            calls = [{"url": u, "render": False,
                                      "goal": f"What is known about {_subject(u)}, and when?"}
                                     for u in static[:extract]]
                            phases.append(run_phase(app, results, "fathom.tools.query_url", calls, 900))
                    report["phases"] = phases
                    report["peak_after_local_web_pages"] = after_web
                    report["peak_after_heavy_pages"] = after_heavy
                    report["peak_with_extractor_model"] = sampler.peaks_mib() if extract else None
                    report["samples"] = sampler.samples
                    report["worker_threads"] = threads or 8
                    report["browser_contexts"] = Settings().fetch.browser_contexts
                finally:
                    os.killpg(proc.pid, 15)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, 9)
                        proc.wait(timeout=10)
            finally:
                web.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pages", type=int, default=240, help="local-web pages rendered")
    parser.add_argument("--heavy", type=int, default=40, help="heavy pages (1.9 MB, 20k-node DOM) rendered")
    parser.add_argument("--extract", type=int, default=12, help="query_url calls (loads the extractor model)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="worker threads (default: the worker's)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.pages, args.heavy, args.extract, args.concurrency), indent=2))


if __name__ == "__main__":
    main()
