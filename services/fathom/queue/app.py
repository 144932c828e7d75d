"""The Celery app of the plane: broker, every ``<queue>.<lane>`` queue, reliability settings, trace ids.

Results never go through a Celery result backend: tool results are Redis keys (``queue.results``),
job results are store rows. Every message is acknowledged late and redelivered if its worker dies
(``acks_late`` + ``reject_on_worker_lost``); a worker takes one message at a time
(``worker_prefetch_multiplier=1``) and reads its queues in the order given (``queue_order_strategy=
"priority"``): live lanes first, train lanes whenever no live message waits.

Flower works with the lazily built module-level app::

    celery -A fathom.queue.app:celery_app flower --port=5555
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from celery import Celery, signals
from kombu import Exchange, Queue

from fathom.core.config import Settings, get_settings
from fathom.core.logging import get_logger
from fathom.queue.names import LANES, QUEUES, queue_name

log = get_logger(__name__)

TRACE_HEADER = "trace_id"
_EXCHANGE = Exchange("fathom", type="direct")

# Where each task goes when a caller gives no queue: its queue's live lane. Callers of the plane
# always name the queue (and so the lane) explicitly.
TASK_QUEUES: dict[str, str] = {
    "fathom.research.run": "research",
    "fathom.tools.search_urls": "search",
    "fathom.tools.query_url": "fetch",
    "fathom.tools.fetch": "fetch",
    "fathom.synthesis.run": "synthesis",
    "fathom.reward.score": "reward",
}


def all_queues() -> list[Queue]:
    """Every queue x lane as a kombu Queue (live lanes first)."""
    return [
        Queue(queue_name(q, lane), _EXCHANGE, routing_key=queue_name(q, lane))
        for lane in LANES for q in QUEUES
    ]


def make_celery(settings: Settings) -> Celery:
    """A Celery app for these settings, with the plane's tasks registered on it."""
    app = Celery("fathom", broker=settings.plane.broker_url, set_as_current=False)
    routes = {name: {"queue": queue_name(q, "live"), "routing_key": queue_name(q, "live")}
              for name, q in TASK_QUEUES.items()}
    app.conf.update(
        task_queues=all_queues(),
        task_default_queue=queue_name("research", "live"),
        task_default_exchange=_EXCHANGE.name,
        task_default_routing_key=queue_name("research", "live"),
        task_create_missing_queues=False,
        task_routes=routes,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "queue_order_strategy": "priority",
            "visibility_timeout": settings.plane.visibility_timeout_s,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    app.fathom_settings = settings  # type: ignore[attr-defined]
    from fathom.queue.tasks import register_tasks

    register_tasks(app)
    return app


# -- the lazily built module-level app (Flower, `celery -A`, the worker CLI) ---------------------

_app: Celery | None = None
_app_lock = threading.Lock()


def get_celery_app() -> Celery:
    global _app
    with _app_lock:
        if _app is None:
            _app = make_celery(get_settings())
        return _app


def __getattr__(name: str) -> Any:
    if name == "celery_app":
        return get_celery_app()
    raise AttributeError(name)


# -- trace ids through Celery headers -------------------------------------------------------------


@signals.before_task_publish.connect
def _add_trace_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """A message published without a trace id takes the publisher's (bound in structlog)."""
    if headers is None or headers.get(TRACE_HEADER):
        return
    trace_id = structlog.contextvars.get_contextvars().get(TRACE_HEADER)
    if trace_id:
        headers[TRACE_HEADER] = trace_id


@signals.task_prerun.connect
def _bind_trace(task: Any = None, task_id: str | None = None, **_: Any) -> None:
    """Every log line of the task carries its trace id (threads pool: contextvars are per thread)."""
    request = getattr(task, "request", None)
    trace_id = getattr(request, TRACE_HEADER, None) if request is not None else None
    if trace_id is None and request is not None and isinstance(getattr(request, "headers", None), dict):
        trace_id = request.headers.get(TRACE_HEADER)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task=getattr(task, "name", None), task_id=task_id)
    if trace_id:
        structlog.contextvars.bind_contextvars(trace_id=str(trace_id))


@signals.task_postrun.connect
def _unbind_trace(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _close_runtimes(**_: Any) -> None:
    """Close every worker runtime of this process (toolbox, browser pool, models, Redis)."""
    from fathom.queue.worker_runtime import close_runtimes

    close_runtimes()
