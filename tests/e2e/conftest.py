"""One real research job for the whole e2e directory: the demo question through the CLI (`fathom
research --mode report --json`) with the real bundled model, the shipped sample corpus on the local
web, the real fetchers and the SQLite store. The CLI tests read its output, the grounding tests its
report, trajectory and stored snapshots (one CPU run instead of two)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DEMO_QUESTION = "Which country is the Eiffel Tower in, and who designed it?"  # Makefile DEMO_QUESTION


@dataclass(frozen=True)
class DemoJob:
    proc: subprocess.CompletedProcess[str]
    data_dir: Path

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.proc.stdout)


@pytest.fixture(scope="session")
def demo_job(tmp_path_factory: pytest.TempPathFactory) -> DemoJob:
    # A data dir with a long name and a narrow COLUMNS: what is printed must not depend on either.
    data_dir = tmp_path_factory.mktemp("e2e-data") / "a-data-folder-with-a-name-longer-than-forty-columns"
    env = dict(os.environ)
    env.update(
        FATHOM_DATA_DIR=str(data_dir),
        COLUMNS="40",
        # Four guided turns (search, read, read, answer: two pages to cite) and short extractions keep
        # the CPU run to about a minute; the protocol, fetchers, extractor and synthesizer are the demo's.
        FATHOM_EXTRACTOR__MAX_NEW_TOKENS="96",
        FATHOM_AGENT__GUIDED_MAX_TURNS="4",
        # What the grounding tests check is this code's extraction, not a cached older one.
        FATHOM_EXTRACT__CACHE="false",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fathom.cli.main", "research", DEMO_QUESTION, "--mode", "report", "--json"],
        env=env, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return DemoJob(proc, data_dir)
