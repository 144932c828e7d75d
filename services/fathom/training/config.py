"""The RAPO run configuration: one YAML file -> one validated pydantic model.

Every RAPO constant is a setting whose default is the paper's (FATHOM.md, "RAPO"): constant LR 1e-6,
Adam (0.9, 0.95), batch 32 prompts, mini-batch 16, G = 5, top-p 1.0, rollout temperature 1.4 (what
the paper reports for Qwen3), pruning at solve rate >= 0.9, replay threshold 0.5, KL coefficient
0.001 with the low-variance (k3) estimator (their base framework's defaults; the paper gives none).
The clip epsilon is not given by the paper either: 0.2, the GRPO/PPO default, as in TRL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from fathom.core.config import BUNDLED_MODEL


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in the YAML is an error, not a silent default


class DataConfig(_Strict):
    """Where the training prompts come from and how many are held back for evaluation."""

    sources: list[str] = Field(default_factory=lambda: ["closed:hotpotqa_train.json"])
    limit: int | None = Field(default=None, ge=1)  # first N prompts after a seeded shuffle
    heldout: int = Field(default=0, ge=0)  # prompts held back (never trained on) for evaluation
    level: str | None = None  # HotpotQA: keep only this difficulty ("easy", ...)


class RapoConfig(_Strict):
    """The RAPO hyper-parameters (paper defaults)."""

    group_size: int = Field(default=5, ge=2)  # G rollouts per prompt
    batch_prompts: int = Field(default=32, ge=1)  # prompts per step
    minibatch_size: int = Field(default=16, ge=1)  # rollouts per optimizer step
    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # stop early (smoke runs)
    learning_rate: float = Field(default=1e-6, gt=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 0.0
    max_grad_norm: float = Field(default=1.0, gt=0)
    clip_eps: float = Field(default=0.2, gt=0)
    kl_coef: float = Field(default=0.001, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    prune_threshold: float = Field(default=0.9, ge=0, le=1)  # solve rate >= this: dropped at epoch end
    replay_threshold: float = Field(default=0.5)  # the buffer keeps a rollout with reward > this
    replay: bool = True
    advantage_scaling: bool = True
    pruning: bool = True
    # Beyond the paper (docs/TRAINING.md, "Asynchronous rollouts"): the next step's rollouts are
    # sampled while this step trains, from weights at most ``max_staleness`` versions behind the
    # trainer (one batch is prefetched, so 1 in practice; older rollouts are refused).
    async_rollouts: bool = False
    max_staleness: int = Field(default=1, ge=1)
    sampler_threads: int | None = Field(default=None, ge=1)  # async CPU runs: sampler's torch threads
    # (None: half of torch_threads; the trainer keeps the rest)


class RolloutConfig(_Strict):
    """How rollouts are made. ``agent``: the full search protocol through the policy and the tools
    (the paper's setting). ``direct``: one sampled answer per prompt, no tools: the cheap task the
    learning proof uses, where a 135M model can move within a few dozen steps."""

    kind: Literal["agent", "direct"] = "agent"
    temperature: float = Field(default=1.4, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_new_tokens: int = Field(default=8_192, ge=1)  # per turn (agent) or per answer (direct)
    max_turns: int = Field(default=64, ge=1)
    max_tool_calls: int = Field(default=32, ge=1)
    max_context_tokens: int = Field(default=40_960, ge=256)
    guided: bool = False  # agent: guided prefills (their tokens are masked out of the loss)
    # agent: where the policy runs. "inprocess": a PolicyService over a second copy of the model in
    # this process, which receives the trainer's weights after every update. "grpc": a running
    # policy service (``fathom serve policy``; its tool calls go to the plane's train-lane queues) at
    # ``policy_address``, which receives them through LoadWeights from ``weights_dir``.
    policy: Literal["inprocess", "grpc"] = "inprocess"
    policy_address: str | None = None  # grpc: None = settings.plane.policy_address
    # grpc: the directory shared with the policy service (the volume it mounts as its
    # plane.weights_dir); each push writes <weights_dir>/<run name>/v<N>-<id>/ and deletes older ones
    # once the service has loaded it. None: settings.plane.weights_dir.
    weights_dir: Path | None = None
    # inprocess: where the tool calls run. "inprocess": a Toolbox in this process. "queue": the plane's
    # search/fetch workers on the train lane (QueueToolRunner), as the policy service's calls do.
    tools: Literal["inprocess", "queue"] = "inprocess"
    seeded: bool = True  # agent: seed every rollout from (seed, step, prompt, i) (runs them one at a time)
    # direct: what is rewarded. "format": 0.1 * R_format-like tag check + 0.9 * exact match;
    # "exact": exact match of the boxed answer only.
    direct_reward: Literal["format", "exact", "f1"] = "format"


class RunConfig(_Strict):
    """One RAPO run."""

    name: str = "rapo"
    model: str = BUNDLED_MODEL
    device: str = "cpu"
    dtype: str = "float32"
    # Autocast for the trainer's forward passes (accelerate's mixed_precision). Always passed to
    # Accelerator explicitly: left unset, a process whose AcceleratorState another trainer already
    # set up (TRL's GRPOConfig defaults to bf16) would silently train in that precision.
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    torch_threads: int | None = Field(default=None, ge=1)  # CPU runs on shared cores: 1 avoids thrashing
    output_dir: Path = Path("runs/rapo")
    checkpoint_every: int = Field(default=1, ge=1)  # steps
    keep_checkpoints: int = Field(default=2, ge=1)
    tensorboard: bool = True
    reward_stage: Literal[1, 2] | None = None  # None: settings.reward.stage
    judge: Literal["llm", "exact", "f1"] | None = None  # None: settings.reward.judge
    data: DataConfig = Field(default_factory=DataConfig)
    rapo: RapoConfig = Field(default_factory=RapoConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    settings: dict[str, Any] = Field(default_factory=dict)  # overrides of fathom Settings (nested)


def load_config(path: Path | str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config; ``overrides`` (dotted keys) win, e.g. {"seed": 3, "rapo.max_steps": 2}."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a run config is a mapping")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return RunConfig.model_validate(raw)
