"""The RAPO trainer on TRL building blocks and accelerate.

Why not ``GRPOTrainer`` itself: its generation step assumes one completion per prompt (a single
``generate`` / vLLM call), while a RAPO rollout is a multi-turn trajectory whose tool-response tokens
are context, not samples; and RAPO adds three pieces GRPOTrainer has no hook for (advantage scaling
across groups, the per-prompt replay buffer whose stored log-probs feed the ratio, and pruning by
solve rate at each epoch's end). So we take the narrowest overrides: the loop below replaces
``_generate_and_score_completions`` (rollouts, rewards, replay, advantages), and everything else is
TRL's or accelerate's: ``selective_log_softmax`` and ``entropy_from_logits`` for per-token log-probs
and entropy (with the same temperature scaling TRL applies), ``pad`` for batches,
``disable_dropout_in_model``, and accelerate's ``Accelerator`` for prepare / backward / clipping /
``save_state`` / ``load_state``, so DeepSpeed, FSDP or several GPUs are a launcher choice
(``accelerate launch``), not code. The clipped token loss itself is ``fathom.training.rapo``.

One step: a batch of prompts -> G rollouts each with the current weights -> rewards -> replay
injection -> group advantages x scaling -> minibatch updates of the clipped token loss with KL to
a frozen reference -> weights pushed to the rollout policy (policy_version += 1) -> metrics.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from fathom.core.logging import get_logger
from fathom.training.config import RunConfig
from fathom.training.data import Prompt, PromptSchedule, load_prompts
from fathom.training.metrics import MetricsLogger, summarize

log = get_logger(__name__)


class Rollout(Protocol):
    """What the trainer reads of a ``fathom.training.rollouts.TokenRollout``."""

    prompt_id: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    mask: list[int]
    reward: float
    correct: bool
    tool_calls: int
    breakdown: dict[str, Any]


class RolloutSource(Protocol):
    """Makes the G rollouts of each prompt with the weights of the last push."""

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int) -> list[list[Any]]: ...

    async def push_weights(self, model: torch.nn.Module, version: int) -> None: ...

    async def aclose(self) -> None: ...


@dataclass
class TrainerState:
    """Counters that a checkpoint must carry besides model, optimizer, RNG, data order and buffer."""

    step: int = 0
    policy_version: int = 0
    epoch_solve: dict[str, list[bool]] = field(default_factory=dict)  # this epoch's verdicts per prompt
    pruned_total: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "policy_version": self.policy_version,
                "epoch_solve": {k: list(v) for k, v in self.epoch_solve.items()},
                "pruned_total": self.pruned_total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.policy_version = int(state["policy_version"])
        self.epoch_solve = {k: [bool(x) for x in v] for k, v in state["epoch_solve"].items()}
        self.pruned_total = int(state.get("pruned_total", 0))


class _PyRandom:
    """The trainer's own ``random.Random`` (minibatch shuffles, replay choice) as a checkpointable
    object; accelerate's RNG checkpoint covers the global generators only."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        version, internal, gauss = state["state"]
        self.rng.setstate((version, tuple(internal), gauss))


def load_policy(config: RunConfig, settings: Any) -> tuple[torch.nn.Module, Any]:
    """The trainable policy and its tokenizer (the bundled model is prepared on first use)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.models.bundled import resolve_model

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    ref = resolve_model(config.model, settings)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(ref, dtype=getattr(torch, config.dtype))
    return model, tokenizer


def completion_logprobs(model: torch.nn.Module, rollouts: Sequence[Any], temperature: float,
                        pad_id: int, *, with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor,
                                                                            torch.Tensor | None]:
    """Per-token log-probs of each rollout's completion ids under ``model`` (logits / temperature,
    as the sampler drew them and as TRL scores them), right-padded to [B, T]; with the 0/1 loss mask
    and optionally the per-token entropy. The completion ids are the sampled ids themselves, never
    re-tokenized text."""
    from trl.trainer.utils import entropy_from_logits, selective_log_softmax

    device = next(model.parameters()).device
    seqs = [list(r.prompt_ids) + list(r.completion_ids) for r in rollouts]
    width = max(len(s) for s in seqs)
    comp_width = max(len(r.completion_ids) for r in rollouts)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, device=device)
        attention[i, : len(s)] = 1
    # Logits only where a sampled token is predicted (position t predicts token t + 1): an agent
    # rollout is mostly tool-response context (mask 0), and full [B, T, vocab] logits for it would
    # cost gigabytes and most of the step's time for values the masked loss never reads.
    # ``logits_to_keep`` (an index tensor) goes through the model's own forward, so wrappers
    # (DDP, DeepSpeed) still see a normal call. Masked-out positions stay 0.
    wanted = [[p - 1 + j for j, m in enumerate(r.mask[: len(r.completion_ids)]) if m]
              for r, p in ((r, len(r.prompt_ids)) for r in rollouts)]
    keep = sorted({pos for row in wanted for pos in row})
    out = torch.zeros((len(seqs), comp_width), device=device)
    mask = torch.zeros((len(seqs), comp_width), device=device)
    entropy = torch.zeros((len(seqs), comp_width), device=device) if with_entropy else None
    if not keep:
        return out, mask, entropy
    slot = {pos: k for k, pos in enumerate(keep)}
    logits = model(input_ids=input_ids, attention_mask=attention,
                   logits_to_keep=torch.tensor(keep, device=device)).logits  # [B, len(keep), vocab]
    for i, (r, row) in enumerate(zip(rollouts, wanted, strict=True)):
        if not row:
            continue
        p = len(r.prompt_ids)
        cols = torch.tensor([pos - p + 1 for pos in row], device=device)  # completion offsets
        row_logits = logits[i, [slot[pos] for pos in row]] / temperature
        ids = input_ids[i, [pos + 1 for pos in row]]
        out[i, cols] = selective_log_softmax(row_logits, ids)
        mask[i, cols] = 1.0
        if entropy is not None:
            with torch.no_grad():
                entropy[i, cols] = entropy_from_logits(row_logits)
    return out, mask, entropy


def _padded(values: Sequence[Sequence[float]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros((len(values), width), device=device)
    for i, v in enumerate(values):
        out[i, : len(v)] = torch.tensor(list(v)[:width], device=device)
    return out


class RapoTrainer:
    """Runs RAPO steps; ``run()`` to the end (max_steps or epochs), resuming from the last
    checkpoint in ``output_dir`` when there is one."""

    def __init__(self, config: RunConfig, source: RolloutSource, model: torch.nn.Module, tokenizer: Any,
                 *, train_prompts: Sequence[Prompt] | None = None, tensorboard: bool | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from trl.trainer.utils import disable_dropout_in_model

        from fathom.training.rapo import ReplayBuffer

        self.config = config
        self.source = source
        self.tokenizer = tokenizer
        set_seed(config.seed)
        self.accelerator = Accelerator(cpu=config.device == "cpu")
        if train_prompts is None:
            train_prompts, _ = load_prompts(config.data, config.seed)
        self.schedule = PromptSchedule(train_prompts, config.rapo.batch_prompts, config.seed)
        self.replay: ReplayBuffer[Any] = ReplayBuffer(success_threshold=config.rapo.replay_threshold)
        self.state = TrainerState()
        self.rng = _PyRandom(config.seed)
        disable_dropout_in_model(model)
        # The frozen reference: a copy of the initial weights, never prepared for training.
        self.ref_model = _frozen_copy(model) if config.rapo.kl_coef > 0 else None
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.rapo.learning_rate,
                                      betas=(config.rapo.adam_beta1, config.rapo.adam_beta2),
                                      weight_decay=config.rapo.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.ref_model is not None:
            self.ref_model.to(self.accelerator.device)
        for obj in (self.schedule, self.replay, self.state, self.rng):
            self.accelerator.register_for_checkpointing(obj)
        self.out_dir = Path(config.output_dir)
        self.metrics = MetricsLogger(self.out_dir, tensorboard=config.tensorboard if tensorboard is None
                                     else tensorboard) if self.accelerator.is_main_process else None

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_root(self) -> Path:
        return self.out_dir / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        done = [p for p in self.checkpoint_root.glob("step-*") if (p / "COMPLETE").is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def save_checkpoint(self) -> Path:
        """Model, optimizer, RNG (accelerate's), data order, replay buffer, counters; then the model
        as a plain ``save_pretrained`` directory under ``model/`` for serving. ``COMPLETE`` is
        written last: a run killed mid-save resumes from the previous checkpoint."""
        path = self.checkpoint_root / f"step-{self.state.step}"
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(str(path / "model"))
            self.tokenizer.save_pretrained(str(path / "model"))
            (path / "COMPLETE").write_text(f"{self.state.step}\n", encoding="utf-8")
            done = sorted((p for p in self.checkpoint_root.glob("step-*") if (p / "COMPLETE").is_file()),
                          key=lambda p: int(p.name.split("-")[1]))
            for old in done[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return path

    async def resume(self) -> bool:
        """Load the latest complete checkpoint, if any, and push its weights to the rollout policy."""
        path = self.latest_checkpoint()
        if path is None:
            return False
        self.accelerator.load_state(str(path))
        await self.source.push_weights(self.accelerator.unwrap_model(self.model), self.state.policy_version)
        log.info("rapo.resumed", step=self.state.step, epoch=self.schedule.epoch, checkpoint=str(path))
        return True

    # ------------------------------------------------------------------ the loop

    def _done(self) -> bool:
        cfg = self.config.rapo
        if cfg.max_steps is not None and self.state.step >= cfg.max_steps:
            return True
        return self.schedule.epoch >= cfg.epochs or not self.schedule.active

    async def run(self) -> list[dict[str, Any]]:
        """Train to the end; returns this process's metric rows."""
        await self.resume()
        rows: list[dict[str, Any]] = []
        try:
            while not self._done():
                rows.append(await self.train_step())
                if self.state.step % self.config.checkpoint_every == 0 or self._done():
                    self.save_checkpoint()
        finally:
            if self.metrics is not None:
                self.metrics.close()
        return rows

    def _end_epoch(self) -> int:
        """Prune prompts solved at >= the threshold this epoch; start the next epoch."""
        from fathom.training.rapo import prune_prompts, solve_rate

        pruned: set[str] = set()
        if self.config.rapo.pruning:
            rates = {pid: solve_rate(v) for pid, v in self.state.epoch_solve.items()}
            pruned = prune_prompts(rates, self.config.rapo.prune_threshold)
        self.schedule.new_epoch(pruned)
        self.state.epoch_solve = {}
        self.state.pruned_total += len(pruned)
        return len(pruned)

    async def train_step(self) -> dict[str, Any]:
        cfg = self.config.rapo
        pruned = self._end_epoch() if self.schedule.epoch_done else 0
        epoch = self.schedule.epoch
        prompts = self.schedule.next_batch()
        t0 = time.perf_counter()
        groups = await self.source.rollouts(prompts, cfg.group_size, self.state.step)
        rollout_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        flat, advantages, batch_stats = self._prepare_batch(prompts, groups)
        train_stats = self._update(flat, advantages)
        trainer_s = time.perf_counter() - t1
        self.state.step += 1
        self.state.policy_version += 1
        t2 = time.perf_counter()
        await self.source.push_weights(self.accelerator.unwrap_model(self.model), self.state.policy_version)
        push_s = time.perf_counter() - t2
        row = {"step": self.state.step, "epoch": epoch, "policy_version": self.state.policy_version,
               "prompts": len(prompts), "prompts_pruned": pruned, "prompts_active": len(self.schedule.active),
               **batch_stats, **train_stats, "rollout_s": rollout_s, "trainer_s": trainer_s,
               "push_s": push_s, **getattr(self.source, "last_stats", {})}
        if self.metrics is not None:
            self.metrics.log(row, total_steps=cfg.max_steps)
        return row

    def _prepare_batch(self, prompts: Sequence[Prompt],
                       groups: list[list[Any]]) -> tuple[list[Any], list[float], dict[str, Any]]:
        """Replay injection, solve-rate bookkeeping, group advantages x scaling."""
        from fathom.training.rapo import advantage_scale, group_advantages

        cfg = self.config.rapo
        originals = [r for g in groups for r in g]
        injections = 0
        group_rewards: list[torch.Tensor] = []
        trained: list[list[Any]] = []
        for prompt, group in zip(prompts, groups, strict=True):
            rewards = [float(r.reward) for r in group]
            self.state.epoch_solve.setdefault(prompt.prompt_id, []).extend(bool(r.correct) for r in group)
            if cfg.replay:
                fresh = list(group)
                group, rewards, replaced = self.replay.inject(prompt.prompt_id, fresh, rewards, self.rng.rng,
                                                              correct=[bool(r.correct) for r in fresh])
                injections += replaced is not None
                for r in fresh:  # only fresh rollouts become the prompt's "latest" success
                    self.replay.record(prompt.prompt_id, r, float(r.reward))
            group_rewards.append(torch.tensor(rewards, dtype=torch.float32))
            trained.append(group)
        scale = advantage_scale(group_rewards) if cfg.advantage_scaling else 1.0
        flat: list[Any] = []
        advantages: list[float] = []
        for group, rewards_t in zip(trained, group_rewards, strict=True):
            adv = group_advantages(rewards_t) * scale
            flat.extend(group)
            advantages.extend(float(a) for a in adv)
        all_rewards = [float(r.reward) for r in originals]
        mean, std = summarize(all_rewards)
        labels: Counter[str] = Counter()
        for r in originals:
            labels.update({k: int(v) for k, v in (r.breakdown.get("counts") or {}).items()})
        stats = {
            "reward_mean": mean, "reward_std": std,
            "solve_rate": sum(bool(r.correct) for r in originals) / max(1, len(originals)),
            "replay_injections": injections, "advantage_scale": scale,
            "groups_nonzero_std": sum(int(float(g.std(unbiased=False)) > 1e-6) for g in group_rewards),
            "tool_calls_per_rollout": summarize([float(r.tool_calls) for r in originals])[0],
            "response_tokens_per_rollout": summarize([float(sum(r.mask)) for r in originals])[0],
            "sequence_tokens_per_rollout": summarize([float(len(r.prompt_ids) + len(r.completion_ids))
                                                      for r in originals])[0],
            "step_labels": dict(labels),
        }
        return flat, advantages, stats

    def _update(self, flat: list[Any], advantages: list[float]) -> dict[str, float]:
        """Minibatch updates of the clipped token loss. The ratio is taken against each rollout's
        sampling log-probs (``rollout.logprobs``): the policy that drew it, or for a replayed
        rollout the stored ones, as issue 8 asks."""
        from fathom.training.rapo import grpo_token_loss

        cfg = self.config.rapo
        temperature = self.config.rollout.temperature
        pad_id = int(self.tokenizer.pad_token_id)
        order = list(range(len(flat)))
        self.rng.rng.shuffle(order)
        keys = ("loss", "grad_norm", "entropy", "kl", "clip_fraction", "ratio_mean")
        totals: dict[str, float] = dict.fromkeys(keys, 0.0)
        updates = 0
        self.model.train()
        for start in range(0, len(order), cfg.minibatch_size):
            idx = [i for i in order[start: start + cfg.minibatch_size] if flat[i].completion_ids]
            if not idx:
                continue
            batch = [flat[i] for i in idx]
            logps, mask, entropy = completion_logprobs(self.model, batch, temperature, pad_id,
                                                       with_entropy=True)
            width = logps.shape[1]
            old = _padded([r.logprobs for r in batch], width, logps.device)
            ref: torch.Tensor | None = None
            if self.ref_model is not None:
                with torch.no_grad():
                    ref, _, _ = completion_logprobs(self.ref_model, batch, temperature, pad_id)
            adv = torch.tensor([advantages[i] for i in idx], device=logps.device)
            loss, stats = grpo_token_loss(logps, old, ref, adv, mask, clip_eps=cfg.clip_eps,
                                          kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator)
            self.accelerator.backward(loss)
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
            updates += 1
            totals["loss"] += float(loss.detach())
            totals["grad_norm"] += float(grad_norm)
            assert entropy is not None
            totals["entropy"] += float((entropy * mask).sum() / mask.sum().clamp(min=1))
            for key in ("kl", "clip_fraction", "ratio_mean"):
                totals[key] += float(stats.get(key, 0.0))
        self.model.eval()
        return {k: v / max(1, updates) for k, v in totals.items()} | {"optimizer_steps": float(updates)}


def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def run_sync(coro: Any) -> Any:
    """``asyncio.run`` for the CLI and scripts."""
    return asyncio.run(coro)


# ---------------------------------------------------------------------- direct rollouts

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
DIRECT_INSTRUCTION = "Answer with a short phrase inside \\boxed{}."


@dataclass
class SampledRollout:
    """A one-turn rollout (the ``direct`` kind): the same fields the trainer reads of a TokenRollout."""

    prompt_id: str
    question: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    mask: list[int]
    reward: float
    breakdown: dict[str, Any]
    correct: bool
    policy_version: str
    tool_calls: int = 0
    steps: int = 1


def direct_reward(text: str, golds: Sequence[str], kind: str) -> tuple[float, bool, dict[str, Any]]:
    """The direct task's reward: ``format`` = 0.1 * (exactly one non-empty \\boxed{} and nothing
    after it) + 0.9 * exact match of its content (the stage-1 shape with this task's format);
    ``exact`` = exact match only; ``f1`` = token F1 of the answer (a dense signal a 135M model can
    climb from its first step). Correct = exact match."""
    from fathom.reward.answers import exact_match, token_f1

    boxes = _BOXED.findall(text)
    answer = boxes[-1].strip() if boxes else ""
    tail = text[text.rfind("}") + 1:].strip() if boxes else text
    well_formed = len(boxes) == 1 and bool(answer) and len(tail) <= 2
    em = exact_match(answer, golds) if answer else 0.0
    r_format = 1.0 if well_formed else 0.0
    if kind == "f1":  # dense: token F1 of the boxed answer (or the whole text when none)
        reward = token_f1(answer or text, golds)
    else:
        reward = em if kind == "exact" else 0.1 * r_format + 0.9 * em
    return reward, em == 1.0, {"r_format": r_format, "exact_match": em, "answer": answer}


class DirectRollouts:
    """One sampled answer per rollout from the trainer's own model object: weights are always the
    latest, so ``push_weights`` has nothing to copy. Sampling is seeded by (seed, step, prompt), so
    a resumed run draws the same rollouts."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: RunConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.version = 0

    def prompt_ids(self, question: str) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{question}\n{DIRECT_INSTRUCTION}"}],
            tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    @torch.no_grad()
    def sample(self, prompt: Prompt, n: int, seed: int, *, greedy: bool = False) -> list[SampledRollout]:
        cfg = self.config.rollout
        model = self.model
        was_training = model.training
        model.eval()
        ids = self.prompt_ids(prompt.question)
        device = next(model.parameters()).device
        torch.manual_seed(seed)
        x = torch.tensor([ids] * n, device=device)
        generate: Any = model.generate  # a transformers model's; nn.Module does not declare it
        out = generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=not greedy,
                             temperature=cfg.temperature if not greedy else None,
                             top_p=cfg.top_p if not greedy else None, top_k=None,
                             max_new_tokens=cfg.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        eos = self.tokenizer.eos_token_id
        rollouts: list[SampledRollout] = []
        for row in out[:, len(ids):].tolist():
            comp = row[: row.index(eos) + 1] if eos in row else row
            text = self.tokenizer.decode(comp, skip_special_tokens=True)
            reward, correct, info = direct_reward(text, prompt.golds, cfg.direct_reward)
            rollouts.append(SampledRollout(prompt.prompt_id, prompt.question, ids, comp, [], [1] * len(comp),
                                           reward, {**info, "text": text}, correct, str(self.version)))
        scored = [r for r in rollouts if r.completion_ids]
        if scored:
            logps, _, _ = completion_logprobs(model, scored, cfg.temperature,
                                              int(self.tokenizer.pad_token_id))
            for r, row_lp in zip(scored, logps.tolist(), strict=True):
                r.logprobs = row_lp[: len(r.completion_ids)]
        model.train(was_training)
        return rollouts

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int) -> list[list[Any]]:
        base = self.config.seed * 1_000_003 + step * 1_009
        return [self.sample(p, group_size, base + i) for i, p in enumerate(prompts)]

    async def push_weights(self, model: torch.nn.Module, version: int) -> None:
        self.model = model  # the same object the optimizer updates
        self.version = version

    async def aclose(self) -> None:
        return None


def evaluate_direct(source: DirectRollouts, prompts: Sequence[Prompt], *, samples: int = 4,
                    seed: int = 12345) -> dict[str, float]:
    """Mean reward, format rate and exact match on ``prompts`` (held-back ones for the learning
    proof), ``samples`` sampled answers each at the rollout temperature, fixed seed."""
    rows = [r for i, p in enumerate(prompts) for r in source.sample(p, samples, seed + i)]
    n = max(1, len(rows))
    return {"reward": sum(r.reward for r in rows) / n,
            "format": sum(r.breakdown["r_format"] for r in rows) / n,
            "exact_match": sum(r.breakdown["exact_match"] for r in rows) / n,
            "tokens": sum(len(r.completion_ids) for r in rows) / n}


# ---------------------------------------------------------------------- agent rollouts
