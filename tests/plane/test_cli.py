"""`fathom batch` input rules and export, as a user runs them (real CLI processes, a real SQLite store):
a bad line names its number and submits nothing; export writes JSONL and parquet from the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fathom.cli.batch import BatchFileError, chunks, read_items


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fathom.cli.main", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_read_items_takes_answer_or_gold_answer_and_default_ids(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "Q1", "id": "a", "answer": "x"}\n\n'
                 '{"question": "Q2", "gold_answer": ["y", "z"]}\n')
    items = read_items(f, 100)
    assert [(i.question, i.id, i.gold_answer) for i in items] == [("Q1", "a", "x"), ("Q2", "1", "y | z")]
    assert [len(c) for c in chunks(items * 10_001)] == [10_000, 10_000, 2]


@pytest.mark.parametrize(("line", "why"), [
    ("not json", "line 2: not JSON"),
    ('["q"]', "line 2: expected a JSON object"),
    ('{"question": "  "}', "line 2: 'question' must be a non-empty string"),
    ('{"question": "' + "x" * 101 + '"}', "line 2: question is 101 characters (at most 100)"),
])
def test_a_bad_line_is_named(tmp_path: Path, line: str, why: str) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "fine"}\n' + line + "\n")
    with pytest.raises(BatchFileError, match=__import__("re").escape(why)):
        read_items(f, 100)


def test_submit_refuses_a_bad_file_before_any_call(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "fine"}\n{"question": 3}\n')
    # A gateway address where nothing listens: a call would fail differently (UNAVAILABLE).
    done = _cli({"FATHOM_PLANE__GATEWAY_ADDRESS": "127.0.0.1:1", "FATHOM_PLANE__CLIENT_TOKEN": "t"},
                "batch", "submit", str(f))
    assert done.returncode == 2
    assert "line 2: 'question' must be a non-empty string; nothing was submitted" in done.stderr
    assert done.stdout == ""


def test_export_jsonl_and_parquet_from_the_store(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from fathom.core.config import Settings
    from fathom.store.db import Database
    from fathom.store.records import BatchItemIn
    from fathom.store.repository import JobStore

    url = f"sqlite:///{tmp_path / 'fathom.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url)
    db = Database(url)
    db.migrate()
    store = JobStore(db)
    batch = store.create_batch([BatchItemIn("Q1", "a", "x"), BatchItemIn("Q2", "b", None)], mode="search",
                               lane="train", priority=0, name="n", client_id="c", client_request_id=None,
                               settings=settings.model_dump(mode="json"))
    db.dispose()
    env = {"FATHOM_DATABASE_URL": url, "FATHOM_DATA_DIR": str(tmp_path), "FATHOM_PLANE__CLIENT_TOKEN": "t"}
    out = tmp_path / "out.jsonl"
    done = _cli(env, "batch", "export", batch.id, "--format", "jsonl", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == ["Q1", "Q2"]
    pout = tmp_path / "out.parquet"
    done = _cli(env, "batch", "export", batch.id, "--format", "parquet", "--out", str(pout))
    assert done.returncode == 0, done.stderr
    assert pq.read_table(pout).num_rows == 2
