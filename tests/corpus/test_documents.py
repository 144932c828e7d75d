from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from fathom.corpus.documents import (
    CorpusFormatError,
    detect_format,
    make_doc_id,
    read_documents,
    read_many,
)

from tests.shared_data import CLOSED, CORPUS

URL_SAFE = re.compile(r"^[A-Za-z0-9_.~-]+$")


@pytest.mark.parametrize(
    ("path", "source", "count"),
    [
        (CLOSED / "hotpotqa_train_corpus.json", "hotpotqa", 994),
        (CLOSED / "musique_train_corpus.json", "musique", 1890),
        (CLOSED / "2wikimultihopqa_corpus.json", "2wikimultihopqa", 6119),
        (CLOSED / "nq-open-oracle.jsonl.gz", "nq", 2655),
        (CORPUS / "wikipedia_vital_summaries.json", "wikipedia_vital", 10033),
        (CORPUS / "flashrag_wiki_sample.jsonl", "flashrag", 1000),
    ],
)
def test_reads_every_shipped_format(path: Path, source: str, count: int) -> None:
    docs = list(read_documents(path))
    assert len(docs) == count
    assert {d.source for d in docs} == {source}
    for doc in docs[:200]:
        assert URL_SAFE.match(doc.id), doc.id
        assert doc.title and doc.text
        assert doc.url and doc.url.startswith("https://en.wikipedia.org/wiki/")


def test_hotpotqa_paragraph_is_joined_from_sentences() -> None:
    raw = json.loads((CLOSED / "hotpotqa_train_corpus.json").read_text())
    docs = {d.title: d for d in read_documents(CLOSED / "hotpotqa_train_corpus.json")}
    sentences = raw["Demon Dice"]
    assert docs["Demon Dice"].text.startswith(sentences[0])
    assert sentences[1].strip() in docs["Demon Dice"].text


def test_flashrag_title_comes_from_first_line() -> None:
    first = next(iter(read_documents(CORPUS / "flashrag_wiki_sample.jsonl")))
    assert first.title == "Evan Morris"
    assert first.text.startswith("Evan Morris Evan L. Morris")


def test_same_paragraph_gets_same_id_across_files() -> None:
    # The question file carries the same context paragraphs as the corpus file.
    from_questions = {d.id for d in read_documents(CLOSED / "hotpotqa_train.json")}
    from_corpus = {d.id for d in read_documents(CLOSED / "hotpotqa_train_corpus.json")}
    assert from_questions == from_corpus
    assert make_doc_id("A  title", "some   text") == make_doc_id("A title", "some text")
    assert make_doc_id("A title", "some text") != make_doc_id("A title", "other text")


def test_pooling_deduplicates() -> None:
    docs = list(read_many([CLOSED / "hotpotqa_train_corpus.json", CLOSED / "hotpotqa_train.json"]))
    assert len(docs) == len({d.id for d in docs}) == 994
    nq = list(read_many([CLOSED / "nq-open-oracle.jsonl.gz"]))
    assert len(nq) < 2655  # many NQ questions share a gold passage
    assert Counter(d.id for d in nq).most_common(1)[0][1] == 1


def test_generic_jsonl_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(
            json.dumps({"id": "doc-1", "title": "One", "text": "First text.", "url": "https://x.org/1"})
            + "\n"
        )
        fh.write(json.dumps({"title": "Two", "text": "Second text."}) + "\n")
        fh.write(json.dumps({"id": "bad id/with slash", "title": "Three", "text": "Third."}) + "\n")
    assert detect_format(path) == "jsonl"
    docs = list(read_documents(path))
    assert [d.title for d in docs] == ["One", "Two", "Three"]
    assert docs[0].id == "doc-1" and docs[0].url == "https://x.org/1"
    assert URL_SAFE.match(docs[1].id) and URL_SAFE.match(docs[2].id)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("hello", "does not start"),
        ('{"a": 1}\n{"b": 2}\n', "expected keys"),
        ('[{"question": "q"}]', "neither"),
        ('{"title": "x", "text": "y"}\nnot json\n', "not JSON"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CorpusFormatError, match=message):
        list(read_documents(path))


def test_missing_file() -> None:
    with pytest.raises(CorpusFormatError, match="no such file"):
        list(read_documents(Path("/nonexistent/corpus.json")))
