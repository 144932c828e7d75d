"""``fathom worker`` as a real OS process: argument errors, and a message redelivered after its worker
was SIGKILLed returns the recorded result instead of running the tool again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
from celery import Celery
from fathom.core.config import Settings
from fathom.queue.results import ToolResultStore

from tests.queue.conftest import Origin, spawn_worker


def test_bad_queue_name_exits_2_with_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "fathom.cli.main", "worker", "--queues", "fetch,nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown queue 'nope'" in lines[0] and "fetch" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_bad_lane_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "fathom.cli.main", "worker", "--queues", "fetch",
                           "--lane", "gold"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown lane 'gold'" in proc.stderr


def _wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_redelivered_after_sigkill_returns_the_recorded_result(
    origin_settings: Settings, celery_app: Celery, origin: Origin, tmp_path: Path
) -> None:
    settings = origin_settings.model_copy(
        update={"plane": origin_settings.plane.model_copy(update={"visibility_timeout_s": 2.0})})
    env = {"FATHOM_FETCH__ALLOW_ORIGINS": json.dumps([origin.base_url])}
    args = ("--queues", "fetch", "--lane", "live", "--concurrency", "1", "--loglevel", "INFO")
    log = tmp_path / "worker.log"
    client = redis.Redis.from_url(settings.plane.broker_url)
    store = ToolResultStore(settings.plane.resolved_redis_url)
    call_id = f"kill-{uuid.uuid4().hex}"
    trace_id = f"trace-{uuid.uuid4().hex}"
    first = spawn_worker(settings, *args, log=log, **env)
    second = None
    try:
        celery_app.send_task("fathom.tools.fetch",
                             kwargs={"call_id": call_id, "url": f"{origin.base_url}/slow"},
                             queue="fetch.live", routing_key="fetch.live", headers={"trace_id": trace_id})
        assert _wait(origin.slow_started.is_set, 90), log.read_text()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert client.hlen("unacked") == 1  # delivered, never acknowledged
        # Another attempt of the same call finished meanwhile (say, a duplicate message elsewhere).
        assert store.put(call_id, {"ok": True, "text": "recorded", "meta": {}, "worker": "other"})
        time.sleep(settings.plane.visibility_timeout_s + 0.5)  # past the visibility timeout
        second = spawn_worker(settings, *args, log=log, **env)
        drained = _wait(lambda: client.hlen("unacked") == 0 and client.llen("fetch.live") == 0, 90)
        assert drained, log.read_text()
        assert _wait(lambda: "tool_task.already_done" in log.read_text(), 30), log.read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        store.close()
    stored = ToolResultStore(settings.plane.resolved_redis_url).get(call_id)
    assert stored is not None and stored["worker"] == "other" and stored["text"] == "recorded"
    assert origin.hits["/slow"] == 1  # the redelivered message did not fetch again
    # The Celery header's trace id is on the task's log lines, in both processes.
    done = [ln for ln in log.read_text().splitlines() if "tool_task.already_done" in ln]
    assert done and trace_id in done[0]
