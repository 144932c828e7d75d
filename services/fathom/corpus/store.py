"""Read access to a built corpus directory."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from fathom.corpus.build import DOCS_FILE, INDEX_DIR, MANIFEST_FILE, CorpusInfo
from fathom.corpus.documents import CorpusFormatError, Document


class Corpus:
    """All documents of a corpus directory, held in memory (tens of MB for the sample)."""

    def __init__(self, path: Path, docs: dict[str, Document], info: CorpusInfo) -> None:
        self.path = path
        self.info = info
        self._docs = docs
        self._order = list(docs)

    @classmethod
    def open(cls, corpus_dir: Path | str) -> Corpus:
        path = Path(corpus_dir)
        docs_file = path / DOCS_FILE
        if not docs_file.is_file() or not (path / MANIFEST_FILE).is_file():
            raise CorpusFormatError(f"{path}: not a corpus directory (build it with `fathom corpus build`)")
        docs: dict[str, Document] = {}
        with gzip.open(docs_file, "rt", encoding="utf-8") as fh:
            for line in fh:
                doc = Document.from_json(json.loads(line))
                docs[doc.id] = doc
        return cls(path, docs, CorpusInfo.load(path))

    @property
    def index_dir(self) -> Path:
        return self.path / INDEX_DIR

    def get(self, doc_id: str) -> Document:
        try:
            return self._docs[doc_id]
        except KeyError:
            raise KeyError(f"no document {doc_id!r} in corpus {self.path}") from None

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs

    def __len__(self) -> int:
        return len(self._docs)

    def __iter__(self) -> Iterator[Document]:
        return iter(self._docs.values())

    def ids(self) -> list[str]:
        """Document ids in build order (stable: used for deterministic related links)."""
        return self._order
