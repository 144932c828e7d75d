"""Search benchmark: latency, throughput and recall of gold paragraphs on the pooled closed corpus.

Pools every file of ``<data>/closed`` and ``<data>/corpus`` (about 22k Wikipedia paragraphs) into
one index, cached under the settings' cache directory, then measures:

- p50 / p99 latency and queries per second of full ``search_urls`` calls (BM25 + snippets),
- recall@5 / @10 of gold paragraphs: HotpotQA (paragraphs of the supporting-fact titles) and
  MuSiQue (paragraphs marked ``is_supporting``), averaged over questions,
- the same recall for the optional hybrid (BM25 + all-MiniLM-L6-v2, RRF) when dense vectors are
  cached beside the index (``dense="encode"`` computes them once: minutes on a small CPU).

Benchmarks may read the shared data directory; the package itself never does.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from fathom.core.config import get_settings
from fathom.corpus.analysis import ANALYZER_VERSION
from fathom.corpus.build import MANIFEST_FILE, build_corpus
from fathom.corpus.dense import DenseVectors
from fathom.corpus.documents import make_doc_id
from fathom.corpus.store import Corpus
from fathom.tools.search.local import LocalSearchBackend, RankingParams

# The opt-in pseudo-relevance feedback setting measured beside plain BM25.
FEEDBACK = RankingParams(feedback_docs=1, feedback_terms=10, feedback_weight=0.5)

Question = tuple[str, set[str]]


def default_data_dir() -> Path:
    env = os.environ.get("FATHOM_SHARED_DATA")
    if env:
        return Path(env)
    # services/fathom/bench/search.py -> repository root; shared/ is inside it or beside it
    root = Path(__file__).resolve().parents[3]
    inside = root / "shared" / "data"
    return inside if inside.is_dir() else root.parent / "shared" / "data"


def pooled_corpus(data_dir: Path, cache_root: Path) -> Path:
    """Build the pooled index once; reuse it while the analyzer is unchanged."""
    out = cache_root / "bench" / "pooled"
    manifest = out / MANIFEST_FILE
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("analyzer_version") == ANALYZER_VERSION:
            return out
    build_corpus([data_dir / "closed", data_dir / "corpus"], out)
    return out


def hotpotqa_questions(data_dir: Path) -> list[Question]:
    rows = json.loads((data_dir / "closed" / "hotpotqa_train.json").read_text(encoding="utf-8"))
    out: list[Question] = []
    for row in rows:
        titles = {fact[0] for fact in row["supporting_facts"]}
        gold = {make_doc_id(t, "".join(s)) for t, s in row["context"] if t in titles}
        out.append((row["question"], gold))
    return out


def musique_questions(data_dir: Path) -> list[Question]:
    rows = json.loads((data_dir / "closed" / "musique_train.json").read_text(encoding="utf-8"))
    return [
        (
            row["question"],
            {make_doc_id(p["title"], p["paragraph_text"]) for p in row["paragraphs"] if p["is_supporting"]},
        )
        for row in rows
    ]


def recall_at(
    rank: Callable[[str, int], list[str]], questions: Sequence[Question], ks: Sequence[int]
) -> dict[int, float]:
    """Mean share of each question's gold paragraphs found in the top k, in percent."""
    depth = max(ks)
    totals = dict.fromkeys(ks, 0.0)
    for question, gold in questions:
        ranked = rank(question, depth)
        for k in ks:
            totals[k] += len(gold & set(ranked[:k])) / len(gold)
    return {k: round(100 * v / len(questions), 1) for k, v in totals.items()}


def latency(backend: LocalSearchBackend, queries: Sequence[str], rounds: int) -> dict[str, float]:
    for q in queries[:50]:  # warm caches of the OS and tantivy
        backend.search_sync(q, 10)
    times: list[float] = []
    started = time.perf_counter()
    for i in range(rounds):
        t0 = time.perf_counter()
        backend.search_sync(queries[i % len(queries)], 10)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    times.sort()
    return {
        "p50_ms": round(1000 * statistics.median(times), 3),
        "p99_ms": round(1000 * times[min(len(times) - 1, int(0.99 * len(times)))], 3),
        "qps": round(rounds / wall, 1),
    }


def run_search_bench(
    corpus_dir: Path | None = None,
    queries: int = 2000,
    data_dir: Path | None = None,
    dense: Literal["off", "cached", "encode"] = "cached",
    console: Console | None = None,
) -> dict[str, Any]:
    data_dir = data_dir or default_data_dir()
    corpus_dir = corpus_dir or pooled_corpus(data_dir, get_settings().cache_dir)
    backend = LocalSearchBackend(corpus_dir, "http://127.0.0.1:8088")
    hot, mus = hotpotqa_questions(data_dir), musique_questions(data_dir)
    mixed = [q for q, _ in hot] + [q for q, _ in mus]

    result: dict[str, Any] = {"corpus_dir": str(corpus_dir), "documents": len(backend), "queries": queries}
    result["latency"] = latency(backend, mixed, queries)
    t0 = time.perf_counter()
    for i in range(queries):
        backend.ranked(mixed[i % len(mixed)], 10)
    result["retrieval_only_p_mean_ms"] = round(1000 * (time.perf_counter() - t0) / queries, 3)
    result["bm25"] = {
        "hotpotqa": recall_at(backend.ranked_ids, hot, (5, 10)),
        "musique": recall_at(backend.ranked_ids, mus, (5, 10)),
    }
    feedback = LocalSearchBackend(corpus_dir, "http://127.0.0.1:8088", ranking=FEEDBACK)
    result["feedback_latency"] = latency(feedback, mixed, max(200, queries // 4))
    result["bm25+prf"] = {
        "hotpotqa": recall_at(feedback.ranked_ids, hot, (5, 10)),
        "musique": recall_at(feedback.ranked_ids, mus, (5, 10)),
    }

    vectors: DenseVectors | None = None
    if dense != "off" and DenseVectors.exists(corpus_dir):
        vectors = DenseVectors.load(corpus_dir)
    elif dense == "encode":
        vectors = DenseVectors.encode_corpus(list(Corpus.open(corpus_dir)), corpus_dir)
    if vectors is not None:
        hybrid = LocalSearchBackend(corpus_dir, "http://127.0.0.1:8088", ranking=FEEDBACK, dense=vectors)
        result["hybrid"] = {
            "hotpotqa": recall_at(hybrid.ranked_ids, hot, (5, 10)),
            "musique": recall_at(hybrid.ranked_ids, mus, (5, 10)),
        }
        t0 = time.perf_counter()
        for q in mixed[:100]:
            hybrid.search_sync(q, 10)
        result["hybrid_mean_ms"] = round(1000 * (time.perf_counter() - t0) / 100, 2)
    print_report(result, console or Console())
    return result


def print_report(result: dict[str, Any], console: Console) -> None:
    lat = result["latency"]
    console.print(
        f"[bold]search bench[/bold] — {result['documents']} documents, {result['queries']} queries: "
        f"p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, {lat['qps']} queries/s "
        f"(retrieval alone {result['retrieval_only_p_mean_ms']} ms mean)"
    )
    fb = result["feedback_latency"]
    console.print(f"bm25+prf: p50 {fb['p50_ms']} ms, p99 {fb['p99_ms']} ms, {fb['qps']} queries/s")
    table = Table(title="recall of gold paragraphs (%)")
    for col in ("ranking", "HotpotQA @5", "HotpotQA @10", "MuSiQue @5", "MuSiQue @10"):
        table.add_column(col, justify="right" if "@" in col else "left")
    for name in ("bm25", "bm25+prf", "hybrid"):
        if name in result:
            r = result[name]
            table.add_row(
                name,
                str(r["hotpotqa"][5]),
                str(r["hotpotqa"][10]),
                str(r["musique"][5]),
                str(r["musique"][10]),
            )
    console.print(table)
    if "hybrid_mean_ms" in result:
        console.print(f"hybrid search: {result['hybrid_mean_ms']} ms mean per query (query encoding on CPU)")


if __name__ == "__main__":
    run_search_bench()


def run_local_web_bench(corpus_dir: Path, requests: int = 8000, connections: int = 8) -> dict[str, float]:
    """Requests per second of the local web: keep-alive raw HTTP clients, article pages only."""
    import asyncio

    from fathom.corpus.web import LocalWeb

    web = LocalWeb(corpus_dir).start()
    ids = web.corpus.ids()
    per_conn = max(1, requests // connections)

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection(web.host, web.port)
        for i in range(per_conn):
            doc_id = ids[(offset + i) % len(ids)]
            writer.write(f"GET /wiki/{doc_id} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
        writer.close()

    async def run() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(client(k * per_conn) for k in range(connections)))
        return time.perf_counter() - started

    try:
        seconds = asyncio.run(run())
    finally:
        web.stop()
    return {
        "requests": per_conn * connections,
        "seconds": round(seconds, 3),
        "rps": round(per_conn * connections / seconds),
    }
