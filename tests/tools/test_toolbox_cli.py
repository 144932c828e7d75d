"""``fathom search`` / ``fathom fetch`` through the real CLI app, on the shipped sample corpus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fathom.cli.main import app
from fathom.core.config import get_settings
from fathom.core.logging import configure_logging
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Snapshots go to a temporary data dir; the cache dir (sample index, models) stays shared.
    monkeypatch.setenv("FATHOM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    # structlog binds the stderr of the moment it is configured; CliRunner swaps stderr per call and
    # closes it after, so bind to the test's own stderr before each test.
    configure_logging()
    yield
    get_settings.cache_clear()


def test_search_json_links_hits_to_the_local_web() -> None:
    r = runner.invoke(app, ["search", "Marie Curie Nobel Prize physics", "--top-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and out["meta"]["hits"] == 3 and out["meta"]["backend"] == "local"
    assert out["text"].startswith("A search for 'Marie Curie Nobel Prize physics' found 3 results")
    assert all(re.match(r"http://127\.0\.0\.1:\d+/wiki/", u) for u in out["meta"]["urls"])


def test_search_readable_output_with_a_given_web_base() -> None:
    r = runner.invoke(app, ["search", "Eiffel Tower", "-k", "2", "--web", "http://127.0.0.1:8088/"])
    assert r.exit_code == 0, r.output
    assert "1. [" in r.stdout and "](http://127.0.0.1:8088/wiki/" in r.stdout


def test_fetch_raw_reads_a_sample_document_from_the_in_command_local_web() -> None:
    found = runner.invoke(app, ["search", "Marie Curie", "-k", "1", "--json"])
    doc_path = "/wiki/" + json.loads(found.stdout)["meta"]["urls"][0].split("/wiki/", 1)[1]
    r = runner.invoke(app, ["fetch", doc_path, "--raw", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] and "Curie" in out["text"]
    assert out["meta"]["fetcher"] == "httpx" and out["meta"]["status"] == 200
    assert len(out["meta"]["snapshot_sha256"]) == 64


def test_fetch_of_a_metadata_address_is_refused() -> None:
    r = runner.invoke(app, ["fetch", "http://169.254.169.254/latest/meta-data/", "--goal", "secrets"])
    assert r.exit_code == 1
    assert "may not be fetched" in r.output and "cloud metadata" in r.output


def test_fetch_of_loopback_needs_an_allowlisted_origin() -> None:
    r = runner.invoke(app, ["fetch", "http://127.0.0.1:8088/wiki/x", "--raw"])
    assert r.exit_code == 1
    assert "loopback" in r.output and "--allow-origin" in r.output


def test_fetch_needs_a_goal_unless_raw() -> None:
    r = runner.invoke(app, ["fetch", "https://example.org/"])
    assert r.exit_code == 2 and "--goal" in r.output


def test_search_rejects_an_unknown_backend() -> None:
    r = runner.invoke(app, ["search", "x", "--backend", "bing"])
    assert r.exit_code == 2 and "local, serper, searxng" in r.output
