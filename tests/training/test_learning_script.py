"""scripts/learning_curve.py: the curve's aggregation over seeds, its CSVs and its PNG, on a small
synthetic pair of seed files (no model: the training itself is the script's run, not a test)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "scripts" / "learning_curve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["learning_curve"] = module
    spec.loader.exec_module(module)
    return module


def _eval(step: int, fmt: float, greedy: float) -> dict[str, object]:
    return {"step": step, "format": fmt, "format_greedy": greedy, "reward": 0.1 * fmt,
            "reward_greedy": 0.1 * greedy, "exact_match": 0.0, "any_box": fmt, "tokens": 12.0,
            "tokens_greedy": 10.0, "examples_greedy": ["\\boxed{x}"], "examples_sampled": ["y"]}


def _train(step: int, fmt: float) -> dict[str, object]:
    return {"step": step, "reward_mean": 0.1 * fmt, "reward_std": 0.04, "solve_rate": 0.0,
            "train_format": fmt, "groups_nonzero_std": 1, "kl": 0.001 * step, "clip_fraction": 0.0,
            "entropy": 2.0 - 0.1 * step, "grad_norm": 1.0, "response_tokens_per_rollout": 14.0 - step,
            "rollout_s": 1.0, "trainer_s": 2.0, "step_s": 3.0}


def _seed_file(run_dir: Path, seed: int, formats: list[float]) -> None:
    run = {"seed": seed, "wall_s": 1.0,
           "evals": [_eval(s, f, f / 2) for s, f in zip((0, 2, 4), formats, strict=True)],
           "train": [_train(s, formats[min(2, s // 2)]) for s in range(1, 5)]}
    meta = {"task": "format", "template": "two-shot", "model": "m", "reward": "format", "measure": "format",
            "config": {"batch_prompts": 2, "group_size": 8, "learning_rate": 1e-5, "kl_coef": 0.001},
            "train_prompts": ["a", "b"], "heldout": ["c"], "heldout_n": 1}
    (run_dir / f"seed{seed}.json").write_text(json.dumps({**meta, "run": run}), encoding="utf-8")


def test_spread_is_mean_sample_sd_min_max(script: ModuleType) -> None:
    s = script.spread([0.2, 0.4, 0.9])
    assert s["mean"] == pytest.approx(0.5)
    # sample sd: sqrt(((-0.3)^2 + (-0.1)^2 + 0.4^2) / 2) = sqrt(0.13)
    assert s["std"] == pytest.approx(0.13 ** 0.5)
    assert (s["min"], s["max"], s["n"]) == (0.2, 0.9, 3.0)
    assert script.spread([0.7])["std"] == 0.0


def test_outputs_aggregate_seeds_by_step(script: ModuleType, tmp_path: Path) -> None:
    run_dir, out = tmp_path / "runs", tmp_path / "out"
    run_dir.mkdir()
    _seed_file(run_dir, 1, [0.25, 0.5, 0.75])
    _seed_file(run_dir, 0, [0.25, 0.25, 0.5])
    result = script.write_outputs(run_dir, out)

    assert [r["seed"] for r in result["runs"]] == [0, 1]  # sorted by seed
    fmt = result["evals"]["format"]
    assert list(fmt) == ["0", "2", "4"]
    assert fmt["0"]["mean"] == pytest.approx(0.25) and fmt["0"]["std"] == 0.0
    assert fmt["4"]["mean"] == pytest.approx(0.625)
    assert fmt["4"]["std"] == pytest.approx(((0.125 ** 2) * 2) ** 0.5)  # sd of {0.5, 0.75}
    assert result["evals"]["format_greedy"]["2"]["mean"] == pytest.approx((0.125 + 0.25) / 2)
    assert result["train"]["kl"]["3"]["mean"] == pytest.approx(0.003)
    assert "step" not in result["train"]

    saved = json.loads((out / "learning.json").read_text(encoding="utf-8"))
    assert saved["evals"]["format"]["4"]["mean"] == pytest.approx(0.625)
    with (out / "learning-evals.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["seed"] == "0" and rows[0]["step"] == "0"
    assert float(rows[5]["format"]) == 0.75 and float(rows[5]["format_greedy"]) == 0.375
    with (out / "learning-train.csv").open(encoding="utf-8") as fh:
        train_rows = list(csv.DictReader(fh))
    assert len(train_rows) == 8 and float(train_rows[-1]["train_format"]) == 0.75
    png = (out / "learning.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    assert "0.250 ± 0.000 (step 0) -> 0.625" in script.summary(result)
    assert "2/2 seeds up" in script.summary(result)


def test_no_seed_files_is_an_error(script: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no seed"):
        script.write_outputs(tmp_path, tmp_path / "out")
