"""The stack supervisor on its own: real OS processes (redis-server and a small gRPC health server),
started in tiers, checked, SIGKILLed, restarted, stopped from a second supervisor loaded from
stack.json as ``fathom stack down`` in another shell does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fathom.core.config import Settings
from fathom.serve.stack import ProcessSpec, Stack, StackError, StackSpec, free_port, pid_alive, redis_pings

ROOT = Path(__file__).resolve().parents[2]


def _spec(tmp_path: Path) -> StackSpec:
    settings = Settings(data_dir=tmp_path / "data")
    spec = StackSpec.from_settings(settings, directory=tmp_path / "stack", free_ports=True, own_redis=True)
    redis = spec.process("redis")
    port = free_port()
    health = ProcessSpec("health", "grpc", [sys.executable, "-m", "tests.plane.health_server", str(port)],
                         {"PYTHONPATH": str(ROOT)}, port, None, 1)
    spec.processes = [redis, health]
    return spec


def test_up_status_kill_restart_down(tmp_path: Path) -> None:
    stack = Stack(_spec(tmp_path))
    try:
        statuses = {s.name: s for s in stack.up(timeout_s=60)}
        assert all(s.alive and s.ready for s in statuses.values()), statuses
        assert redis_pings(stack.spec.redis_url)
        assert (tmp_path / "stack" / "fathom.db").exists()  # migrated once, before the services
        assert (tmp_path / "stack" / "logs" / "health.log").exists()
        assert (tmp_path / "stack" / "stack.json").stat().st_mode & 0o777 == 0o600

        old = stack.pids["health"]
        stack.kill("health")
        assert not pid_alive(old)
        status = {s.name: s for s in stack.status()}["health"]
        assert not status.alive and not status.ready
        new = stack.restart("health")
        assert new != old and {s.name: s for s in stack.status()}["health"].ready

        # A second supervisor (another shell) finds the same processes through stack.json.
        other = Stack.load(tmp_path / "stack")
        assert other.pids == stack.pids
        assert all(s.ready for s in other.status())
        other.down(grace_s=5)
        assert not any(pid_alive(pid) for pid in stack.pids.values())
        assert not (tmp_path / "stack" / "stack.json").exists()
    finally:
        stack.down(grace_s=2)


def test_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    import socket

    spec = _spec(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", spec.process("health").port or 0))
        s.listen()
        with pytest.raises(StackError, match="ports already in use for health"):
            Stack(spec).up(timeout_s=10)
    assert not (tmp_path / "stack" / "stack.json").exists()


def test_a_process_that_dies_at_start_fails_up_with_its_log(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    spec.processes[1].argv = [sys.executable, "-c", "import sys; print('boom at start'); sys.exit(3)"]
    stack = Stack(spec)
    with pytest.raises(StackError, match="boom at start"):
        stack.up(timeout_s=30)
    assert not any(pid_alive(pid) for pid in stack.pids.values())  # redis was stopped again


def test_load_without_a_stack_says_so(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="no stack state"):
        Stack.load(tmp_path)
