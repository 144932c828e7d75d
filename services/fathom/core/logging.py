"""structlog, configured once for the whole process, with a trace id carried through a job.

A job crosses processes (gateway, policy, tool workers, synthesis); one trace id follows it through
gRPC metadata and Celery headers so that every log line of the job can be found with one grep.
The id lives in structlog's context variables: bound in a coroutine it stays with that task (and
tasks it creates), never leaking into concurrent jobs of the same process. Each process names
itself once (``configure_logging(process_name=...)``) so merged logs say where a line came from.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

TRACE_KEY = "trace_id"
_TRACE_ID_LEN = 32  # hex digits of a W3C trace id, so it can be handed to tracing tools as is

_configured = False
_process_name: str | None = None


def _add_process(_logger: object, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _process_name is not None:
        event.setdefault("process", _process_name)
    return event


def _shared_processors() -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        _add_process,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]


def configure_logging(level: str = "INFO", json: bool = False, process_name: str | None = None) -> None:
    """Configure structlog and stdlib logging. Safe to call again: later calls change the level and
    renderer; ``process_name`` is kept from the first call that gives one unless a later one
    gives another (the entry point names the process once)."""
    global _configured, _process_name
    if process_name:
        _process_name = process_name
    lvl = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(lvl, int):
        lvl = logging.INFO
    logging.basicConfig(stream=sys.stderr, level=lvl, format="%(message)s")
    logging.getLogger().setLevel(lvl)
    noisy_libraries = ("httpx", "httpcore", "urllib3", "filelock", "transformers", "alembic",
                       "sentence_transformers")
    for noisy in noisy_libraries:
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    if json:
        _stdlib_as_json(renderer)
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def _stdlib_as_json(renderer: structlog.types.Processor) -> None:
    """Lines from libraries (Celery, gRPC, SQLAlchemy) through the stdlib root logger get the same
    JSON shape, trace id and process name as our own, so a job's lines are all one format."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    if not _configured:
        configure_logging()
    return structlog.get_logger(name)  # type: ignore[no-any-return]


def process_name() -> str | None:
    """The name this process gave itself in ``configure_logging`` (None when it gave none)."""
    return _process_name


# -- trace ids --------------------------------------------------------------------------------


def new_trace_id() -> str:
    """A fresh random trace id (32 lower-case hex digits)."""
    return secrets.token_hex(_TRACE_ID_LEN // 2)


def valid_trace_id(value: object) -> bool:
    """Whether ``value`` may be bound as a trace id: it arrives from metadata and headers, so it is
    checked before it reaches every log line (hex, 8 to 64 characters)."""
    return (
        isinstance(value, str)
        and 8 <= len(value) <= 64
        and all(c in "0123456789abcdefABCDEF-" for c in value)
    )


def bind_trace(trace_id: str | None = None) -> str:
    """Bind ``trace_id`` (a new one when None or not a valid id) to the current context: every log
    line of this coroutine / thread, and of tasks it starts afterwards, carries it. Returns it."""
    tid = trace_id if trace_id is not None and valid_trace_id(trace_id) else new_trace_id()
    structlog.contextvars.bind_contextvars(**{TRACE_KEY: tid})
    return tid


def current_trace_id() -> str | None:
    """The trace id bound to the current context, or None."""
    value = structlog.contextvars.get_contextvars().get(TRACE_KEY)
    return value if isinstance(value, str) else None


def unbind_trace() -> None:
    structlog.contextvars.unbind_contextvars(TRACE_KEY)


@contextmanager
def trace(trace_id: str | None = None) -> Iterator[str]:
    """Bind a trace id for the ``with`` block and restore the previous one after it (for task
    bodies and request handlers that run in reused threads)."""
    tid = trace_id if trace_id is not None and valid_trace_id(trace_id) else new_trace_id()
    with structlog.contextvars.bound_contextvars(**{TRACE_KEY: tid}):
        yield tid
