from __future__ import annotations

import lzma
from pathlib import Path

from fathom.core.config import Settings
from fathom.corpus.build import CorpusInfo
from fathom.corpus.sample import ATTRIBUTION_FILE, SAMPLE_FILE, ensure_sample_index
from fathom.tools.search.local import LocalSearchBackend


def test_shipped_sample_is_small_and_attributed() -> None:
    assert SAMPLE_FILE.is_file()
    assert SAMPLE_FILE.stat().st_size < 6_000_000
    with lzma.open(SAMPLE_FILE, "rt", encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    assert lines > 5000
    text = ATTRIBUTION_FILE.read_text()
    for licence in ("CC BY-SA", "CC BY 4.0", "MIT"):
        assert licence in text


def test_ensure_sample_index_builds_once(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")
    path = ensure_sample_index(settings)
    assert path == settings.sample_index_dir
    info = CorpusInfo.load(path)
    assert info.documents > 20_000
    assert {"hotpotqa", "musique", "wikipedia_vital"} <= set(info.sources)
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert ensure_sample_index(settings) == path
    assert (path / "manifest.json").stat().st_mtime_ns == stamp  # not rebuilt
    assert not list(path.parent.glob(".sample.building"))
    hits = LocalSearchBackend(path, "http://127.0.0.1:1").search_sync("Lilu demon Akkadian", 3)
    assert hits and hits[0].title == "Lilu (mythology)"
