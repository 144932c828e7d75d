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
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tantivy

from fathom.core.logging import get_logger
from fathom.corpus.analysis import ANALYZER_VERSION, build_schema, register_analyzer
from fathom.corpus.documents import SOURCE_LICENCES, Document, expand_sources, read_many

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
    """Write a corpus directory from documents (deduplicated by id here as well)."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_dir = out / INDEX_DIR
    if index_dir.exists():
        shutil.rmtree(index_dir)

    kept: list[Document] = []
    seen: set[str] = set()
    for doc in docs:
        if doc.id not in seen:
            seen.add(doc.id)
            kept.append(doc)

    tmp_docs = out / (DOCS_FILE + ".tmp")
    with gzip.open(tmp_docs, "wt", encoding="utf-8", compresslevel=6) as fh:
        for doc in kept:
            fh.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
    tmp_docs.replace(out / DOCS_FILE)
    write_index(kept, index_dir)

    counts = Counter(d.source for d in kept)
    info = CorpusInfo(
        path=out,
        documents=len(kept),
        sources=dict(sorted(counts.items())),
        files=files or [],
        licences={s: SOURCE_LICENCES.get(s, SOURCE_LICENCES["jsonl"]) for s in sorted(counts)},
        build_seconds=round(time.perf_counter() - started, 3),
        extra=extra or {},
    )
    (out / MANIFEST_FILE).write_text(json.dumps(info.to_json(), indent=2), encoding="utf-8")
    log.info("corpus built", path=str(out), documents=info.documents, seconds=info.build_seconds)
    return info


def build_corpus(sources: list[Path], out: Path) -> CorpusInfo:
    """Read every source file (or directory of them), pool and deduplicate, and index."""
    files = expand_sources(sources)
    return build_corpus_from_documents(read_many(files), out, files=[str(f) for f in files])
