"""``fathom bench plane``: what the distributed plane costs and delivers, on its own stack (replay model).

Three numbers, side by side:

(a) the plane's cost per tool call: ToolsService.SearchUrls over gRPC (gateway auth, queue, worker,
    Redis result) minus the same search through an in-process Toolbox; p50 / p99 (bar: <= 5 ms p50);
(b) jobs per minute at 1, 8, 32, 64 concurrent jobs against the ideal set by the replay model's latency
    (each recorded turn costs ``latency_s``; bar at 32: >= 90%);
(c) live Fetch p50 with the train lane saturated (slow pages holding every slot of the shared fetch
    pool, a backlog behind them), against idle (bar: <= 1.5x). The stack's live-only tool pools
    (serve/stack.py) are what keeps live calls from waiting on a training slot.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fathom.core.config import Settings

QUERIES = ("Eiffel Tower designer", "penicillin discovery year", "Marie Curie Nobel Prize 1911",
           "Mount Everest sub-range", "largest river by discharge", "margrave of Tuscany 928")
QUESTION = "Which country is the Eiffel Tower in, and who designed it?"
REPLAY_TURNS = 3  # turns of the bundled replay-demo recording


@dataclass
class PlaneBench:
    # A turn of a 4B policy on vLLM (hundreds of tokens) takes several seconds; 2 s is on the fast side
    # and keeps the bench to a few minutes.
    latency_s: float = 2.0
    tool_calls: int = 200
    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    flood: int = 32  # train-lane fetches kept in flight in (c): 4x the shared fetch pool's 8 slots
    slow_page_s: float = 2.0  # how long each of those slow pages takes
    results: dict[str, Any] = field(default_factory=dict)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _timed(calls: int, one: Any) -> list[float]:
    out = []
    for i in range(calls):
        start = time.perf_counter()
        await one(i)
        out.append(time.perf_counter() - start)
    return out


async def tool_overhead(settings: Settings, web_origin: str, calls: int) -> dict[str, float]:
    """(a): plane minus in-process for the same searches, sequentially (latency, not throughput)."""
    from fathom.rpc.gen import tools_pb2, tools_pb2_grpc
    from fathom.tools.toolbox import build_toolbox

    toolbox = build_toolbox(settings, local_web_base=web_origin)
    try:
        await toolbox.search_urls(QUERIES[0])  # warm: index loaded
        direct = await _timed(calls, lambda i: toolbox.search_urls(QUERIES[i % len(QUERIES)]))
    finally:
        await toolbox.aclose()
    channel, metadata = _channel(settings, settings.plane.tools_address)
    async with channel:
        stub = tools_pb2_grpc.ToolsServiceStub(channel)

        async def remote(i: int) -> None:
            request = tools_pb2.SearchUrlsRequest(query=QUERIES[i % len(QUERIES)], call_id=uuid.uuid4().hex)
            await stub.SearchUrls(request, metadata=metadata, timeout=30)

        await remote(0)
        plane = await _timed(calls, remote)
    return {
        "direct_p50_ms": 1e3 * _pct(direct, 0.5), "plane_p50_ms": 1e3 * _pct(plane, 0.5),
        "overhead_p50_ms": 1e3 * (_pct(plane, 0.5) - _pct(direct, 0.5)),
        "overhead_p99_ms": 1e3 * (_pct(plane, 0.99) - _pct(direct, 0.99)),
    }


def _channel(settings: Settings, address: str) -> tuple[Any, tuple[tuple[str, str], ...]]:
    import grpc

    token = settings.plane.client_token.get_secret_value() if settings.plane.client_token else ""
    return grpc.aio.insecure_channel(address), (("authorization", f"Bearer {token}"),)


async def jobs_per_minute(settings: Settings, concurrency: int, latency_s: float) -> dict[str, float]:
    """(b): ``concurrency`` jobs kept in flight, each watched to its end, over four rounds' worth of
    jobs (at least 8: the start and the tail of the run weigh less); against ``concurrency`` jobs
    per (turns x latency), the rate the model's latency alone allows. One unmeasured job first
    warms the workers (index, toolbox, pools)."""
    from fathom.cli.jobs import Gateway, watch_progress
    from fathom.rpc.gen import common_pb2, research_pb2

    async with Gateway(settings) as gw:
        async def one() -> None:
            job = await gw.call("Submit", research_pb2.SubmitRequest(
                question=f"{QUESTION} ({uuid.uuid4().hex[:6]})", mode=common_pb2.MODE_SEARCH))
            async for _ in watch_progress(gw, job.id):
                pass

        await one()
        total = max(8, 4 * concurrency)
        gate = asyncio.Semaphore(concurrency)

        async def gated() -> None:
            async with gate:
                await one()

        start = time.perf_counter()
        await asyncio.gather(*(gated() for _ in range(total)))
        elapsed = time.perf_counter() - start
    rate = 60.0 * total / elapsed
    ideal = 60.0 * concurrency / (REPLAY_TURNS * latency_s)
    return {"concurrency": concurrency, "jobs": total, "jobs_per_min": rate, "ideal_per_min": ideal,
            "ratio": rate / ideal}


class SlowSite:
    """A local site whose pages take ``delay_s`` to answer, like the slow websites a training run's
    fetches wait on: a train-lane flood of these holds every slot of the shared fetch pool (and
    keeps a backlog behind it) while costing the machine almost no CPU."""

    def __init__(self, delay_s: float) -> None:
        import http.server
        import threading

        delay = delay_s

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/robots.txt"):
                    self.send_response(404)
                    self.end_headers()
                    return
                time.sleep(delay)
                body = (b"<html><head><title>slow</title></head><body><main><p>"
                        + b"A page that took its time. " * 40 + b"</p></main></body></html>")
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def lanes(settings: Settings, calls: int, flood: int, slow_origin: str) -> dict[str, float]:
    """(c): live ``Fetch`` p50 of a local-web page, idle and while ``flood`` train-lane fetches of
    slow pages are kept in flight (more than the shared fetch pool's slots: a standing backlog)."""
    from fathom.rpc.gen import common_pb2, tools_pb2, tools_pb2_grpc

    page = f"{settings.web.origin}/"
    channel, metadata = _channel(settings, settings.plane.tools_address)
    async with channel:
        stub = tools_pb2_grpc.ToolsServiceStub(channel)

        async def fetch(url: str, lane: int) -> None:
            request = tools_pb2.FetchRequest(url=url, lane=lane, call_id=uuid.uuid4().hex,  # type: ignore[arg-type]
                                             render=tools_pb2.RENDER_MODE_NEVER)
            reply = await stub.Fetch(request, metadata=metadata, timeout=120)
            if not reply.ok:
                raise RuntimeError(f"bench fetch of {url} failed: {reply.error}")

        await fetch(page, common_pb2.LANE_LIVE)  # warm
        idle = await _timed(calls, lambda i: fetch(page, common_pb2.LANE_LIVE))
        stop = asyncio.Event()

        async def flooder(k: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await fetch(f"{slow_origin}/page/{k}/{n}", common_pb2.LANE_TRAIN)

        flooders = [asyncio.create_task(flooder(k)) for k in range(flood)]
        await asyncio.sleep(3.0)  # the shared pool's slots all held, a backlog queued behind them
        busy = await _timed(calls, lambda i: fetch(page, common_pb2.LANE_LIVE))
        stop.set()
        await asyncio.gather(*flooders, return_exceptions=True)
    return {"idle_p50_ms": 1e3 * _pct(idle, 0.5), "saturated_p50_ms": 1e3 * _pct(busy, 0.5),
            "ratio": _pct(busy, 0.5) / _pct(idle, 0.5)}


def run_plane_bench(base: Settings, directory: Path, bench: PlaneBench) -> dict[str, Any]:
    """Start a stack (replay model at ``bench.latency_s``), run the three phases, stop the stack."""
    import json

    from fathom.serve.stack import Stack, StackSpec

    slow = SlowSite(bench.slow_page_s)
    env = {"FATHOM_POLICY__LATENCY_S": str(bench.latency_s), "FATHOM_LOG_LEVEL": "WARNING",
           "FATHOM_FETCH__ALLOW_ORIGINS": json.dumps([slow.origin])}
    spec = StackSpec.from_settings(base, directory=directory, replay_model=True, free_ports=True,
                                   own_redis=True, extra_env=env)
    stack = Stack(spec)
    try:
        stack.up()
        settings = stack.client_settings(base)
        origin = settings.web.origin
        results: dict[str, Any] = {
            "tool_overhead": asyncio.run(tool_overhead(settings, origin, bench.tool_calls)),
            "jobs": [asyncio.run(jobs_per_minute(settings, c, bench.latency_s)) for c in bench.concurrency],
        }
        results["lanes"] = asyncio.run(lanes(settings, max(20, bench.tool_calls // 4), bench.flood,
                                             slow.origin))
    finally:
        stack.down(grace_s=5.0)
        slow.close()
    at32 = next((j for j in results["jobs"] if j["concurrency"] == 32), None)
    results["bars"] = {
        "tool_overhead_p50_le_5ms": results["tool_overhead"]["overhead_p50_ms"] <= 5.0,
        "jobs_at_32_ge_90pct": bool(at32 and at32["ratio"] >= 0.9),
        "live_saturated_le_1_5x": results["lanes"]["ratio"] <= 1.5,
    }
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    t, ln = results["tool_overhead"], results["lanes"]
    lines = [
        f"tool call: direct p50 {t['direct_p50_ms']:.2f} ms, plane p50 {t['plane_p50_ms']:.2f} ms, "
        f"overhead p50 {t['overhead_p50_ms']:.2f} ms / p99 {t['overhead_p99_ms']:.2f} ms (bar <= 5 ms p50)",
    ]
    for j in results["jobs"]:
        lines.append(f"jobs at {j['concurrency']:>2} concurrent: {j['jobs_per_min']:.0f}/min of ideal "
                     f"{j['ideal_per_min']:.0f}/min ({100 * j['ratio']:.0f}%)")
    lines.append(f"live fetch p50: idle {ln['idle_p50_ms']:.2f} ms, train lane saturated "
                 f"{ln['saturated_p50_ms']:.2f} ms ({ln['ratio']:.2f}x, bar <= 1.5x)")
    lines.append("bars: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in results["bars"].items()))
    return lines


__all__ = ["PlaneBench", "run_plane_bench", "summary_lines"]
