from __future__ import annotations

import json
from pathlib import Path

import pytest
import tantivy
from fathom.cli.corpus import app
from fathom.corpus.build import build_corpus
from fathom.corpus.documents import CorpusFormatError
from fathom.corpus.store import Corpus
from typer.testing import CliRunner

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
    data = json.loads(result.stdout[result.stdout.index("{") :])
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
