"""Trace ids: bound in a coroutine, carried into every JSON log line of that coroutine only, with
the process name the entry point gave; stdlib loggers (libraries) get the same fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
import structlog
from fathom.core import logging as fathom_logging
from fathom.core.logging import (
    bind_trace,
    configure_logging,
    current_trace_id,
    get_logger,
    new_trace_id,
    trace,
    valid_trace_id,
)


@pytest.fixture
def json_lines(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(fathom_logging, "_process_name", None)  # restored after the test

    def read() -> list[dict[str, object]]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]

    # Put back the configuration (and the stream it writes to) the tests after this one use.
    saved = structlog.get_config()
    root = logging.getLogger()
    formatters = [(h, h.formatter) for h in root.handlers]
    # The logger binds sys.stderr when configured: configure in the test body, where capsys holds it.
    yield lambda: configure_logging("INFO", json=True, process_name="worker-fetch"), read
    structlog.configure(**saved)
    for handler, formatter in formatters:
        handler.setFormatter(formatter)


def test_trace_ids_are_fresh_and_checked() -> None:
    a, b = new_trace_id(), new_trace_id()
    assert a != b and len(a) == 32 and valid_trace_id(a)
    assert not valid_trace_id("short") and not valid_trace_id("x" * 40) and not valid_trace_id(None)
    assert not valid_trace_id("abcd1234\nevent=forged")


def test_a_trace_bound_in_a_coroutine_is_in_its_json_lines_only(json_lines) -> None:  # type: ignore[no-untyped-def]
    start, read = json_lines
    start()
    log = get_logger("tests.trace")
    ids = {"a": "a" * 32, "b": "b" * 32}

    async def job(name: str) -> str | None:
        bind_trace(ids[name])
        await asyncio.sleep(0)  # the other job runs in between: contexts must not mix
        log.info("job_step", job=name)
        await asyncio.sleep(0)
        return current_trace_id()

    async def main() -> list[str | None]:
        return list(await asyncio.gather(job("a"), job("b")))

    assert asyncio.run(main()) == [ids["a"], ids["b"]]
    assert current_trace_id() is None  # tasks ran in copies of the context: nothing leaked here
    log.info("outside")
    lines = read()
    steps = {r["job"]: r for r in lines if r["event"] == "job_step"}
    assert steps["a"]["trace_id"] == ids["a"] and steps["b"]["trace_id"] == ids["b"]
    assert all(r["process"] == "worker-fetch" for r in lines)
    outside = next(r for r in lines if r["event"] == "outside")
    assert "trace_id" not in outside


def test_trace_block_restores_and_reaches_stdlib_loggers(json_lines) -> None:  # type: ignore[no-untyped-def]
    start, _read = json_lines
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    root = logging.getLogger()
    root.addHandler(handler)  # a root handler, as basicConfig or Celery installs one
    try:
        start()
        with trace("c" * 16) as tid:
            assert tid == "c" * 16 == current_trace_id()
            logging.getLogger("celery.worker").warning("task received")
            with trace("not a valid id!") as inner:
                assert inner != "not a valid id!" and valid_trace_id(inner)
            assert current_trace_id() == tid
    finally:
        root.removeHandler(handler)
    assert current_trace_id() is None
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    stdlib = next(r for r in lines if r.get("event") == "task received")
    assert stdlib["trace_id"] == "c" * 16 and stdlib["process"] == "worker-fetch"
    assert stdlib["logger"] == "celery.worker" and stdlib["level"] == "warning"
