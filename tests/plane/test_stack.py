"""`fathom stack`: the whole plane as real OS processes on free loopback ports (replay model, SQLite):
every gRPC server answers health SERVING, status reports every process ready, a job runs end to end
through the CLI against the gateway, and down leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fathom.serve.stack import GRPC_SERVICES, grpc_serving, pid_alive

from tests.plane.stack_helpers import running_stack

QUESTION = "Which country is the Eiffel Tower in, and who designed it?"


def _cli(stack_env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fathom.cli.main", *args], env={**os.environ, **stack_env},
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_stack_up_health_status_job_and_down(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        pids = dict(stack.pids)
        for name in GRPC_SERVICES:
            assert grpc_serving(stack.spec.address_of(name)), name
        statuses = stack.status()
        expected = {"redis", "web", *GRPC_SERVICES, "worker-research", "worker-fetch", "worker-fetch-live",
                    "worker-search-live"}
        assert {s.name for s in statuses} >= expected
        assert all(s.alive and s.ready for s in statuses), [s for s in statuses if not s.ready]

        env = stack.spec.processes[-1].env  # the clients' view: addresses, token, store
        status = _cli(env, "stack", "status", "--dir", str(stack.directory), "--json")
        assert status.returncode == 0, status.stderr
        assert {p["name"] for p in json.loads(status.stdout)} == set(stack.spec.names)

        # One job end to end through `fathom jobs` against the gateway.
        import asyncio

        from fathom.cli.jobs import submit_and_watch

        seen: list[str] = []
        job = asyncio.run(submit_and_watch(stack.client_settings(_base(tmp_path)), QUESTION, "search", "live",
                                           on_event=lambda ev: seen.append(ev.kind)))
        assert job.answer, job
        assert seen[-1] == "job_done" and "step" in seen
        got = _cli(env, "jobs", "get", job.id)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["state"] == "succeeded"
        watched = _cli(env, "jobs", "watch", job.id, "--from", "1", "--json")
        assert watched.returncode == 0, watched.stderr
        indexes = [int(json.loads(line).get("eventIndex", 0)) for line in watched.stdout.splitlines()]
        assert indexes[0] == 1 and indexes == sorted(set(indexes))  # resumed at 1, nothing twice
    assert not any(pid_alive(pid) for pid in pids.values())


def _base(tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.plane.stack_helpers import plane_settings

    return plane_settings(tmp_path)
