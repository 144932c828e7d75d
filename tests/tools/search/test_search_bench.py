from __future__ import annotations

from pathlib import Path

from fathom.bench.search import hotpotqa_questions, musique_questions, run_search_bench
from rich.console import Console

from tests.shared_data import SHARED_DATA


def test_bench_runs_on_a_small_corpus(small_corpus_dir: Path) -> None:
    console = Console(record=True, width=120)
    result = run_search_bench(
        small_corpus_dir, queries=60, data_dir=SHARED_DATA, dense="off", console=console
    )
    assert result["documents"] > 2000
    assert result["latency"]["p50_ms"] > 0 and result["latency"]["qps"] > 0
    for ranking in ("bm25", "bm25+prf"):
        for dataset in ("hotpotqa", "musique"):
            recall = result[ranking][dataset]
            assert 0 < recall[5] <= recall[10] <= 100
    assert "hybrid" not in result
    assert "recall of gold paragraphs" in console.export_text()


def test_gold_sets_come_from_real_questions() -> None:
    hot, mus = hotpotqa_questions(SHARED_DATA), musique_questions(SHARED_DATA)
    assert len(hot) == len(mus) == 100
    assert all(1 <= len(gold) <= 4 for _, gold in hot + mus)
