"""Every Prometheus metric of Fathom, in one place, and the ``/metrics`` server of a process.

Names and labels are fixed here so that dashboards and alerts do not depend on which process
exports a series: each process registers the same families in the default registry and fills the
ones it owns. Label values are small closed sets (queue, lane, task, tool, outcome, state, gRPC
code); never put ids, URLs or questions into a label (each value is a new time series).

Where each family is filled:

- ``fathom_queue_depth{queue,lane}``: ``collect_queue_depth`` (the gateway and ``fathom stack
  status`` call it periodically; it reads the broker's lists, so any process can).
- ``fathom_task_seconds{task,lane,outcome}``: ``observe_task`` in the Celery task bodies.
- ``fathom_tool_seconds{tool,lane,ok}``: ``observe_tool`` around each tool call (toolbox / queue task).
- ``fathom_fetch_total{fetcher,outcome}``: ``count_fetch`` in the fetch chain.
- ``fathom_browser_pages_in_use``: ``set_browser_in_use`` from the browser pool.
- ``fathom_tokens_total{role,kind}``: ``count_tokens`` where a model backend returns usage.
- ``fathom_jobs{state,lane}``: ``collect_job_states`` (gateway / sweeper loop).
- ``fathom_grpc_seconds{service,method,code}``: ``observe_grpc`` in a server interceptor.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from fathom.core.logging import get_logger

if TYPE_CHECKING:
    from fathom.store.repository import JobStore

log = get_logger(__name__)

# No ``*_created`` series next to each counter and histogram: twice the series for a timestamp
# Prometheus does not need (it sees resets itself).
disable_created_metrics()

# Buckets: tool calls and tasks range from a cache hit (ms) to a browser render or a whole job (min).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600,
                    1800, 3600)
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

QUEUE_DEPTH = Gauge(
    "fathom_queue_depth", "Messages waiting in a broker queue (all priority levels).", ["queue", "lane"]
)
TASK_SECONDS = Histogram(
    "fathom_task_seconds", "Celery task run time by outcome (ok, error, retry, cancelled).",
    ["task", "lane", "outcome"], buckets=_LATENCY_BUCKETS,
)
TOOL_SECONDS = Histogram(
    "fathom_tool_seconds", "Tool call latency as the caller saw it.", ["tool", "lane", "ok"],
    buckets=_LATENCY_BUCKETS,
)
FETCH_TOTAL = Counter(
    "fathom_fetch", "Page fetches by fetcher and outcome (ok, http_error, blocked, timeout, error).",
    ["fetcher", "outcome"],
)
BROWSER_IN_USE = Gauge("fathom_browser_pages_in_use", "Browser pool pages in use in this process.")
TOKENS_TOTAL = Counter("fathom_tokens", "Model tokens by role and kind (prompt, completion).",
                       ["role", "kind"])
JOBS = Gauge("fathom_jobs", "Jobs in the store by state and lane.", ["state", "lane"])
GRPC_SECONDS = Histogram(
    "fathom_grpc_seconds", "gRPC server handling time by method and status code.",
    ["service", "method", "code"], buckets=_RPC_BUCKETS,
)

_server_lock = threading.Lock()
_server_port: int | None = None


def start_metrics_server(port: int = 0, addr: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` for this process on ``port`` (0: a free one) and return the bound port.

    Idempotent per process: one server per process; a later call returns the port already bound
    (a process has one registry, so a second server would only serve the same numbers)."""
    global _server_port
    with _server_lock:
        if _server_port is not None:
            if port not in (0, _server_port):
                log.warning("metrics_server_already_running", port=_server_port, asked=port)
            return _server_port
        server, _thread = start_http_server(port, addr=addr)
        _server_port = int(server.server_port)
    log.info("metrics_server_started", port=_server_port)
    return _server_port


def metrics_port() -> int | None:
    """The port this process serves ``/metrics`` on, or None."""
    return _server_port


# -- helpers the owners of each part call ----------------------------------------------------------


def observe_tool(tool: str, lane: str, ok: bool, seconds: float) -> None:
    TOOL_SECONDS.labels(tool=tool, lane=lane, ok="true" if ok else "false").observe(max(seconds, 0.0))


def observe_task(task: str, lane: str, outcome: str, seconds: float) -> None:
    TASK_SECONDS.labels(task=task, lane=lane, outcome=outcome).observe(max(seconds, 0.0))


def observe_grpc(service: str, method: str, code: str, seconds: float) -> None:
    GRPC_SECONDS.labels(service=service, method=method, code=code).observe(max(seconds, 0.0))


def count_fetch(fetcher: str, outcome: str) -> None:
    FETCH_TOTAL.labels(fetcher=fetcher, outcome=outcome).inc()


def count_tokens(role: str, kind: str, n: int) -> None:
    if n > 0:
        TOKENS_TOTAL.labels(role=role, kind=kind).inc(n)


def set_browser_in_use(pages: int) -> None:
    BROWSER_IN_USE.set(pages)


@contextmanager
def timed_task(task: str, lane: str) -> Iterator[dict[str, str]]:
    """Time a task body; the body may set ``outcome`` in the yielded dict (default ``ok``, or
    ``error`` when it raises)."""
    import time

    state = {"outcome": "ok"}
    started = time.perf_counter()
    try:
        yield state
    except BaseException:
        if state["outcome"] == "ok":
            state["outcome"] = "error"
        raise
    finally:
        observe_task(task, lane, state["outcome"], time.perf_counter() - started)


# -- collectors: read shared state into gauges ---------------------------------------------------


def queue_list_names(queue: str, priority_steps: Sequence[int] | None = None) -> list[str]:
    """The Redis lists kombu keeps for one queue: the queue's own name for priority 0, and
    ``name + "\\x06\\x16" + step`` for every other priority step (kombu's redis transport)."""
    if priority_steps is None:
        from kombu.transport.redis import PRIORITY_STEPS

        priority_steps = PRIORITY_STEPS
    sep = "\x06\x16"
    return [queue if step == 0 else f"{queue}{sep}{step}" for step in priority_steps]


def collect_queue_depth(
    redis_url: str,
    *,
    queues: Iterable[str] | None = None,
    lanes: Iterable[str] | None = None,
    prefix: str = "",
    priority_steps: Sequence[int] | None = None,
) -> dict[tuple[str, str], int]:
    """Set ``fathom_queue_depth`` from the broker's lists and return ``{(queue, lane): depth}``.

    One pipelined round trip of LLEN per list. ``prefix`` is prepended to every list name
    (tests use their own keys; a deployment with a global key prefix passes it too)."""
    import redis

    from fathom.queue.names import LANES, QUEUES, queue_name

    pairs = [(q, ln) for q in (queues or QUEUES) for ln in (lanes or LANES)]
    names = {pair: queue_list_names(prefix + queue_name(*pair), priority_steps) for pair in pairs}
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        for pair in pairs:
            for name in names[pair]:
                pipe.llen(name)
        sizes = iter(pipe.execute())
    finally:
        client.close()
    depths: dict[tuple[str, str], int] = {}
    for pair in pairs:
        depth = sum(int(next(sizes)) for _ in names[pair])
        depths[pair] = depth
        QUEUE_DEPTH.labels(queue=pair[0], lane=pair[1]).set(depth)
    return depths


def collect_job_states(store: JobStore) -> dict[tuple[str, str], int]:
    """Set ``fathom_jobs`` from one grouped count query; every (state, lane) of the known sets is
    set, zero when none, so a state that empties drops to 0 instead of keeping its last value."""
    from sqlalchemy import func, select

    from fathom.queue.names import LANES
    from fathom.store.models import JOB_STATUSES, Job

    query = select(Job.status, Job.lane, func.count()).group_by(Job.status, Job.lane)
    counts: dict[tuple[str, str], int] = {(st, ln): 0 for st in JOB_STATUSES for ln in LANES}
    with store.db.session() as s:
        rows: list[Any] = list(s.execute(query))
    for status, lane, n in rows:
        counts[(str(status), str(lane))] = int(n)
    for (state, lane), n in counts.items():
        JOBS.labels(state=state, lane=lane).set(n)
    return counts
