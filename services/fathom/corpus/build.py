"""Build a corpus directory: documents, manifest and a Tantivy BM25 index.

Layout of a corpus directory::

    docs.jsonl.gz   one Document per line (the source of truth for the local web)
    manifest.json   counts, source files, licences, analyzer version
    index/          Tantivy index over title and text
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tantivy

from fathom.core.logging import get_logger
from fathom.corpus.analysis import ANALYZER_VERSION, build_schema, register_analyzer
from fathom.corpus.documents import (
    SOURCE_LICENCES,
    CorpusFormatError,
    Document,
    expand_sources,
    read_many,
)

log = get_logger(__name__)

DOCS_FILE = "docs.jsonl.gz"
MANIFEST_FILE = "manifest.json"
INDEX_DIR = "index"
MANIFEST_FORMAT = 1


@dataclass
class CorpusInfo:
    path: Path
    documents: int
    sources: dict[str, int]
    files: list[str]
    licences: dict[str, str]
    analyzer_version: int = ANALYZER_VERSION
    build_seconds: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["format"] = MANIFEST_FORMAT
        return data

    @classmethod
    def load(cls, corpus_dir: Path) -> CorpusInfo:
        data = json.loads((corpus_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(
            path=corpus_dir,
            documents=int(data["documents"]),
            sources=dict(data["sources"]),
            files=list(data["files"]),
            licences=dict(data["licences"]),
            analyzer_version=int(data.get("analyzer_version", 0)),
            build_seconds=float(data.get("build_seconds", 0.0)),
            extra=dict(data.get("extra", {})),
        )


def write_index(docs: Iterable[Document], index_dir: Path) -> int:
    index_dir.mkdir(parents=True, exist_ok=True)
    index = tantivy.Index(build_schema(), path=str(index_dir), reuse=False)
    register_analyzer(index)
    writer = index.writer(heap_size=128_000_000, num_threads=1)
    n = 0
    for doc in docs:
        writer.add_document(
            tantivy.Document(id=doc.id, title=doc.title, text=doc.text, url=doc.url or "", source=doc.source)
        )
        n += 1
    writer.commit()
    writer.wait_merging_threads()
    return n


def build_corpus_from_documents(
    docs: Iterable[Document], out: Path, files: list[str] | None = None, extra: dict[str, str] | None = None
) -> CorpusInfo:
    """Write a corpus directory from documents (deduplicated by id here as well).

    All or nothing: the corpus is written to a temporary folder beside ``out`` and renamed into place
    at the end, so a build that fails (a bad row halfway through a file, a full disk) leaves ``out``
    as it was and nothing of its own behind. An existing corpus at ``out`` is replaced; a folder
    that holds anything else is refused before any work is done.
    """
    started = time.perf_counter()
    out = Path(out).resolve()  # "." or "x/.." still get a real name and parent to build beside
    _check_replaceable(out)
    created = next((p for p in reversed([out.parent, *out.parent.parents]) if not p.exists()), None)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        info = _write_corpus(docs, staging, out, files or [], extra or {}, started)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created is not None:  # folders made only for this build go too
            shutil.rmtree(created, ignore_errors=True)
        raise
    log.info("corpus built", path=str(out), documents=info.documents, seconds=info.build_seconds)
    return info


def _check_replaceable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CorpusFormatError(f"{out}: exists and is not a folder; give a new or empty folder as --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise CorpusFormatError(
            f"{out}: a folder that is neither empty nor a corpus; give a new or empty folder as --out "
            "(an existing corpus folder is replaced)"
        )


def _write_corpus(
    docs: Iterable[Document],
    folder: Path,
    final_path: Path,
    files: list[str],
    extra: dict[str, str],
    started: float,
) -> CorpusInfo:
    kept: list[Document] = []
    seen: set[str] = set()
    for doc in docs:
        if doc.id not in seen:
            seen.add(doc.id)
            kept.append(doc)
    if not kept:
        raise CorpusFormatError(f"no documents with text in {', '.join(files) or 'the input'}")

    with gzip.open(folder / DOCS_FILE, "wt", encoding="utf-8", compresslevel=6) as fh:
        for doc in kept:
            fh.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
    write_index(kept, folder / INDEX_DIR)

    counts = Counter(d.source for d in kept)
    info = CorpusInfo(
        path=final_path,
        documents=len(kept),
        sources=dict(sorted(counts.items())),
        files=files,
        licences={s: SOURCE_LICENCES.get(s, SOURCE_LICENCES["jsonl"]) for s in sorted(counts)},
        build_seconds=round(time.perf_counter() - started, 3),
        extra=extra,
    )
    (folder / MANIFEST_FILE).write_text(json.dumps(info.to_json(), indent=2), encoding="utf-8")
    return info


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished build to ``out``, replacing an empty folder or an older corpus there."""
    if not out.exists():
        staging.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        staging.rename(out)
        return
    # An older corpus: set it aside, put the new one in place, then delete the old one. Readers of
    # `out` see either corpus whole, never a mix.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_corpus(sources: list[Path], out: Path) -> CorpusInfo:
    """Read every source file (or directory of them), pool and deduplicate, and index."""
    files = expand_sources(sources)
    return build_corpus_from_documents(read_many(files), out, files=[str(f) for f in files])
