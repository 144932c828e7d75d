from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from fathom.corpus.documents import (
    ACCEPTED_FORMATS,
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
        ('[{"question": "q"}]', "in no layout we read"),
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


def hugging_face_hotpotqa_rows(n: int) -> list[dict]:
    """The first n real HotpotQA questions, in the layout of the Hugging Face `hotpot_qa` dataset."""
    rows = json.loads((CLOSED / "hotpotqa_train.json").read_text())[:n]
    return [
        {
            "id": row["_id"],
            "question": row["question"],
            "answer": row["answer"],
            "type": row["type"],
            "level": row["level"],
            "supporting_facts": {
                "title": [t for t, _ in row["supporting_facts"]],
                "sent_id": [i for _, i in row["supporting_facts"]],
            },
            "context": {
                "title": [t for t, _ in row["context"]],
                "sentences": [s for _, s in row["context"]],
            },
        }
        for row in rows
    ]


def test_reads_the_hugging_face_hotpotqa_layout_as_array_and_as_lines(tmp_path: Path) -> None:
    original = tmp_path / "hotpot_original.json"
    original.write_text(json.dumps(json.loads((CLOSED / "hotpotqa_train.json").read_text())[:20]))
    rows = hugging_face_hotpotqa_rows(20)
    as_array = tmp_path / "hotpot_hf.json"
    as_array.write_text(json.dumps(rows))
    as_lines = tmp_path / "hotpot_hf.jsonl"  # what `datasets.Dataset.to_json` writes by default
    as_lines.write_text("".join(json.dumps(r) + "\n" for r in rows))

    expected = list(read_documents(original))
    assert len(expected) == 200  # 10 context paragraphs per question
    for path in (as_array, as_lines):
        docs = list(read_documents(path))
        assert docs == expected
        assert {d.source for d in docs} == {"hotpotqa"}
    title, sentences = rows[0]["context"]["title"][0], rows[0]["context"]["sentences"][0]
    first = next(iter(read_documents(as_array)))
    assert first.title == title and first.text == "".join(sentences).strip()


def test_question_files_with_a_broken_row_raise_a_format_error(tmp_path: Path) -> None:
    rows = hugging_face_hotpotqa_rows(3)
    rows[2]["context"] = {"title": ["Only a title"], "sentences": []}
    path = tmp_path / "hotpot_hf.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(CorpusFormatError, match=r"item 2: `context` is neither .*Hugging Face hotpot_qa"):
        list(read_documents(path))

    musique = json.loads((CLOSED / "musique_train.json").read_text())[:2]
    del musique[1]["paragraphs"][0]["paragraph_text"]
    lines = tmp_path / "musique.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in musique))
    with pytest.raises(CorpusFormatError, match=r"musique.jsonl:2: `paragraphs` is not a list"):
        list(read_documents(lines))

    flashrag = tmp_path / "flash.jsonl"  # the second row breaks the layout the first one set
    rows_of_flashrag = [{"id": "1", "contents": '"A"\nbody'}, {"id": "2"}]
    flashrag.write_text("".join(json.dumps(r) + "\n" for r in rows_of_flashrag))
    with pytest.raises(CorpusFormatError, match=r"breaks it further on \(KeyError"):
        list(read_documents(flashrag))


def test_musique_questions_read_as_array_and_as_lines(tmp_path: Path) -> None:
    rows = json.loads((CLOSED / "musique_train.json").read_text())[:10]
    as_array, as_lines = tmp_path / "musique_q.json", tmp_path / "musique_q.jsonl"
    as_array.write_text(json.dumps(rows))
    as_lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = list(read_documents(as_array))
    assert docs and docs == list(read_documents(as_lines))
    assert {d.source for d in docs} == {"musique"}


@pytest.mark.parametrize(
    ("name", "container", "example"), ACCEPTED_FORMATS, ids=[f[0] for f in ACCEPTED_FORMATS]
)
def test_every_documented_example_reads(tmp_path: Path, name: str, container: str, example: str) -> None:
    # The help text shows these examples: each must be a file we really read, in each container named.
    files: list[Path] = []
    if "JSON lines" in container:
        files.append(tmp_path / "example.jsonl")
        files[-1].write_text(example + "\n")
    if "JSON array" in container and example.startswith("{"):
        files.append(tmp_path / "example.json")
        files[-1].write_text(f"[{example}]")
    if "JSON array" in container and example.startswith("["):
        files.append(tmp_path / "example.json")
        files[-1].write_text(example)
    if container == "JSON object":
        files.append(tmp_path / "example.json")
        files[-1].write_text(example)
    assert files, container
    for path in files:
        docs = list(read_documents(path))
        assert [d.title for d in docs] == ["Paris"], (name, path.name)
        assert docs[0].text.startswith("Paris is")
