"""End to end through the CLI: the real bundled model, the shipped sample corpus on the local web,
the real fetchers, the SQLite store. One research job in report mode (``demo_job``, conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fathom.core.config import Settings
from fathom.store.db import Database
from fathom.store.repository import JobStore
from fathom.synthesis.protocol import citable_urls

from tests.e2e.conftest import DemoJob

# The session fixture (conftest.py) runs a whole job on the CPU: room beyond the per-test limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture
def research_job(demo_job: DemoJob) -> tuple[subprocess.CompletedProcess[str], Path]:
    return demo_job.proc, demo_job.data_dir


@pytest.fixture
def research_run(demo_job: DemoJob) -> tuple[dict, Path]:
    return demo_job.summary, demo_job.data_dir


def test_stdout_is_the_json_alone_and_progress_is_on_stderr(
    research_job: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, data_dir = research_job
    summary = json.loads(proc.stdout)  # the whole of stdout: no progress line before the JSON
    lines = proc.stderr.splitlines()
    assert any(" turn  1 " in line for line in lines)
    store = Settings(data_dir=data_dir).resolved_database_url
    web_lines = [line for line in lines if line.startswith("local web: http://127.0.0.1:")]
    assert len(web_lines) == 1 and web_lines[0].endswith(f"  store: {store}")
    # Piped, the report path is whole on one line that a script can find (as `make demo | tee log` shows).
    report_lines = [line for line in lines if line.startswith("report: ")]
    assert report_lines == [f"report: {summary['report_markdown']}"]
    assert Path(summary["report_markdown"]).is_absolute() and str(data_dir) in summary["report_markdown"]
    assert f"job: {summary['job_id']} (" in proc.stderr


def test_job_searched_fetched_and_was_stored(research_run: tuple[dict, Path]) -> None:
    summary, data_dir = research_run
    store = JobStore(Database(Settings(data_dir=data_dir).resolved_database_url))
    job = store.get_job(summary["job_id"])
    assert job.status == "succeeded"
    traj = store.load_trajectory(job.id)
    assert traj is not None and len(traj.steps) == summary["turns"] >= 2
    calls = traj.tool_calls
    searches = [c for c in calls if c.name == "search_urls" and c.ok]
    reads = [c for c in calls if c.name == "query_url" and c.ok]
    assert searches and reads, [(c.name, c.ok, c.error) for c in calls]
    assert reads[0].arguments["url"].startswith("http://127.0.0.1:")
    assert "Evidence" in (reads[0].result or "") and "Summary" in (reads[0].result or "")
    assert reads[0].snapshot_sha256 or reads[0].meta.get("snapshot_sha256")
    assert traj.answer


def test_report_exists_and_cites_only_the_trace(research_run: tuple[dict, Path]) -> None:
    summary, data_dir = research_run
    md_path, json_path = Path(summary["report_markdown"]), Path(summary["report_json"])
    assert md_path.exists() and json_path.exists()
    report = json.loads(json_path.read_text())
    store = JobStore(Database(Settings(data_dir=data_dir).resolved_database_url))
    traj = store.load_trajectory(summary["job_id"])
    assert traj is not None
    allowed = citable_urls(traj)
    assert report["sources"], "the report cites nothing"
    assert set(report["sources"]) <= allowed
    stored = store.get_report(summary["job_id"])
    assert stored is not None and stored.markdown.strip() == md_path.read_text().strip()
    assert stored.data["sources"] == report["sources"]
    for heading in ("Executive Summary", "Conclusion", "Sources used"):
        assert heading in stored.markdown


def test_jobs_and_report_commands_read_the_store(research_run: tuple[dict, Path]) -> None:
    summary, data_dir = research_run
    env = dict(os.environ, FATHOM_DATA_DIR=str(data_dir))

    def fathom(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "fathom.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    listed = json.loads(fathom("jobs", "list", "--json"))  # each: the whole of stdout
    assert [j["id"] for j in listed] == [summary["job_id"]]
    shown = json.loads(fathom("jobs", "show", summary["job_id"][:8], "--json"))
    assert shown["job"]["status"] == "succeeded" and len(shown["trajectory"]["steps"]) == summary["turns"]
    assert "Sources used" in fathom("report", summary["job_id"][:8])
    assert json.loads(fathom("report", summary["job_id"][:8], "--json"))["sources"]
