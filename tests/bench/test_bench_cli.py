"""``fathom bench tools`` end to end: the real CLI, a real local web process, real Chromium.

Tiny counts keep it to seconds; the numbers are checked for presence and sanity, never for speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fathom.core.config import Settings
from fathom.corpus.build import build_corpus

from tests.shared_data import SHARED_DATA


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "corpus"
    closed = SHARED_DATA / "closed"
    build_corpus([closed / "hotpotqa_train_corpus.json", closed / "musique_train_corpus.json"], out)
    return out


def _fathom(
    args: list[str], tmp_path: Path, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FATHOM_DATA_DIR": str(tmp_path / "data"),
        "FATHOM_CACHE_DIR": str(tmp_path / "cache"),
        "COLUMNS": "40",  # piped output must not depend on it
        **(env_extra or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "fathom.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_bench_tools_prints_every_measure_as_json(tiny_corpus: Path, tmp_path: Path) -> None:
    done = _fathom(
        [
            "bench",
            "tools",
            "--json",
            "--data",
            str(SHARED_DATA),
            "--corpus",
            str(tiny_corpus),
            "--queries",
            "20",
            "--no-dense",
            "--static-pages",
            "12",
            "--js-pages",
            "3",
            "--mixed-pages",
            "10",
            "--browser-contexts",
            "2",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # tables went to stderr; stdout is the JSON alone
    assert "fetch bench" in done.stderr and "recall of gold paragraphs" in done.stderr

    search = result["search"]
    assert search["queries"] == 20 and search["documents"] > 1000
    assert search["latency"]["p50_ms"] > 0 and search["latency"]["qps"] > 0
    for ranking in ("bm25", "bm25+prf"):
        for dataset in ("hotpotqa", "musique"):
            recall = search[ranking][dataset]
            assert set(recall) == {"5", "10"}  # JSON keys
            assert 0 < recall["5"] <= recall["10"] <= 100  # the gold paragraphs are in this corpus
    assert "hybrid" not in search  # --no-dense

    fetch = result["fetch"]
    phases = {p["phase"].split(" ")[0]: p for p in fetch["phases"]}
    assert set(phases) == {"static", "js", "mixed"}
    assert phases["static"]["pages"] == 12 and phases["js"]["pages"] == 3 and phases["mixed"]["pages"] == 10
    for phase in phases.values():
        assert phase["errors"] == 0, phase["error_examples"]
        assert phase["pages_per_s"] > 0 and 0 < phase["p50_ms"] <= phase["p95_ms"]
    # Every page's distinctive sentence was found in its extracted text, JS pages included.
    assert fetch["extraction"]["found"] == fetch["extraction"]["checked"] == 15
    assert phases["mixed"]["rendered"] >= 1  # the auto path sent the JS page to the browser
    assert 0 < fetch["peak_pss_mb"] <= fetch["peak_rss_mb"]
    assert set(fetch["bars"]) == {"static_pages_per_s", "js_pages_per_s", "mixed_pages_per_s", "peak_mb"}
    assert all(isinstance(b["met"], bool) for b in fetch["bars"].values())
    assert len(fetch["load_average_before"]) == 3


def test_bench_tools_rejects_a_missing_corpus(tmp_path: Path) -> None:
    nowhere = tmp_path / "a-folder-name-longer-than-forty-columns-of-a-narrow-terminal" / "nowhere"
    done = _fathom(
        ["bench", "tools", "--no-search", "--corpus", str(nowhere), "--static-pages", "1"],
        tmp_path,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines()[0].startswith(f"error: {nowhere}: not a corpus directory")


def test_bench_research_checks_its_options(tmp_path: Path) -> None:
    bad_mode = _fathom(["bench", "research", "--mode", "essay"], tmp_path)
    assert bad_mode.returncode == 2 and "search" in bad_mode.stdout + bad_mode.stderr
    too_many = _fathom(["bench", "research", "--questions", "99"], tmp_path)
    assert too_many.returncode == 2


@pytest.mark.slow
def test_bench_research_json_is_the_json_document_alone(tmp_path: Path) -> None:
    # The shortest real job (one turn of the bundled model); only where its output goes is checked.
    done = _fathom(
        ["bench", "research", "--questions", "1", "--mode", "search", "--json"],
        tmp_path,
        {
            "FATHOM_CACHE_DIR": str(Settings().cache_dir),  # the prepared bundled model and sample index
            "FATHOM_AGENT__GUIDED_MAX_TURNS": "1",
            "FATHOM_EXTRACTOR__MAX_NEW_TOKENS": "48",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # the table went to stderr
    assert result["steps"] >= 1 and len(result["jobs"]) == 1
    assert "research job, per step" in done.stderr


@pytest.mark.slow
def test_bench_plane_prints_its_three_measures_as_json(tmp_path: Path) -> None:
    """The whole plane as OS processes (replay model), tiny counts: stdout is the JSON document alone,
    with every measure present and sane (never checked for speed)."""
    env = {**os.environ, "FATHOM_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "40"}
    done = subprocess.run(
        [sys.executable, "-m", "fathom.cli.main", "bench", "plane", "--json", "--latency", "0.05",
         "--tool-calls", "10", "--concurrency", "2", "--dir", str(tmp_path / "stack")],
        capture_output=True, text=True, env=env, timeout=400, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    tool = result["tool_overhead"]
    assert 0 < tool["direct_p50_ms"] < tool["plane_p50_ms"]
    assert [j["concurrency"] for j in result["jobs"]] == [2]
    assert all(j["jobs_per_min"] > 0 and j["jobs"] >= 8 for j in result["jobs"])
    lanes = result["lanes"]
    assert lanes["idle_p50_ms"] > 0 and lanes["saturated_p50_ms"] > 0
    bars = {"tool_overhead_p50_le_5ms", "jobs_at_32_ge_90pct", "live_saturated_le_1_5x"}
    assert set(result["bars"]) == bars
    assert "jobs at  2 concurrent" in done.stderr  # the readable lines go to stderr with --json
