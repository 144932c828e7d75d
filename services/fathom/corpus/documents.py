"""Documents of the local corpus and readers for the dataset files they come from.

Every reader yields :class:`Document` values. The format of a file is detected from its content
(and, for the paragraph lists that several datasets share, from its name), so a caller can hand
any mix of files to :func:`read_documents`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fathom.core.errors import FathomError


class CorpusFormatError(FathomError):
    """A corpus file is missing, unreadable, or in no format we know."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str
    url: str | None
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Document:
        return cls(
            id=str(row["id"]),
            title=str(row["title"]),
            text=str(row["text"]),
            url=row.get("url"),
            source=str(row.get("source", "jsonl")),
        )


# Licence of each known source; the manifest and the ATTRIBUTION file are written from this.
SOURCE_LICENCES: dict[str, str] = {
    "hotpotqa": "CC BY-SA 4.0 (HotpotQA; Wikipedia text)",
    "musique": "CC BY 4.0 (MuSiQue; Wikipedia text)",
    "2wikimultihopqa": "Apache-2.0 (2WikiMultihopQA; Wikipedia text)",
    "nq": "CC BY-SA 3.0 (Natural Questions open oracle passages; Wikipedia text)",
    "wikipedia_vital": "CC BY-SA 4.0 (English Wikipedia lead sections of vital articles)",
    "flashrag": "MIT (FlashRAG Wikipedia sample; Wikipedia text CC BY-SA)",
    "jsonl": "as stated by the provider of the file",
}

# Every layout the readers below detect, as (name, container, one-line example). `fathom corpus
# build --help` lists them, and a file in none of them gets an error that names them.
ACCEPTED_FORMATS: tuple[tuple[str, str, str], ...] = (
    ("documents", "JSON lines; id, url and source optional",
     '{"id": "d1", "title": "Paris", "text": "Paris is the capital of France.", "url": "https://x.org/paris"}'),
    ("HotpotQA questions", "JSON array or JSON lines",
     '{"question": "...", "context": [["Paris", ["Paris is the capital.", " It lies on the Seine."]]]}'),
    ("HotpotQA questions, Hugging Face hotpot_qa", "JSON array or JSON lines",
     '{"question": "...", "context": {"title": ["Paris"], "sentences": [["Paris is the capital."]]}}'),
    ("HotpotQA corpus", "JSON object",
     '{"Paris": ["Paris is the capital of France.", " It lies on the Seine."]}'),
    ("MuSiQue questions", "JSON array or JSON lines",
     '{"question": "...", "paragraphs": [{"title": "Paris", "paragraph_text": "Paris is ..."}]}'),
    ("paragraph list", "JSON array; the MuSiQue and 2WikiMultihopQA corpora",
     '[{"title": "Paris", "text": "Paris is the capital of France."}]'),
    ("Wikipedia summaries", "JSON object",
     '{"Paris": {"title": "Paris", "extract": "Paris is the capital of France."}}'),
    ("FlashRAG passages", "JSON lines",
     '{"id": "1", "contents": "\\"Paris\\"\\nParis is the capital of France."}'),
    ("Natural Questions (open, oracle)", "JSON lines",
     '{"question": "...", "ctxs": [{"title": "Paris", "text": "Paris is ...", "isgold": true}]}'),
)


def accepted_formats_text() -> str:
    """The accepted layouts, one line each, for help texts."""
    lines = ["Files: .json or .jsonl, optionally .gz or .xz; a folder stands for every such file in it."]
    lines += [f"  {name} ({container}): {example}" for name, container, example in ACCEPTED_FORMATS]
    return "\n".join(lines)


def _unknown_layout(where: str) -> CorpusFormatError:
    names = "; ".join(name for name, _, _ in ACCEPTED_FORMATS)
    return CorpusFormatError(
        f"{where}: in no layout we read (accepted: {names}; "
        "an example of each in `fathom corpus build --help`)"
    )


_SPACES = re.compile(r"\s+")
_SLUG_DROP = re.compile(r"[^A-Za-z0-9]+")


def normalise_text(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def wikipedia_url(title: str) -> str:
    return "https://en.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe="()_,'-")


def make_doc_id(title: str, text: str) -> str:
    """A readable, URL-safe id that is the same for the same title and text wherever they come from.

    The slug keeps ids readable in URLs and logs; the content hash keeps them unique and makes
    duplicate paragraphs across datasets collapse into one document.
    """
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_DROP.sub("_", folded).strip("_")[:60].strip("_") or "doc"
    digest = hashlib.blake2b(
        (normalise_text(title) + "\n" + normalise_text(text)).encode("utf-8"), digest_size=6
    ).hexdigest()
    return f"{slug}-{digest}"


def make_document(title: str, text: str, source: str, url: str | None = None) -> Document:
    title = normalise_text(title)
    text = normalise_text(text)
    return Document(id=make_doc_id(title, text), title=title, text=text, url=url, source=source)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    if path.suffix == ".xz":
        return io.TextIOWrapper(lzma.open(path, "rb"), encoding="utf-8")
    return io.TextIOWrapper(path.open("rb"), encoding="utf-8")


def _paragraph_source(path: Path) -> str:
    name = path.name.lower()
    if "musique" in name:
        return "musique"
    if "2wiki" in name:
        return "2wikimultihopqa"
    if "hotpot" in name:
        return "hotpotqa"
    return "jsonl"


# --- whole-file JSON formats -------------------------------------------------------------------


def _read_hotpotqa(data: dict[str, list[str]]) -> Iterator[Document]:
    # HotpotQA sentences keep their leading spaces, so joining with "" restores the paragraph.
    for title, sentences in data.items():
        yield make_document(title, "".join(sentences), "hotpotqa", wikipedia_url(title))


def _read_vital(data: dict[str, dict[str, Any]]) -> Iterator[Document]:
    for key, entry in data.items():
        title = str(entry.get("title") or key)
        extract = str(entry.get("extract") or "")
        if extract.strip():
            yield make_document(title, extract, "wikipedia_vital", wikipedia_url(title))


def _read_paragraph_list(rows: list[dict[str, Any]], source: str) -> Iterator[Document]:
    for row in rows:
        text = row.get("text", row.get("paragraph_text", ""))
        if str(text).strip():
            title = str(row.get("title", ""))
            url = row.get("url") or (wikipedia_url(title) if source != "jsonl" else None)
            yield make_document(title, str(text), source, url)


def _hotpotqa_context(context: Any, where: str) -> list[tuple[str, list[str]]]:
    """(title, sentences) pairs of a question's `context`, in either published layout.

    The original files give ``[[title, [sentence, ...]], ...]``; the Hugging Face ``hotpot_qa``
    dataset gives parallel lists ``{"title": [...], "sentences": [[...], ...]}``.
    """
    pairs: list[Any] | None = None
    if isinstance(context, dict):
        titles, sentences = context.get("title"), context.get("sentences")
        if isinstance(titles, list) and isinstance(sentences, list) and len(titles) == len(sentences):
            pairs = list(zip(titles, sentences, strict=True))
    elif isinstance(context, list) and all(isinstance(p, list | tuple) and len(p) == 2 for p in context):
        pairs = context
    if pairs is None or not all(
        isinstance(title, str) and isinstance(sents, list) and all(isinstance(x, str) for x in sents)
        for title, sents in pairs
    ):
        raise CorpusFormatError(
            f"{where}: `context` is neither [[title, [sentences]], ...] (HotpotQA) nor "
            '{"title": [...], "sentences": [[...], ...]} (Hugging Face hotpot_qa)'
        )
    return [(title, list(sents)) for title, sents in pairs]


def _hotpotqa_question(row: dict[str, Any], where: str) -> Iterator[Document]:
    # Question files carry their 10 context paragraphs; they are the same paragraphs as the corpus.
    for title, sentences in _hotpotqa_context(row.get("context"), where):
        yield make_document(title, "".join(sentences), "hotpotqa", wikipedia_url(title))


def _read_hotpotqa_questions(rows: list[dict[str, Any]], path: Path) -> Iterator[Document]:
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CorpusFormatError(f"{path}: item {n} is not a JSON object")
        yield from _hotpotqa_question(row, f"{path}: item {n}")


def _musique_question(row: dict[str, Any], where: str) -> Iterator[Document]:
    paragraphs = row.get("paragraphs")
    if not isinstance(paragraphs, list) or not all(
        isinstance(p, dict) and "title" in p and "paragraph_text" in p for p in paragraphs
    ):
        raise CorpusFormatError(f"{where}: `paragraphs` is not a list of {{title, paragraph_text}} (MuSiQue)")
    for para in paragraphs:
        title = str(para["title"])
        yield make_document(title, str(para["paragraph_text"]), "musique", wikipedia_url(title))


def _read_musique_questions(rows: list[dict[str, Any]], path: Path) -> Iterator[Document]:
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CorpusFormatError(f"{path}: item {n} is not a JSON object")
        yield from _musique_question(row, f"{path}: item {n}")


def _read_json_file(path: Path) -> Iterator[Document]:
    with _open_text(path) as fh:
        data = json.load(fh)
    if isinstance(data, dict) and data:
        first = next(iter(data.values()))
        if isinstance(first, list) and all(isinstance(s, str) for s in first):
            yield from _read_hotpotqa(data)
            return
        if isinstance(first, dict) and "extract" in first:
            yield from _read_vital(data)
            return
    if isinstance(data, list) and data and isinstance(data[0], dict):
        first_row = data[0]
        if "context" in first_row and ("supporting_facts" in first_row or "question" in first_row):
            yield from _read_hotpotqa_questions(data, path)
            return
        if "paragraphs" in first_row and "question" in first_row:
            yield from _read_musique_questions(data, path)
            return
        if "title" in first_row and ("text" in first_row or "paragraph_text" in first_row):
            yield from _read_paragraph_list(data, _paragraph_source(path))
            return
    raise _unknown_layout(f"{path}: JSON document")


# --- line-oriented formats ---------------------------------------------------------------------


def _flashrag_row(row: dict[str, Any]) -> Document | None:
    # FlashRAG stores '"Title"\nbody' in one `contents` string.
    contents = str(row["contents"])
    head, _, body = contents.partition("\n")
    title = head.strip().strip('"')
    if not body.strip():
        return None
    return make_document(title, body, "flashrag", wikipedia_url(title))


def _nq_rows(row: dict[str, Any]) -> Iterator[Document]:
    for ctx in row.get("ctxs", []):
        if ctx.get("isgold", True) and str(ctx.get("text", "")).strip():
            title = str(ctx.get("title", ""))
            yield make_document(title, str(ctx["text"]), "nq", wikipedia_url(title))


def _generic_row(row: dict[str, Any], path: Path, line_no: int) -> Document:
    if "title" not in row or "text" not in row:
        raise CorpusFormatError(
            f"{path}:{line_no}: expected keys id?, title, text, url? in {sorted(row)} "
            "(every other layout we read is listed by `fathom corpus build --help`)"
        )
    title, text = normalise_text(str(row["title"])), normalise_text(str(row["text"]))
    doc_id = str(row["id"]) if row.get("id") else make_doc_id(title, text)
    if not re.fullmatch(r"[A-Za-z0-9_.~-]+", doc_id):
        doc_id = make_doc_id(title, text)  # keep every id URL-safe
    return Document(
        id=doc_id, title=title, text=text, url=row.get("url"), source=str(row.get("source") or "jsonl")
    )


def _read_jsonl_file(path: Path) -> Iterator[Document]:
    kind: str | None = None
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusFormatError(f"{path}:{line_no}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise CorpusFormatError(f"{path}:{line_no}: expected a JSON object per line")
            if kind is None:
                if "ctxs" in row and "question" in row:
                    kind = "nq"
                elif "context" in row and "question" in row:
                    kind = "hotpotqa"
                elif "paragraphs" in row and "question" in row:
                    kind = "musique"
                elif "contents" in row:
                    kind = "flashrag"
                else:
                    kind = "generic"
            if kind == "nq":
                yield from _nq_rows(row)
            elif kind == "hotpotqa":
                yield from _hotpotqa_question(row, f"{path}:{line_no}")
            elif kind == "musique":
                yield from _musique_question(row, f"{path}:{line_no}")
            elif kind == "flashrag":
                doc = _flashrag_row(row)
                if doc is not None:
                    yield doc
            else:
                yield _generic_row(row, path, line_no)


def detect_format(path: Path) -> str:
    """'json' for one JSON value per file, 'jsonl' for one object per line."""
    with _open_text(path) as fh:
        head = fh.read(1 << 16)
    stripped = head.lstrip()
    if not stripped:
        raise CorpusFormatError(f"{path}: empty file")
    if stripped[0] == "[":
        return "json"
    if stripped[0] != "{":
        raise CorpusFormatError(f"{path}: does not start with a JSON object or array")
    first_line = stripped.split("\n", 1)[0]
    try:
        json.loads(first_line)
    except json.JSONDecodeError:
        return "json"  # the first line is not a whole object: a pretty-printed or single JSON value
    return (
        "jsonl"
        if "\n" in stripped.strip() or path.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.xz"))
        else "json"
    )


def read_documents(path: Path) -> Iterator[Document]:
    """Documents of one file, whatever known format it is in."""
    path = Path(path)
    if not path.is_file():
        raise CorpusFormatError(f"{path}: no such file")
    try:
        fmt = detect_format(path)
        if fmt == "json":
            yield from _read_json_file(path)
        else:
            yield from _read_jsonl_file(path)
    except (OSError, UnicodeDecodeError, EOFError, lzma.LZMAError) as exc:
        raise CorpusFormatError(f"{path}: cannot read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise CorpusFormatError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    except CorpusFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # A file that looked like a known layout at first and then broke it (a row with a key
        # missing, a list where text was expected): a format error, not a crash.
        raise CorpusFormatError(
            f"{path}: starts like a layout we read but breaks it further on ({type(exc).__name__}: {exc}); "
            "the accepted layouts are listed by `fathom corpus build --help`"
        ) from exc


def expand_sources(sources: Iterable[Path]) -> list[Path]:
    """Files named directly, plus the corpus-looking files inside directories named."""
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            for pattern in ("*.json", "*.jsonl", "*.json.gz", "*.jsonl.gz", "*.jsonl.xz"):
                files.extend(sorted(src.glob(pattern)))
        else:
            files.append(src)
    return files


def read_many(sources: Iterable[Path]) -> Iterator[Document]:
    """Documents of many files with exact duplicates (same id) dropped, first occurrence wins."""
    seen: set[str] = set()
    for path in expand_sources(sources):
        for doc in read_documents(path):
            if doc.id not in seen:
                seen.add(doc.id)
                yield doc
