"""``fathom train rapo --config FILE``: a RAPO run from a YAML config (resumes from its last checkpoint)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fathom.cli.output import command_group, err_console

if TYPE_CHECKING:
    from fathom.core.config import Settings
    from fathom.training.config import RunConfig
    from fathom.training.trainer import RapoTrainer

app = command_group("Training: RAPO on TRL + accelerate.")


@app.command("rapo")
def rapo(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="YAML run config."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override rapo.max_steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override seed."),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Override output_dir."),
) -> None:
    """Train; metrics go to <output_dir>/metrics.jsonl and TensorBoard, checkpoints to checkpoints/."""
    from fathom.core.config import Settings
    from fathom.training.agent_rollouts import WeightSyncUnavailable
    from fathom.training.config import load_config

    overrides: dict[str, object] = {}
    if max_steps is not None:
        overrides["rapo.max_steps"] = max_steps
    if seed is not None:
        overrides["seed"] = seed
    if output_dir is not None:
        overrides["output_dir"] = str(output_dir)
    cfg = load_config(config, overrides)
    settings = Settings.model_validate(cfg.settings)
    try:
        trainer, rows = asyncio.run(_train(cfg, settings))
    except WeightSyncUnavailable as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    err_console.print(f"done: {len(rows)} steps this run, step {trainer.state.step}, "
                      f"checkpoint {trainer.latest_checkpoint()}")


async def _train(cfg: RunConfig, settings: Settings) -> tuple[RapoTrainer, list[dict[str, Any]]]:
    """Build the rollout source (agent: policy service, tools, reward scorer), train, close it."""
    from fathom.training.agent_rollouts import build_rollout_source
    from fathom.training.trainer import DirectRollouts, RapoTrainer, load_policy

    model, tokenizer = load_policy(cfg, settings)
    source = await build_rollout_source(cfg, settings, model, tokenizer)
    try:
        trainer = RapoTrainer(cfg, source, model, tokenizer)
        if isinstance(source, DirectRollouts):  # samples from the trainer's own (prepared) model
            source.model = trainer.accelerator.unwrap_model(trainer.model)
        rows = await trainer.run()
    finally:
        await source.aclose()
    return trainer, rows
