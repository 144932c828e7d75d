"""One rule for the extractor's answer budget, whoever builds the extractor: ``fathom fetch`` (through
the real CLI app, on the shipped sample corpus) and the research runtime get the same from the same
settings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fathom.cli.main import app
from fathom.core.config import WEAK_EXTRACTOR_TOKENS, get_settings
from fathom.core.logging import configure_logging
from fathom.research.runtime import LocalRuntime
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Snapshots and the job database go to a temporary data dir; the cache dir (sample index,
    # models) stays shared. The extraction cache is off so that every fetch really runs the model.
    monkeypatch.setenv("FATHOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FATHOM_EXTRACT__CACHE", "false")
    get_settings.cache_clear()
    configure_logging()
    yield
    get_settings.cache_clear()


def _fetch_budget() -> int:
    found = runner.invoke(app, ["search", "Marie Curie", "-k", "1", "--json"])
    assert found.exit_code == 0, found.output
    doc_path = "/wiki/" + json.loads(found.stdout)["meta"]["urls"][0].split("/wiki/", 1)[1]
    r = runner.invoke(app, ["fetch", doc_path, "--goal", "When did Marie Curie win a Nobel Prize?", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"], out["text"]
    return int(out["meta"]["extractor_max_new_tokens"])


def _runtime_budget() -> int:
    async def enter() -> int:
        async with LocalRuntime(get_settings()) as rt:
            # The runtime derives nothing of its own: the configured value stays what it was.
            assert rt.settings.extractor.max_new_tokens == get_settings().extractor.max_new_tokens
            return rt.toolbox.extractor.max_new_tokens

    # Both entry points run their own event loop, as they do in use (the CLI calls asyncio.run).
    return asyncio.run(enter())


@pytest.mark.slow
def test_fetch_and_runtime_give_the_bundled_extractor_the_same_budget() -> None:
    assert get_settings().extractor_budget == WEAK_EXTRACTOR_TOKENS
    assert _runtime_budget() == WEAK_EXTRACTOR_TOKENS
    assert _fetch_budget() == WEAK_EXTRACTOR_TOKENS


@pytest.mark.slow
def test_a_configured_budget_holds_for_fetch_and_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FATHOM_EXTRACTOR__MAX_NEW_TOKENS", "300")
    get_settings.cache_clear()
    assert get_settings().extractor_budget == 300
    assert _runtime_budget() == 300
    assert _fetch_budget() == 300
