"""What the ``fathom`` command writes where: the result alone on stdout, and no line broken when the
output is not a terminal, whatever COLUMNS says.

Every command runs here as a user's script runs it: a real process with stdout and stderr piped
apart, COLUMNS=40, and paths far longer than 40 characters.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from fathom.cli.main import app
from fathom.cli.output import CliConsole
from rich.console import Console
from rich.table import Table

NARROW = "40"
LONG = "a-folder-name-much-longer-than-forty-columns/and-another-one-below-it"

# Where each command with --json is checked for a stdout that is the JSON document alone.
JSON_COMMANDS_CHECKED_IN = {
    "search": "here",
    "fetch": "here",
    "corpus sample": "here",
    "corpus prepare": "here",
    "models list": "here",
    "jobs list": "here (empty store) and tests/e2e/test_research_cli.py (with a job)",
    "jobs show": "tests/e2e/test_research_cli.py",
    "report": "tests/e2e/test_research_cli.py",
    "research": "tests/e2e/test_research_cli.py",
    "corpus build": "tests/corpus/test_build.py",
    "bench tools": "tests/bench/test_bench_cli.py",
    "bench research": "tests/bench/test_bench_cli.py",
    "bench plane": "tests/bench/test_bench_cli.py",
    "bench rollouts": "tests/bench/test_bench_rollouts.py",
    "jobs watch": "tests/plane/test_stack.py",
    "stack status": "tests/plane/test_stack.py",
    "store revision": "tests/cli/test_store_cli.py",
}


def fathom(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": NARROW, "FATHOM_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "fathom.cli.main", *args],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def _commands_with_json() -> set[str]:
    def walk(command: object, path: tuple[str, ...]) -> set[str]:
        subs = getattr(command, "commands", None)
        if subs:
            return set().union(*(walk(sub, (*path, name)) for name, sub in subs.items()))
        options = [opt for param in getattr(command, "params", []) for opt in getattr(param, "opts", [])]
        return {" ".join(path)} if "--json" in options else set()

    return walk(typer.main.get_command(app), ())


def test_every_json_command_is_checked_somewhere() -> None:
    # A new --json command must join the list above, and with it a check of its stdout.
    assert _commands_with_json() == set(JSON_COMMANDS_CHECKED_IN)


def _sample_doc_path(data_dir: Path) -> str:
    found = fathom("search", "Marie Curie", "-k", "1", "--json", data_dir=data_dir)
    assert found.returncode == 0, found.stderr
    return "/wiki/" + json.loads(found.stdout)["meta"]["urls"][0].split("/wiki/", 1)[1]


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["search", "Eiffel Tower designer", "-k", "2", "--json"], 0),
        (["fetch", "{doc}", "--raw", "--json"], 0),
        (["fetch", "http://169.254.169.254/latest/meta-data/", "--goal", "keys", "--json"], 1),
        (["corpus", "sample", "--json"], 0),
        (["corpus", "prepare", "--json"], 0),
        (["models", "list", "--json"], 0),
        (["jobs", "list", "--json"], 0),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_json_commands_print_the_json_document_alone(tmp_path: Path, args: list[str], exit_code: int) -> None:
    if "{doc}" in args:
        args = [_sample_doc_path(tmp_path) if a == "{doc}" else a for a in args]
    done = fathom(*args, data_dir=tmp_path)
    assert done.returncode == exit_code, done.stderr[-2000:]
    json.loads(done.stdout)  # the whole of stdout, nothing before or after


def test_errors_go_to_stderr_whole_on_one_line(tmp_path: Path) -> None:
    missing = tmp_path / LONG / "corpus"
    done = fathom("corpus", "serve", str(missing), data_dir=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert f"error: {missing}: not a corpus directory" in done.stderr.splitlines()[0]

    job_id = "0123456789abcdef-no-such-job-and-an-id-longer-than-the-screen"
    done = fathom("jobs", "show", job_id, "--json", data_dir=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: no job with id or id prefix '{job_id}'"]


def test_usage_errors_are_plain_lines_when_piped(tmp_path: Path) -> None:
    # Typer's rich error panel broke the message at the panel's width; piped, click's own line is used.
    done = fathom("search", "x", "--backend", "bing", data_dir=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    message = "Error: Invalid value for --backend: must be one of: local, serper, searxng"
    assert message in done.stderr.splitlines()
    assert "╭" not in done.stderr


def test_help_is_not_wrapped_when_piped(tmp_path: Path) -> None:
    done = fathom("search", "--help", data_dir=tmp_path)
    assert done.returncode == 0
    assert any(
        "Local mode: link hits to this running local web (`fathom corpus serve`)." in line
        for line in done.stdout.splitlines()
    )


def test_cli_console_never_breaks_a_line_that_is_not_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", NARROW)
    path = f"/srv/{LONG}/report.md"
    table = Table("source", "path")
    table.add_row("hotpotqa", path)

    plain = io.StringIO()
    rich_default = Console(file=plain)
    rich_default.print(f"report: {path}")
    assert f"report: {path}" not in plain.getvalue().splitlines()  # what rich does by itself

    piped = io.StringIO()
    console = CliConsole()
    console.file = piped
    console.print(f"[bold]report:[/bold] {path}")
    console.print(table)
    lines = piped.getvalue().splitlines()
    assert lines[0] == f"report: {path}"
    assert any(f"│ hotpotqa │ {path} │" in line for line in lines)
