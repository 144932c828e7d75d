"""The sample corpus shipped inside the package, and its index prepared on first use."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from pathlib import Path

from fathom.core.config import Settings
from fathom.core.logging import get_logger
from fathom.corpus.analysis import ANALYZER_VERSION
from fathom.corpus.build import INDEX_DIR, MANIFEST_FILE, build_corpus_from_documents
from fathom.corpus.documents import CorpusFormatError, read_documents

log = get_logger(__name__)

SAMPLE_FILE = Path(__file__).resolve().parent.parent / "data" / "sample_corpus.jsonl.xz"
ATTRIBUTION_FILE = SAMPLE_FILE.parent / "ATTRIBUTION.md"

_digests: dict[Path, str] = {}


def sample_digest(path: Path = SAMPLE_FILE) -> str:
    if path not in _digests:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _digests[path] = h.hexdigest()[:16]
    return _digests[path]


def _is_current(corpus_dir: Path, digest: str) -> bool:
    manifest = corpus_dir / MANIFEST_FILE
    if not manifest.is_file() or not (corpus_dir / INDEX_DIR / "meta.json").is_file():
        return False
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        data.get("extra", {}).get("sample_digest") == digest
        and data.get("analyzer_version") == ANALYZER_VERSION
    )


def ensure_sample_index(settings: Settings, sample_file: Path = SAMPLE_FILE) -> Path:
    """Build the shipped sample into ``settings.sample_index_dir`` unless it is already there.

    Safe to call from many processes: one builds under a file lock into a temporary directory
    and renames it into place; the others wait and then find it current.
    """
    target = settings.sample_index_dir
    if not sample_file.is_file():
        raise CorpusFormatError(f"the packaged sample corpus is missing ({sample_file})")
    digest = sample_digest(sample_file)
    if _is_current(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(target, digest):
            return target
        started = time.perf_counter()
        tmp = target.parent / f".{target.name}.building"
        if tmp.exists():
            shutil.rmtree(tmp)
        build_corpus_from_documents(
            read_documents(sample_file), tmp, files=[sample_file.name], extra={"sample_digest": digest}
        )
        old = target.parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
        log.info("sample index ready", path=str(target), seconds=round(time.perf_counter() - started, 2))
    return target
