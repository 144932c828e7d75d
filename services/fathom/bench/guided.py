"""Guided-policy evaluation: the bundled model answering multi-hop questions through the local runtime.

Questions come from the closed HotpotQA / MuSiQue files of the shared data (bridge and 2-hop
questions, picked by a fixed rule from a given offset, so a held-out slice stays held out); their
gold paragraphs are in the shipped sample corpus, which is what the local search serves. Each
question runs through ``LocalRuntime``'s own agent loop (search mode, no report). Measured per
question: turns, tool calls, whether the gold pages were offered and read, and the answer scored
by exact match and by "contains the gold answer" after SQuAD-style normalisation.

Run: ``python -m fathom.bench.guided --data ../shared/data --offset 50 --per-source 5``. Benchmarks
may read the shared data directory; the package itself never does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import string
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fathom.agent.support import verified_quotes
from fathom.agent.trajectory import ToolCall, Trajectory
from fathom.core.config import Settings, get_settings
from fathom.corpus.documents import make_doc_id


@dataclass(frozen=True)
class MultiHopQuestion:
    source: str
    id: str
    question: str
    answers: tuple[str, ...]  # the gold answer and its aliases
    gold_ids: frozenset[str]  # document ids of the gold paragraphs


def hotpotqa_bridge(path: Path) -> list[MultiHopQuestion]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out: list[MultiHopQuestion] = []
    for row in rows:
        if row.get("type") != "bridge":
            continue
        titles = {fact[0] for fact in row["supporting_facts"]}
        gold = frozenset(make_doc_id(t, "".join(s)) for t, s in row["context"] if t in titles)
        out.append(MultiHopQuestion("hotpotqa", row["_id"], row["question"].strip(), (row["answer"],), gold))
    return out


def musique_two_hop(path: Path) -> list[MultiHopQuestion]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out: list[MultiHopQuestion] = []
    for row in rows:
        if not row["id"].startswith("2hop") or not row.get("answerable", True):
            continue
        gold = frozenset(make_doc_id(p["title"], p["paragraph_text"]) for p in row["paragraphs"]
                         if p["is_supporting"])
        answers = (row["answer"], *row.get("answer_aliases", []))
        out.append(MultiHopQuestion("musique", row["id"], row["question"].strip(), answers, gold))
    return out


def select_questions(data_dir: Path, offset: int, per_source: int, indexed: set[str] | None = None,
                     ) -> list[MultiHopQuestion]:
    """``per_source`` questions of each source, in file order from row ``offset`` of that source's
    own filtered list, keeping only questions whose gold paragraphs are all in ``indexed``."""
    closed = data_dir / "closed"
    picked: list[MultiHopQuestion] = []
    pools = (hotpotqa_bridge(closed / "hotpotqa_train.json"), musique_two_hop(closed / "musique_train.json"))
    for pool in pools:
        usable = [q for q in pool[offset:] if indexed is None or q.gold_ids <= indexed]
        picked.extend(usable[:per_source])
    return picked


# --- scoring -----------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(answer: str | None, golds: tuple[str, ...]) -> bool:
    return answer is not None and any(normalise_answer(answer) == normalise_answer(g) for g in golds)


def contains_gold(answer: str | None, golds: tuple[str, ...]) -> bool:
    if not answer:
        return False
    a = normalise_answer(answer)
    return any(normalise_answer(g) and normalise_answer(g) in a for g in golds)


def _doc_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def score_trajectory(q: MultiHopQuestion, traj: Trajectory, wall_s: float) -> dict[str, Any]:
    calls = traj.tool_calls
    offered: set[str] = set()
    for c in calls:
        if c.name == "search_urls" and c.ok:
            offered.update(_doc_id(str(u)) for u in c.meta.get("urls", []))
    read = {_doc_id(str(c.arguments.get("url", ""))) for c in calls if c.name == "query_url" and c.ok}
    return {
        "source": q.source, "id": q.id, "question": q.question, "gold": q.answers[0],
        "answer": traj.answer, "stop_reason": traj.stop_reason,
        "exact_match": exact_match(traj.answer, q.answers),
        "contains_gold": contains_gold(traj.answer, q.answers),
        "turns": len(traj.steps), "tool_calls": len(calls),
        "searches": sum(1 for c in calls if c.name == "search_urls"),
        "reads": sum(1 for c in calls if c.name == "query_url"),
        "queries": [c.arguments.get("query") for c in calls if c.name == "search_urls"],
        "gold_pages": len(q.gold_ids), "gold_offered": len(q.gold_ids & offered),
        "gold_read": len(q.gold_ids & read), "wall_s": round(wall_s, 1),
        "model_s": round(sum(s.model_s for s in traj.steps), 1),
        "tools_s": round(sum(s.tools_s for s in traj.steps), 1),
        "actions": [s.meta.get("guided_action") for s in traj.steps],
        "trace": [_trace_line(c) for c in calls],
    }


def _trace_line(call: ToolCall) -> str:
    """One tool call as a line for reading the run afterwards: the query, or the page and its quotes."""
    if call.name == "search_urls":
        return f"search: {call.arguments.get('query')}"
    quotes = " | ".join(verified_quotes(call.result or ""))
    return f"read {_doc_id(str(call.arguments.get('url', '')))}: {quotes or '(no quotes)'}"


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows) or 1
    return {
        "questions": len(rows),
        "exact_match": sum(r["exact_match"] for r in rows) / n,
        "contains_gold": sum(r["contains_gold"] for r in rows) / n,
        "mean_turns": sum(r["turns"] for r in rows) / n,
        "mean_tool_calls": sum(r["tool_calls"] for r in rows) / n,
        "mean_searches": sum(r["searches"] for r in rows) / n,
        "mean_reads": sum(r["reads"] for r in rows) / n,
        "both_gold_offered": sum(r["gold_offered"] == r["gold_pages"] for r in rows),
        "both_gold_read": sum(r["gold_read"] == r["gold_pages"] for r in rows),
        "mean_wall_s": sum(r["wall_s"] for r in rows) / n,
    }


# --- running -----------------------------------------------------------------------------------


async def run_guided_eval(settings: Settings, questions: list[MultiHopQuestion], *, seed: int | None = 0,
                          progress: bool = True) -> dict[str, Any]:
    from fathom.research.runtime import LocalRuntime

    rows: list[dict[str, Any]] = []
    async with LocalRuntime(settings) as rt:
        agent = rt.service.agent
        if seed is not None:
            # A fixed seed per request makes the run repeatable at the policy's own temperature.
            agent.sampling = replace(agent.sampling, seed=seed)
        for q in questions:
            t0 = time.perf_counter()
            traj = await agent.run(q.question)
            row = score_trajectory(q, traj, time.perf_counter() - t0)
            rows.append(row)
            if progress:
                print(json.dumps(row, ensure_ascii=False), flush=True)
    return {"summary": summarise(rows), "rows": rows,
            "settings": {"agent": settings.agent.model_dump(), "seed": seed}}


def indexed_ids(settings: Settings) -> set[str]:
    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.store import Corpus

    index_dir = settings.search.index_dir or ensure_sample_index(settings)
    return set(Corpus.open(index_dir).ids())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, required=True, help="the shared data directory")
    parser.add_argument("--offset", type=int, default=50, help="first row of each filtered source list")
    parser.add_argument("--per-source", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the full result as JSON here")
    args = parser.parse_args(argv)
    settings = get_settings()
    questions = select_questions(args.data, args.offset, args.per_source, indexed_ids(settings))
    result = asyncio.run(run_guided_eval(settings, questions, seed=args.seed))
    print(json.dumps(result["summary"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
