from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tantivy
from fathom.cli.corpus import app
from fathom.corpus.build import build_corpus
from fathom.corpus.documents import ACCEPTED_FORMATS, CorpusFormatError
from fathom.corpus.store import Corpus
from typer.testing import CliRunner

from tests.corpus.test_documents import hugging_face_hotpotqa_rows
from tests.shared_data import CLOSED, CORPUS


def test_build_writes_docs_manifest_and_index(small_corpus_dir: Path, small_corpus: Corpus) -> None:
    manifest = json.loads((small_corpus_dir / "manifest.json").read_text())
    assert manifest["documents"] == len(small_corpus) == sum(manifest["sources"].values())
    assert manifest["sources"] == {"hotpotqa": 994, "musique": 1890}
    assert "CC BY-SA" in manifest["licences"]["hotpotqa"]
    assert "CC BY 4.0" in manifest["licences"]["musique"]
    index = tantivy.Index.open(str(small_corpus_dir / "index"))
    assert index.searcher().num_docs == len(small_corpus)


def test_corpus_get_len_iter(small_corpus: Corpus) -> None:
    docs = list(small_corpus)
    assert len(docs) == len(small_corpus)
    first = docs[0]
    assert small_corpus.get(first.id) == first
    assert first.id in small_corpus
    with pytest.raises(KeyError, match="no document"):
        small_corpus.get("missing-id")


def test_open_rejects_non_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusFormatError, match="not a corpus directory"):
        Corpus.open(tmp_path)


def test_cli_build_json_and_table(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "c"
    result = runner.invoke(
        app, ["build", str(CORPUS / "flashrag_wiki_sample.jsonl"), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["documents"] == 1000 and data["sources"] == {"flashrag": 1000}
    table = runner.invoke(
        app, ["build", str(CLOSED / "hotpotqa_train_corpus.json"), "--out", str(tmp_path / "d")]
    )
    assert table.exit_code == 0 and "hotpotqa" in table.output and "994" in table.output


def test_cli_build_bad_source(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a corpus"}')
    result = CliRunner().invoke(app, ["build", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "error" in result.output


def test_rebuild_replaces_index(tmp_path: Path) -> None:
    out = tmp_path / "c"
    build_corpus([CORPUS / "flashrag_wiki_sample.jsonl"], out)
    info = build_corpus([CLOSED / "hotpotqa_train_corpus.json"], out)
    assert info.documents == 994
    assert tantivy.Index.open(str(out / "index")).searcher().num_docs == 994


def _fathom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "40"}  # nothing printed may depend on it when piped
    return subprocess.run(
        [sys.executable, "-m", "fathom.cli.main", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False,
    )


def test_cli_builds_the_hugging_face_hotpotqa_layout(tmp_path: Path) -> None:
    source = tmp_path / "hotpot_qa_train.json"
    source.write_text(json.dumps(hugging_face_hotpotqa_rows(30)))
    out = tmp_path / "corpus"
    done = _fathom("corpus", "build", str(source), "--out", str(out), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)  # stdout is the JSON document alone
    assert manifest["sources"] == {"hotpotqa": manifest["documents"]}
    assert manifest["documents"] == len(Corpus.open(out)) >= 250  # 30 questions x 10 paragraphs, some shared
    assert manifest["path"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", source.name]  # nothing left beside


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    rows = hugging_face_hotpotqa_rows(30)
    rows[-1]["context"] = "not a context"  # the last question breaks the layout, after 290 good paragraphs
    source = tmp_path / "hotpot_qa_train.json"
    source.write_text(json.dumps(rows))
    out = tmp_path / "new" / "deeper" / "corpus"
    done = _fathom("corpus", "build", str(source), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    error_line = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert f"{source}: item 29: `context` is neither" in error_line  # whole path, on one line
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]  # not even the parent folders


def test_a_failed_rebuild_keeps_the_corpus_that_was_there(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    build_corpus([CLOSED / "hotpotqa_train_corpus.json"], out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"title": "A", "text": "a"}) + "\n" + json.dumps({"title": "B"}) + "\n")
    with pytest.raises(CorpusFormatError, match="expected keys"):
        build_corpus([bad], out)
    assert len(Corpus.open(out)) == 994
    assert tantivy.Index.open(str(out / "index")).searcher().num_docs == 994
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "corpus"]


def test_build_refuses_a_folder_that_is_not_a_corpus(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(CorpusFormatError, match="neither empty nor a corpus"):
        build_corpus([CLOSED / "hotpotqa_train_corpus.json"], out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_corpus([CLOSED / "hotpotqa_train_corpus.json"], empty).documents == 994


def test_build_help_lists_every_accepted_layout_with_an_example(tmp_path: Path) -> None:
    done = _fathom("corpus", "build", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name, container, example in ACCEPTED_FORMATS:
        # one line each, whole, although COLUMNS=40
        assert any(line.strip() == f"{name} ({container}): {example}" for line in lines), name
    assert "Hugging Face hotpot_qa" in done.stdout
