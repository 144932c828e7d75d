"""Run the whole plane as real OS processes in a temporary directory, on free loopback ports, with the
replay model: shared by the stack, chaos and CLI tests (and nothing here is a stand-in)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from fathom.core.config import Settings
from fathom.serve.stack import Stack, StackSpec, free_port

# Workers and servers log JSON at INFO into <dir>/logs; a failing test prints their tails.
START_TIMEOUT_S = 240.0


def plane_settings(tmp: Path, **overrides: object) -> Settings:
    """Settings of a test stack: data in ``tmp``, the shared model/corpus cache, fast sweeps."""
    base = Settings()
    settings = base.model_copy(update={"data_dir": tmp / "data", **overrides}, deep=True)
    settings.plane.sweep_interval_s = 1.0
    settings.plane.requeue_after_s = 5.0
    settings.plane.lease_s = 6.0
    settings.plane.grace_s = 2.0
    return settings


def plane_env() -> dict[str, str]:
    """Environment every process of a test stack gets on top of the stack's own."""
    return {
        "FATHOM_PLANE__SWEEP_INTERVAL_S": "1",
        "FATHOM_PLANE__REQUEUE_AFTER_S": "5",
        "FATHOM_PLANE__LEASE_S": "6",
        "FATHOM_PLANE__GRACE_S": "2",
        "FATHOM_LOG_LEVEL": "INFO",
    }


def dump_logs(stack: Stack, lines: int = 40) -> None:
    """Tails of every log to stderr: what a failing plane test needs to be understood."""
    for name in stack.spec.names:
        sys.stderr.write(f"\n===== {name} ({stack.log_path(name)}) =====\n{stack.tail(name, lines)}\n")


@contextlib.contextmanager
def running_stack(
    tmp: Path, *, postgres_url: str | None = None, broker_url: str | None = None, own_redis: bool = True,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """A started stack (every process ready); stopped, with no process left, on exit."""
    settings = plane_settings(tmp)
    spec = StackSpec.from_settings(
        settings, directory=tmp / "stack", postgres_url=postgres_url, replay_model=True, free_ports=True,
        own_redis=own_redis, broker_url=broker_url, extra_env={**plane_env(), **(extra_env or {})},
    )
    stack = Stack(spec)
    try:
        stack.up(timeout_s=START_TIMEOUT_S)
    except Exception:
        dump_logs(stack)
        raise
    try:
        yield stack
    except BaseException:
        dump_logs(stack)
        raise
    finally:
        stack.down(grace_s=5.0)


__all__ = ["dump_logs", "free_port", "plane_env", "plane_settings", "running_stack"]
