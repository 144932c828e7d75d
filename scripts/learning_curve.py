"""The learning proof: RAPO (the real trainer, ``direct`` rollouts) moves a measure on held-back prompts.

Task ``format`` (the default): closed-book NQ-open questions, one sampled answer per rollout, the
direct task's stage-1-shaped reward ``0.1 * format + 0.9 * exact match`` (``direct_reward`` in
``fathom.training.trainer``: format = exactly one non-empty ``\\boxed{}`` with nothing after it). The
question is put in a two-shot frame (``TEMPLATES``), since with the bare question the untrained
SmolLM2-135M writes a well-formed ``\\boxed{}`` in 0 of 64 samples (no GRPO signal at all); with the
frame it does in ~9%. Closed-book exact match stays ~0 for a 135M model, so the reward is in
practice the format term: the thing this run can learn in a few steps.

Measure, on held-back prompts never trained on, before training and every ``eval_every`` steps: the
fraction of well-formed answers among ``--eval-samples`` sampled answers per prompt (at the rollout
temperature, a fixed sampling seed per training seed, so that step 0's spread over seeds is the
measurement noise) and of the greedy answer, plus mean reward and answer length. Generation for the
evaluation is one left-padded batch over all held-back prompts (the CPU budget), with the same prompt
ids and the same reward function as the training rollouts.

Each seed is one invocation that writes ``<run-dir>/seed<N>.json``; every invocation then rebuilds the
aggregate from all seed files in ``--run-dir``: ``learning.json``, ``learning-evals.csv``,
``learning-train.csv`` and ``learning.png`` in ``--out``. Hyper-parameters come from the RAPO run
config (``configs/rapo-learn.yaml``), which ``fathom train rapo --config`` also reads::

    .venv/bin/python scripts/learning_curve.py --seed 0 --run-dir /work/learnruns/format
    .venv/bin/python scripts/learning_curve.py --aggregate-only --run-dir /work/learnruns/format
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services"))

from fathom.training.config import RunConfig, load_config  # noqa: E402
from fathom.training.data import Prompt, closed_data_dir  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "rapo-learn.yaml"
DATA_SEED = 1234  # one fixed train / held-back split for every training seed
PASSAGE_WORDS = 40  # context-f1: a window of the oracle passage around the answer
# The question's frame: two worked examples before it (the trainer appends its own instruction,
# "Answer with a short phrase inside \boxed{}."). Neither example's answer is an NQ gold we use.
TEMPLATES = {
    "plain": "{q}",
    "two-shot": ("Q: who wrote the play hamlet?\nA: \\boxed{{William Shakespeare}}\n\n"
                 "Q: what is the capital of france?\nA: \\boxed{{Paris}}\n\nQ: {q}\nA:"),
}
# The frame's own example answers: an answer that repeats one is well formed but copied, not learned.
EXAMPLE_ANSWERS = ("William Shakespeare", "Paris")
EVAL_KEYS = ("format", "format_greedy", "reward", "reward_greedy", "exact_match", "any_box", "tokens",
             "tokens_greedy", "copied", "copied_greedy", "distinct_greedy")
TRAIN_KEYS = ("step", "reward_mean", "reward_std", "solve_rate", "train_format", "groups_nonzero_std",
              "kl", "clip_fraction", "entropy", "grad_norm", "response_tokens_per_rollout", "rollout_s",
              "trainer_s", "step_s")


# ---------------------------------------------------------------------- data


def passage_window(text: str, answers: list[str], words: int = PASSAGE_WORDS) -> str:
    """``words`` words of the passage around the first answer occurrence (the start when none)."""
    tokens = text.split()
    low = text.lower()
    hit = min((low.find(a.lower()) for a in answers if a.lower() in low), default=0)
    centre = len(text[:hit].split())
    start = max(0, min(centre - words // 2, len(tokens) - words))
    return " ".join(tokens[start: start + words])


def load_nq(task: str, template: str, n_train: int, n_heldout: int,
            data_seed: int = DATA_SEED) -> tuple[list[Prompt], list[Prompt]]:
    """Disjoint train / held-back NQ-open prompts (single-hop; records whose oracle passage holds the
    answer). One fixed split for every seed, so seeds differ only in training."""
    path = closed_data_dir() / "nq-open-oracle.jsonl.gz"
    frame = TEMPLATES[template]
    prompts: list[Prompt] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            rec = json.loads(line)
            ctx = next((c for c in rec.get("ctxs", []) if c.get("hasanswer")), None)
            if ctx is None or not rec.get("answers"):
                continue
            question = rec["question"].strip().rstrip("?") + "?"
            if task == "context-f1":
                passage = passage_window(str(ctx["text"]), [str(a) for a in rec["answers"]])
                question = f"{ctx['title']}: {passage}\n\nQuestion: {question}"
            prompts.append(Prompt(f"nq-{i}", frame.format(q=question), tuple(str(a) for a in rec["answers"])))
    random.Random(data_seed).shuffle(prompts)
    return prompts[n_heldout: n_heldout + n_train], prompts[:n_heldout]


def write_prompts(prompts: Sequence[Prompt], path: Path) -> None:
    """The prompts as DUETQA-shaped JSONL, the shape ``fathom train rapo`` reads as a data source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for p in prompts:
            fh.write(json.dumps({"id": p.prompt_id, "question": p.question, "answers": list(p.golds)}) + "\n")


# ---------------------------------------------------------------------- measuring


def heldout_eval(source: Any, prompts: Sequence[Prompt], *, samples: int, seed: int) -> dict[str, Any]:
    """Format rate, reward, exact match and length of ``samples`` sampled answers per held-back
    prompt (rollout temperature) and of the greedy answer, scored by the training reward."""
    import torch
    from fathom.reward.answers import exact_match, normalize_answer
    from fathom.training.trainer import direct_reward

    model, tok, cfg = source.model, source.tokenizer, source.config.rollout
    ids = [source.prompt_ids(p.question) for p in prompts]
    pad, eos = int(tok.pad_token_id), int(tok.eos_token_id)

    @torch.no_grad()
    def generate(rows: list[list[int]], greedy: bool) -> list[list[int]]:
        width = max(len(r) for r in rows)
        x = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        torch.manual_seed(seed)
        out = model.generate(input_ids=x, attention_mask=attention, do_sample=not greedy,
                             temperature=None if greedy else cfg.temperature,
                             top_p=None if greedy else cfg.top_p, top_k=None,
                             max_new_tokens=cfg.max_new_tokens, pad_token_id=pad)
        comps = [row[width:] for row in out.tolist()]
        return [c[: c.index(eos) + 1] if eos in c else c for c in comps]  # as DirectRollouts cuts

    was_training = model.training
    model.eval()
    greedy = generate(ids, True)
    sampled = generate([i for i in ids for _ in range(samples)], False)
    model.train(was_training)

    def score(comps: list[list[int]], per_prompt: int) -> list[dict[str, Any]]:
        rows = []
        for k, comp in enumerate(comps):
            text = tok.decode(comp, skip_special_tokens=True)
            reward, _, info = direct_reward(text, prompts[k // per_prompt].golds, cfg.direct_reward)
            rows.append({"reward": reward, "text": text, "tokens": len(comp), **info})
        return rows

    g, s = score(greedy, 1), score(sampled, samples)

    def copied(r: dict[str, Any]) -> float:
        return exact_match(r["answer"], EXAMPLE_ANSWERS) if r["answer"] else 0.0

    boxed_greedy = [normalize_answer(r["answer"]) for r in g if r["r_format"]]
    return {"copied": _mean(copied(r) for r in s), "copied_greedy": _mean(copied(r) for r in g),
            "distinct_greedy": len(set(boxed_greedy)) / max(1, len(boxed_greedy)),
            "texts_greedy": [r["text"] for r in g], "texts_sampled": [r["text"] for r in s],
            "format": _mean(r["r_format"] for r in s), "format_greedy": _mean(r["r_format"] for r in g),
            "reward": _mean(r["reward"] for r in s), "reward_greedy": _mean(r["reward"] for r in g),
            "exact_match": _mean(r["exact_match"] for r in s),
            "any_box": _mean(float("\\boxed{" in r["text"]) for r in s),
            "tokens": _mean(r["tokens"] for r in s), "tokens_greedy": _mean(r["tokens"] for r in g),
            "examples_greedy": [r["text"] for r in g[:4]], "examples_sampled": [r["text"] for r in s[:4]]}


def _mean(values: Any) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else 0.0


# ---------------------------------------------------------------------- training one seed


def seed_config(config_path: Path, seed: int, out: Path, steps: int | None) -> RunConfig:
    overrides: dict[str, Any] = {"seed": seed, "name": f"learn-seed{seed}", "output_dir": str(out),
                                 "tensorboard": False, "checkpoint_every": 10_000}
    if steps is not None:
        overrides["rapo.max_steps"] = steps
    return load_config(config_path, overrides)


async def train_seed(cfg: RunConfig, train: list[Prompt], heldout: list[Prompt], *, eval_every: int,
                     eval_samples: int) -> dict[str, Any]:
    """One seed: measure, then RAPO steps (the real trainer), measuring every ``eval_every``."""
    from fathom.core.config import Settings
    from fathom.training.trainer import DirectRollouts, RapoTrainer, load_policy

    steps = cfg.rapo.max_steps or 0
    eval_seed = 777_000 + cfg.seed
    model, tok = load_policy(cfg, Settings())
    source = DirectRollouts(model, tok, cfg)
    trainer = RapoTrainer(cfg, source, model, tok, train_prompts=train, tensorboard=False)
    source.model = trainer.accelerator.unwrap_model(trainer.model)
    t0 = time.perf_counter()
    evals = [{"step": 0, **heldout_eval(source, heldout, samples=eval_samples, seed=eval_seed)}]
    print(f"seed {cfg.seed} step 0: {_brief(evals[-1])} ({time.perf_counter() - t0:.0f}s)", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        while trainer.state.step < steps:
            row = await trainer.train_step()
            # reward = 0.1 * format + 0.9 * exact per rollout, so the batch's format rate follows
            row["train_format"] = (row["reward_mean"] - 0.9 * row["solve_rate"]) / 0.1
            rows.append({k: row.get(k) for k in TRAIN_KEYS})
            step = trainer.state.step
            print(f"seed {cfg.seed} step {step}: train reward {row['reward_mean']:.3f} format "
                  f"{row['train_format']:.2f} kl {row['kl']:.4f} entropy {row['entropy']:.2f} tokens "
                  f"{row['response_tokens_per_rollout']:.1f} ({row['step_s']:.0f}s)", flush=True)
            if step % eval_every == 0 or step == steps:
                evals.append({"step": step, **heldout_eval(source, heldout, samples=eval_samples,
                                                           seed=eval_seed)})
                print(f"seed {cfg.seed} step {step}: {_brief(evals[-1])} "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
    finally:
        await trainer.aclose()
        if trainer.metrics is not None:
            trainer.metrics.close()
    return {"seed": cfg.seed, "evals": evals, "train": rows, "wall_s": time.perf_counter() - t0}


def _brief(e: dict[str, Any]) -> str:
    return (f"held-back format {e['format']:.3f} (greedy {e['format_greedy']:.3f}) reward {e['reward']:.4f} "
            f"EM {e['exact_match']:.3f} tokens {e['tokens']:.1f}")


# ---------------------------------------------------------------------- aggregating and plotting


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values), "n": float(n)}


def aggregate(runs: Sequence[dict[str, Any]], keys: Sequence[str], table: str = "evals") -> dict[str, Any]:
    """Per key and step, the spread over the seeds that have that step."""
    out: dict[str, Any] = {}
    for key in keys:
        by_step: dict[int, list[float]] = {}
        for run in runs:
            for row in run[table]:
                if row.get(key) is not None:
                    by_step.setdefault(int(row["step"]), []).append(float(row[key]))
        out[key] = {str(s): spread(v) for s, v in sorted(by_step.items())}
    return out


def write_csv(runs: Sequence[dict[str, Any]], keys: Sequence[str], table: str, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["seed", "step", *(k for k in keys if k != "step")])
        for run in runs:
            for row in run[table]:
                w.writerow([run["seed"], row["step"], *(row.get(k) for k in keys if k != "step")])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ev, tr = result["evals"], result["train"]

    def band(ax: Any, agg: dict[str, dict[str, float]], label: str, color: str) -> None:
        steps = [int(s) for s in agg]
        mean = [agg[s]["mean"] for s in agg]
        std = [agg[s]["std"] for s in agg]
        ax.plot(steps, mean, marker="o", color=color, linewidth=2.2, label=f"{label} (mean ± sd)")
        ax.fill_between(steps, [m - d for m, d in zip(mean, std, strict=True)],
                        [m + d for m, d in zip(mean, std, strict=True)], color=color, alpha=0.18)

    ax = axes[0]
    for run in result["runs"]:
        ax.plot([e["step"] for e in run["evals"]], [e["format"] for e in run["evals"]], color="tab:blue",
                alpha=0.35, linewidth=0.9)
        ax.plot([e["step"] for e in run["evals"]], [e["format_greedy"] for e in run["evals"]],
                color="tab:orange", alpha=0.35, linewidth=0.9, linestyle=":")
    band(ax, ev["format"], "sampled", "tab:blue")
    band(ax, ev["format_greedy"], "greedy", "tab:orange")
    base = ev["format"].get("0")
    if base is not None:
        ax.axhline(base["mean"], color="grey", linestyle="--", linewidth=1, label="step-0 baseline (sampled)")
    ax.set_xlabel("RAPO step")
    ax.set_ylabel("held-back well-formed \\boxed{} rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"held-back prompts ({result['heldout_n']}), {len(result['runs'])} seeds")
    ax.legend(fontsize=8)

    ax = axes[1]
    for run in result["runs"]:
        ax.plot([r["step"] for r in run["train"]], [r["train_format"] for r in run["train"]],
                color="tab:green", alpha=0.35, linewidth=0.9)
    band(ax, tr["train_format"], "training rollouts", "tab:green")
    ax.set_xlabel("RAPO step")
    ax.set_ylabel("well-formed rate of the step's rollouts")
    ax.set_ylim(-0.02, 1.02)
    c = result["config"]
    ax.set_title(f"{c['batch_prompts']} prompts x G={c['group_size']}, lr {c['learning_rate']:g}, "
                 f"kl {c['kl_coef']:g}")
    ax.legend(fontsize=8)

    ax = axes[2]
    band(ax, tr["entropy"], "entropy (nats/token)", "tab:purple")
    ax.set_xlabel("RAPO step")
    ax.set_ylabel("entropy")
    ax2 = ax.twinx()
    band(ax2, tr["response_tokens_per_rollout"], "tokens per answer", "tab:brown")
    ax2.set_ylabel("tokens per answer")
    ax.set_title("collapse watch")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_result(runs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    runs = sorted(runs, key=lambda r: int(r["seed"]))
    return {**meta, "evals": aggregate(runs, EVAL_KEYS), "train": aggregate(runs, TRAIN_KEYS[1:], "train"),
            "runs": list(runs)}


def write_outputs(run_dir: Path, out: Path) -> dict[str, Any]:
    """Aggregate every ``seed*.json`` in ``run_dir`` into ``out`` (JSON, two CSVs, PNG)."""
    files = sorted(run_dir.glob("seed*.json"))
    if not files:
        raise SystemExit(f"no seed*.json in {run_dir}")
    loaded = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    meta = {k: v for k, v in loaded[0].items() if k != "run"}
    result = build_result([d["run"] for d in loaded], meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "learning.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    write_csv(result["runs"], ("step", *EVAL_KEYS), "evals", out / "learning-evals.csv")
    write_csv(result["runs"], TRAIN_KEYS, "train", out / "learning-train.csv")
    plot(result, out / "learning.png")
    return result


def summary(result: dict[str, Any]) -> str:
    fmt = result["evals"]["format"]
    first, last = min(fmt, key=int), max(fmt, key=int)
    ups = sum(r["evals"][-1]["format"] > r["evals"][0]["format"] for r in result["runs"])
    greedy = result["evals"]["format_greedy"]
    return (f"held-back sampled format rate {fmt[first]['mean']:.3f} ± {fmt[first]['std']:.3f} "
            f"(step {first}) -> {fmt[last]['mean']:.3f} ± {fmt[last]['std']:.3f} (step {last}); greedy "
            f"{greedy[first]['mean']:.3f} -> {greedy[last]['mean']:.3f}; "
            f"{ups}/{len(result['runs'])} seeds up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="RAPO run config (hyper-parameters)")
    ap.add_argument("--seed", type=int, action="append", help="training seed (repeatable)")
    ap.add_argument("--steps", type=int, default=None, help="override rapo.max_steps")
    ap.add_argument("--task", choices=("format", "context-f1", "closed-f1"), default="format")
    ap.add_argument("--template", choices=tuple(TEMPLATES), default="two-shot")
    ap.add_argument("--train-prompts", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=4)
    ap.add_argument("--eval-samples", type=int, default=2, help="sampled answers per held-back prompt")
    ap.add_argument("--run-dir", type=Path, default=Path("/work/learnruns/format"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "learning")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("--write-prompts", type=Path, default=None,
                    help="also write the train prompts as JSONL (the data source of the run config)")
    args = ap.parse_args()
    if not args.aggregate_only:
        train, heldout = load_nq(args.task, args.template, args.train_prompts, args.heldout)
        if args.write_prompts is not None:
            write_prompts(train, args.write_prompts)
        args.run_dir.mkdir(parents=True, exist_ok=True)
        for seed in args.seed or [0]:
            cfg = seed_config(args.config, seed, args.run_dir / f"trainer-seed{seed}", args.steps)
            run = asyncio.run(train_seed(cfg, train, heldout, eval_every=args.eval_every,
                                         eval_samples=args.eval_samples))
            meta = {"task": args.task, "template": args.template, "model": cfg.model,
                    "reward": cfg.rollout.direct_reward, "measure": "format",
                    "config": {**cfg.rapo.model_dump(), **cfg.rollout.model_dump(include={
                        "temperature", "top_p", "max_new_tokens", "direct_reward"}),
                        "torch_threads": cfg.torch_threads, "eval_every": args.eval_every,
                        "eval_samples": args.eval_samples, "config_file": str(args.config)},
                    "train_prompts": [p.prompt_id for p in train], "heldout": [p.prompt_id for p in heldout],
                    "heldout_n": len(heldout)}
            (args.run_dir / f"seed{seed}.json").write_text(json.dumps({**meta, "run": run}, indent=1),
                                                           encoding="utf-8")
    print(summary(write_outputs(args.run_dir, args.out)))


if __name__ == "__main__":
    main()
