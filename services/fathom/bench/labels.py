"""How often the two step labellers agree on real trajectories.

    python -m fathom.bench.labels --trajectories FILE.jsonl
    python -m fathom.bench.labels --database-url sqlite:///.../fathom.db [--job ID ...] [--limit N]

Runs the embedding labeller and the LLM labeller (the judge model role) over every trajectory and
prints, over all labelled calls: the share of calls with the same label, Cohen's kappa, and per
label how many calls each labeller gave it and on how many they agree. Calls labelled by rule
(failed calls) are counted apart: both labellers label them the same way by construction.

A JSONL line is a trajectory as ``Trajectory.to_dict()`` writes it (``question``, ``steps`` with
their ``tool_calls``), optionally wrapped as ``{"trajectory": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fathom.agent.trajectory import Trajectory
from fathom.core.config import Settings, get_settings
from fathom.reward.formulas import STEP_LABELS, StepLabel
from fathom.reward.labels import EmbeddingLabeller, LlmLabeller


def trajectory_from_dict(data: dict[str, Any]) -> Trajectory:
    """A Trajectory from its ``to_dict`` form."""
    from fathom.rpc.convert import step_from_dict

    data = data.get("trajectory", data)
    fields = {k: v for k, v in data.items() if k in Trajectory.__dataclass_fields__ and k != "steps"}
    return Trajectory(steps=[step_from_dict(s) for s in data.get("steps", [])], **fields)


def read_jsonl(path: Path) -> Iterator[Trajectory]:
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield trajectory_from_dict(json.loads(line))


def read_store(database_url: str, job_ids: Sequence[str], limit: int) -> list[Trajectory]:
    """The latest trajectory of each job (the given ones, or the ``limit`` most recent)."""
    from fathom.store.db import Database
    from fathom.store.repository import JobStore

    store = JobStore(Database(database_url))
    ids = list(job_ids) or [job.id for job in store.list_jobs(page_size=limit)[0]]
    found = (store.load_trajectory(job_id) for job_id in ids)
    return [t for t in found if t is not None]


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa of two raters over the same items; 1.0 when both give one identical label."""
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


@dataclass
class Agreement:
    """Paired labels of the calls both labellers judged on their own (not by rule)."""

    embedding: list[StepLabel] = field(default_factory=list)
    llm: list[StepLabel] = field(default_factory=list)
    rule_labelled: int = 0
    fallbacks: int = 0
    trajectories: int = 0

    def add(self, emb: StepLabel, llm: StepLabel) -> None:
        self.embedding.append(emb)
        self.llm.append(llm)

    @property
    def calls(self) -> int:
        return len(self.embedding)

    @property
    def observed(self) -> float:
        pairs = zip(self.embedding, self.llm, strict=True)
        return sum(x == y for x, y in pairs) / self.calls if self.calls else float("nan")

    @property
    def kappa(self) -> float:
        return cohen_kappa(self.embedding, self.llm)

    def per_label(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for label in STEP_LABELS:
            emb = sum(x == label for x in self.embedding)
            llm = sum(y == label for y in self.llm)
            both = sum(x == y == label for x, y in zip(self.embedding, self.llm, strict=True))
            union = emb + llm - both
            out[label] = {"embedding": emb, "llm": llm, "both": both,
                          "agreement": both / union if union else float("nan")}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"trajectories": self.trajectories, "calls": self.calls,
                "rule_labelled": self.rule_labelled, "llm_fallbacks": self.fallbacks,
                "observed_agreement": self.observed, "cohen_kappa": self.kappa, "per_label": self.per_label()}


async def compare(trajectories: Sequence[Trajectory], embedding: EmbeddingLabeller,
                  llm: LlmLabeller) -> Agreement:
    result = Agreement()
    for traj in trajectories:
        result.trajectories += 1
        emb = await embedding.label_detailed(traj.question, traj)
        mine = await llm.label_detailed(traj.question, traj)
        result.fallbacks += mine.fallbacks
        for e, m, source in zip(emb.labels, mine.labels, mine.sources, strict=True):
            if source == "rule":
                result.rule_labelled += 1
            else:
                result.add(e.label, m.label)
    return result


def render(agreement: Agreement, embedding_name: str, llm_name: str) -> str:
    lines = [
        f"labellers: {embedding_name} vs {llm_name}",
        f"trajectories {agreement.trajectories}  calls compared {agreement.calls}  "
        f"failed calls (rule) {agreement.rule_labelled}  LLM fallbacks {agreement.fallbacks}",
        f"agreement {agreement.observed:.3f}  Cohen's kappa {agreement.kappa:.3f}",
        f"{'label':<18}{'embedding':>10}{'llm':>6}{'both':>6}{'agree':>8}",
    ]
    for label, row in agreement.per_label().items():
        lines.append(f"{label:<18}{row['embedding']:>10.0f}{row['llm']:>6.0f}{row['both']:>6.0f}"
                     f"{row['agreement']:>8.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fathom.bench.labels",
                                     description=(__doc__ or "").split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--trajectories", type=Path, help="JSONL, one trajectory a line")
    src.add_argument("--database-url", help="read the trajectories of jobs from this store")
    parser.add_argument("--job", action="append", default=[], help="job id (repeatable; default: recent)")
    parser.add_argument("--limit", type=int, default=50, help="most recent jobs to read from the store")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    settings = settings or get_settings()
    trajs = list(read_jsonl(args.trajectories)) if args.trajectories else read_store(
        args.database_url, args.job, args.limit)
    if not trajs:
        print("no trajectories found", file=sys.stderr)
        return 1
    from fathom.models.factory import build_backend

    embedding = EmbeddingLabeller(settings)
    llm = LlmLabeller(build_backend("judge", settings), settings, None, fallback=embedding)
    started = time.perf_counter()
    agreement = asyncio.run(compare(trajs, embedding, llm))
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({**agreement.to_dict(), "llm_labeller": llm.name, "seconds": elapsed}))
    else:
        tail = f"\n({elapsed:.1f} s, {llm.model_calls} model calls)"
        print(render(agreement, embedding.name, llm.name) + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
