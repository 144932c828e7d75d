"""Per-step training metrics: one JSON line each in ``metrics.jsonl``, the scalars to TensorBoard,
and a one-line live progress report. A resumed run appends to the same files (the step number says
where it continued)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

# The keys of the progress line, in order, and how to print them.
_PROGRESS: tuple[tuple[str, str], ...] = (
    ("reward_mean", "reward {:.3f}"), ("solve_rate", "solve {:.2f}"), ("kl", "kl {:.4f}"),
    ("clip_fraction", "clip {:.2f}"), ("replay_injections", "replay {:d}"),
    ("tool_calls_per_rollout", "tools {:.1f}"), ("rollout_s", "rollout {:.1f}s"),
    ("trainer_s", "train {:.1f}s"),
)


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """(mean, population std) of a non-empty sequence; (0, 0) when empty."""
    if not values:
        return 0.0, 0.0
    mean = sum(values) / len(values)
    return mean, (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


def progress_line(step: int, total: int | None, epoch: int, row: Mapping[str, Any]) -> str:
    head = f"step {step}/{total}" if total else f"step {step}"
    parts = [head, f"epoch {epoch}"]
    for key, fmt in _PROGRESS:
        if key in row:
            value = row[key]
            parts.append(fmt.format(int(value) if fmt.endswith("d}") else float(value)))
    return " | ".join(parts)


class MetricsLogger:
    """Writes step rows; the TensorBoard writer is optional (``tensorboard=False`` in tests)."""

    def __init__(self, out_dir: Path, *, tensorboard: bool = True, stream: TextIO | None = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "metrics.jsonl"
        self.stream = stream if stream is not None else sys.stderr
        self._tb: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))

    def log(self, row: Mapping[str, Any], *, total_steps: int | None = None) -> None:
        step = int(row["step"])
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(row), sort_keys=True, default=str) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self._tb.add_scalar(f"rapo/{key}", float(value), step)
                elif isinstance(value, Mapping):  # e.g. step-label counts
                    for sub, v in value.items():
                        if isinstance(v, (int, float)):
                            self._tb.add_scalar(f"rapo/{key}/{sub}", float(v), step)
            self._tb.flush()
        line = progress_line(step, total_steps, int(row.get("epoch", 0)), row)
        self.stream.write("\r" + line if self.stream.isatty() else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl, in order."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
