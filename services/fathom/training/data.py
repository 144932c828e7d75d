"""Training prompts: the closed QA sets in ``shared/data/closed`` and DUETQA-style JSONL.

A source is ``closed:<file>`` (HotpotQA / MuSiQue JSON, NQ-open JSONL.gz under the closed data
directory) or a path to JSONL with one ``{"id", "question", "answer" | "answers"}`` object a line
(the DUETQA shape). ``PromptSchedule`` owns the data order: each epoch is a permutation seeded by
(seed, epoch) over the prompts still active, so a resumed run replays exactly the same order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fathom.training.config import DataConfig

_ROOT = Path(__file__).resolve().parents[3]


def closed_data_dir() -> Path:
    """``shared/data/closed`` inside the checkout or beside it (as tests/shared_data.py finds it)."""
    for base in (_ROOT / "shared" / "data", _ROOT.parent / "shared" / "data"):
        if (base / "closed").is_dir():
            return base / "closed"
    return _ROOT.parent / "shared" / "data" / "closed"


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    question: str
    golds: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _stable_id(question: str) -> str:
    return hashlib.sha1(question.encode("utf-8")).hexdigest()[:16]


def _from_record(rec: dict[str, Any], level: str | None) -> Prompt | None:
    """One QA record of any supported shape, or None when it has no question or no gold answer."""
    question = str(rec.get("question") or "").strip()
    golds: list[str] = []
    if isinstance(rec.get("answers"), list):
        golds += [str(a) for a in rec["answers"]]
    if rec.get("answer") not in (None, ""):
        golds.append(str(rec["answer"]))
    golds += [str(a) for a in rec.get("answer_aliases") or []]
    if not question or not golds:
        return None
    if level is not None and rec.get("level") not in (None, level):
        return None
    pid = str(rec.get("_id") or rec.get("id") or _stable_id(question))
    meta: dict[str, Any] = {k: rec[k] for k in ("level", "type") if k in rec}
    return Prompt(prompt_id=pid, question=question, golds=tuple(dict.fromkeys(golds)), meta=meta)


def _records(path: Path) -> Iterable[dict[str, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        if ".jsonl" in path.name:
            for line in fh:
                if line.strip():
                    yield json.loads(line)
            return
        data = json.load(fh)
    yield from (data if isinstance(data, list) else data.get("data", []))


def resolve_source(source: str) -> Path:
    if source.startswith("closed:"):
        return closed_data_dir() / source.removeprefix("closed:")
    return Path(source)


def load_prompts(config: DataConfig, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """(train, heldout). Prompts are deduplicated by id, shuffled once by ``seed`` (so ``limit`` and
    ``heldout`` pick a random but reproducible subset), and the held-back ones never train."""
    seen: dict[str, Prompt] = {}
    for source in config.sources:
        for rec in _records(resolve_source(source)):
            prompt = _from_record(rec, config.level)
            if prompt is not None and prompt.prompt_id not in seen:
                seen[prompt.prompt_id] = prompt
    prompts = sorted(seen.values(), key=lambda p: p.prompt_id)
    random.Random(seed).shuffle(prompts)
    heldout = prompts[: config.heldout]
    train = prompts[config.heldout:]
    if config.limit is not None:
        train = train[: config.limit]
    if not train:
        raise ValueError(f"no training prompts in {config.sources}")
    return train, heldout


class PromptSchedule:
    """Which prompts each step trains on. Epoch e visits the active prompts in the order of a
    permutation seeded by (seed, e); pruning changes the active set only between epochs."""

    def __init__(self, prompts: Sequence[Prompt], batch_prompts: int, seed: int) -> None:
        self.prompts = {p.prompt_id: p for p in prompts}
        self.batch_prompts = batch_prompts
        self.seed = seed
        self.active: list[str] = sorted(self.prompts)
        self.epoch = 0
        self.position = 0
        self.order: list[str] = self._permutation(0)

    def _permutation(self, epoch: int) -> list[str]:
        order = list(self.active)
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    @property
    def epoch_done(self) -> bool:
        return self.position >= len(self.order)

    def next_batch(self) -> list[Prompt]:
        """The next batch of this epoch (the last one may be short)."""
        ids = self.order[self.position: self.position + self.batch_prompts]
        self.position += len(ids)
        return [self.prompts[i] for i in ids]

    def new_epoch(self, pruned: set[str]) -> None:
        """Drop ``pruned`` prompts and start the next epoch. Nothing left: the schedule is empty."""
        self.active = [i for i in self.active if i not in pruned]
        self.epoch += 1
        self.position = 0
        self.order = self._permutation(self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"active": list(self.active), "epoch": self.epoch, "position": self.position,
                "order": list(self.order), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [i for i in state["active"] if i not in self.prompts]
        if missing:
            raise ValueError(f"checkpoint names prompts this data does not have: {missing[:3]}")
        self.active = list(state["active"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.order = list(state["order"])
