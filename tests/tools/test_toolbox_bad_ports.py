"""Ports outside 1-65535 through the agent's ``query_url`` and through ``fathom fetch``.

Before the guard checked ports, ``:99999`` reached the socket layer and failed there with an
``OverflowError``: the agent read "internal error", the CLI printed a traceback. Every URL here is
refused before anything connects, so no network is needed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fathom.cli.main import app
from fathom.core.config import FetchSettings, Settings, get_settings
from fathom.core.logging import configure_logging
from fathom.tools.toolbox import Toolbox, build_toolbox
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FATHOM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    configure_logging()  # bind structlog to this test's stderr (CliRunner swaps it per call)
    yield
    get_settings.cache_clear()


@pytest.fixture(params=[True, False], ids=["robots", "no-robots"])
async def toolbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Toolbox]:
    # With robots on, the bad port used to fail inside the robots.txt fetch and came back as a
    # false "disallowed by robots.txt"; with robots off it reached connect() and the agent read
    # "internal error (OverflowError)".
    settings = Settings(data_dir=tmp_path / "data", fetch=FetchSettings(respect_robots=request.param))
    tb = build_toolbox(settings)
    yield tb
    await tb.aclose()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34:99999/", "port 99999 is outside 1-65535"),
        ("https://93.184.216.34:65536/page", "port 65536 is outside 1-65535"),
        ("http://[2606:4700::1111]:70000/", "port 70000 is outside 1-65535"),
        ("http://93.184.216.34:+80/", "invalid port '+80'"),
    ],
)
async def test_query_url_refuses_a_bad_port_as_a_tool_error(toolbox: Toolbox, url: str, reason: str) -> None:
    r = await toolbox.call("query_url", {"url": url, "goal": "opening hours"})
    assert not r.ok
    assert r.meta["error"] == "SSRFError"
    assert reason in r.text
    assert "internal error" not in r.text and "robots" not in r.text


def _no_traceback(result: object) -> None:
    exc = getattr(result, "exception", None)
    assert exc is None or isinstance(exc, SystemExit), repr(exc)
    assert "Traceback" not in getattr(result, "output", "")


@pytest.mark.parametrize("mode", [["--raw"], ["--goal", "opening hours"]], ids=["raw", "query_url"])
def test_fetch_cli_prints_the_refusal_and_exits_nonzero(mode: list[str]) -> None:
    r = runner.invoke(app, ["fetch", "http://93.184.216.34:99999/", *mode])
    _no_traceback(r)
    assert r.exit_code == 1
    assert "port 99999 is outside 1-65535" in r.output


def test_fetch_cli_with_an_allowlisted_origin_on_a_bad_port() -> None:
    # The allowlist used to take the port as given, and the fetch then crashed in connect().
    r = runner.invoke(
        app, ["fetch", "http://127.0.0.1:99999/", "--raw", "--allow-origin", "http://127.0.0.1:99999"]
    )
    _no_traceback(r)
    assert r.exit_code == 2
    assert "allowlisted origin 'http://127.0.0.1:99999': port 99999 is outside 1-65535" in r.output
