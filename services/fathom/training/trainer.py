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

Asynchronous rollouts (``rapo.async_rollouts``; docs/TRAINING.md): right after step k's rollouts
come back, the weights of update k-1 are pushed and step k+1's batch starts sampling in the
background while step k trains; so step k+1 trains on rollouts one version old (``staleness`` 1),
its ratio taken against their sampling log-probs as always. A push never overlaps sampling: the
weights of update k wait until step k+1's batch is back, so every batch carries one version.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    """Makes the G rollouts of each prompt with the weights of the last push. ``accept``: the policy
    versions (the rollouts' ``policy_version`` tags) the caller takes; a rollout carrying another
    raises ``StaleRollout``; None: only the last pushed version."""

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int, *,
                       accept: Collection[str] | None = None) -> list[list[Any]]: ...

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


class StaleRollout(RuntimeError):
    """A rollout was sampled by weights other than the last ones pushed."""


def check_staleness(trainer_version: int, rollout_version: int, max_staleness: int) -> int:
    """The staleness of a batch (``trainer_version - rollout_version``: how many updates the trainer
    is ahead of the weights that sampled it). Accepts exactly the versions ``trainer_version -
    max_staleness .. trainer_version``; anything older, or newer than the trainer, raises
    ``StaleRollout``. A synchronous run checks with ``max_staleness`` 0."""
    staleness = trainer_version - rollout_version
    if not 0 <= staleness <= max_staleness:
        raise StaleRollout(f"rollouts of policy version {rollout_version} for trainer version "
                             f"{trainer_version}: staleness {staleness}, allowed 0..{max_staleness}")
    return staleness


def thread_split(total: int, sampler: int | None = None) -> tuple[int, int]:
    """(sampler, trainer) torch threads of an asynchronous CPU run on ``total`` threads: sampling
    and training run at the same time, each in its own OS thread, and two OpenMP teams of ``total``
    each would oversubscribe the cores. Default: the sampler gets half, the trainer the rest (one
    each at least)."""
    total = max(1, total)
    s = sampler if sampler is not None else max(1, total // 2)
    return s, max(1, total - s)


def async_thread_split(config: RunConfig) -> tuple[int, int] | None:
    """``thread_split`` of a run's torch threads when it samples asynchronously on the CPU, else None
    (one place for the trainer and its DirectRollouts sampler)."""
    if not config.rapo.async_rollouts or config.device != "cpu":
        return None
    return thread_split(config.torch_threads or torch.get_num_threads(), config.rapo.sampler_threads)


def _with_threads(threads: int | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with this OS thread's torch (OpenMP) team set to ``threads`` (None: unchanged)."""
    if threads is not None:
        torch.set_num_threads(threads)
    return fn(*args)


@dataclass
class _Batch:
    """One step's rollouts as the source returned them."""

    step: int
    prompts: list[Prompt]
    groups: list[list[Any]]
    version: int  # the trainer version whose weights the source held while sampling
    stats: dict[str, Any]  # the source's ``last_stats`` of this call
    sampling_s: float


@dataclass
class _Prefetch:
    """The next step's batch, sampling in the background."""

    step: int
    schedule_before: dict[str, Any]  # the schedule before this batch was drawn: what a checkpoint saves
    task: asyncio.Task[_Batch]


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
        # mixed_precision always explicit: accelerate then refuses (ValueError) a process whose shared
        # AcceleratorState was set up with another precision, instead of inheriting it unseen.
        self.accelerator = Accelerator(cpu=config.device == "cpu", mixed_precision=config.mixed_precision)
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
        self._async = config.rapo.async_rollouts
        self._prefetch: _Prefetch | None = None
        self._pushed = self.state.policy_version  # the trainer version whose weights the source holds
        self._tags: dict[str, int] = {}  # the source's policy_version tags -> trainer versions
        self._train_pool: ThreadPoolExecutor | None = None
        self._threads = async_thread_split(config)  # async on CPU: (sampler, trainer) torch threads
        self._threads_before: int | None = None  # the process default, while the split is applied
        self._note_tag()

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
        written last: a run killed mid-save resumes from the previous checkpoint.

        A batch sampling in the background (asynchronous rollouts) is not saved: the schedule is
        saved as it was before that batch was drawn, so a resumed run draws the same prompts again
        and samples them anew, from the checkpoint's weights (staleness 0 for that one step)."""
        pre = self._prefetch
        if pre is None:
            return self._save_checkpoint()
        drawn = self.schedule.state_dict()
        self.schedule.load_state_dict(pre.schedule_before)
        try:
            return self._save_checkpoint()
        finally:
            self.schedule.load_state_dict(drawn)

    def _save_checkpoint(self) -> Path:
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
        self._pushed = self.state.policy_version
        self._note_tag()
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
        rows: list[dict[str, Any]] = []
        try:
            self._apply_threads()
            await self.resume()
            while not self._done():
                rows.append(await self.train_step())
                if self.state.step % self.config.checkpoint_every == 0 or self._done():
                    self.save_checkpoint()
            await self._push()  # async: the last update reaches the rollout policy, as in a sync run
        finally:
            await self.aclose()
            if self.metrics is not None:
                self.metrics.close()
        return rows

    async def aclose(self) -> None:
        """Drop a background batch (a failed or interrupted run: its prompts go back to the
        schedule) and stop the trainer's thread. ``run`` calls it; callers of ``train_step`` should."""
        pre, self._prefetch = self._prefetch, None
        if pre is not None:
            pre.task.cancel()
            await asyncio.gather(pre.task, return_exceptions=True)
            self.schedule.load_state_dict(pre.schedule_before)
        if self._train_pool is not None:
            pool, self._train_pool = self._train_pool, None
            await asyncio.to_thread(pool.shutdown, True)
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def _apply_threads(self) -> None:
        """Async on CPU: threads that start torch work from now on (the rollout backend's worker)
        take the sampler's share of the torch threads; the trainer's thread sets its own share.
        ``aclose`` restores the process default."""
        if self._threads is not None and self._threads_before is None:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self._threads[0])

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
        """One step. Synchronous: sample with the latest weights, train, push. Asynchronous: take
        the batch sampled in the background (or sample now when none is: the first step, the first
        of an epoch), push the last update's weights, start sampling the next batch, train."""
        cfg = self.config.rapo
        t_step = time.perf_counter()
        self._apply_threads()
        # A prefetched batch belongs to this epoch: none is drawn across an epoch's end, since
        # pruning needs the epoch's last verdicts.
        pruned = self._end_epoch() if self._prefetch is None and self.schedule.epoch_done else 0
        epoch = self.schedule.epoch
        push_s = 0.0
        t0 = time.perf_counter()
        if self._prefetch is not None:
            batch = await self._take_prefetch()
        else:
            push_s += await self._push()  # nothing is sampling: the latest weights first
            batch = await self._sample(self.schedule.next_batch(), self.state.step, self.state.policy_version)
        wait_s = time.perf_counter() - t0 - push_s
        staleness = check_staleness(self.state.policy_version, batch.version,
                                    cfg.max_staleness if self._async else 0)
        tags = sorted({str(getattr(r, "policy_version", "")) for g in batch.groups for r in g})
        if len(tags) > 1:
            raise StaleRollout(f"step {batch.step}: one batch carries several policy versions {tags}")
        if self._async:
            push_s += await self._push()  # the last update's weights: no sampling is in flight now
            if self._may_prefetch():
                self._start_prefetch()
        t1 = time.perf_counter()
        flat, advantages, batch_stats = self._prepare_batch(batch.prompts, batch.groups)
        if self._async:
            train_stats = await self._update_off_loop(flat, advantages)
        else:
            train_stats = self._update(flat, advantages)
        trainer_s = time.perf_counter() - t1
        self.state.step += 1
        self.state.policy_version += 1
        if not self._async:
            push_s += await self._push()
        row = {"step": self.state.step, "epoch": epoch, "policy_version": self.state.policy_version,
               "prompts": len(batch.prompts), "prompts_pruned": pruned,
               "prompts_active": len(self.schedule.active), **batch_stats, **train_stats,
               "rollout_s": batch.sampling_s, "rollout_wait_s": wait_s, "trainer_s": trainer_s,
               "push_s": push_s, "staleness": staleness, "rollout_version": batch.version,
               "step_s": time.perf_counter() - t_step, **batch.stats}
        if self.metrics is not None:
            self.metrics.log(row, total_steps=cfg.max_steps)
        return row

    # ------------------------------------------------------------------ sampling and weight pushes

    def _note_tag(self) -> None:
        """Remember the source's version tag of the weights it holds now (no push is in flight)."""
        tag = getattr(self.source, "expected_version", None)
        if isinstance(tag, str) and tag:
            self._tags[tag] = self._pushed

    def _accepted(self, at_version: int, max_staleness: int) -> set[str] | None:
        """The source's tags of the trainer versions ``at_version - max_staleness .. at_version``."""
        if not self._tags:
            return None
        return {t for t, v in self._tags.items() if at_version - max_staleness <= v <= at_version}

    async def _push(self) -> float:
        """Push the trainer's weights unless the source holds them already; the seconds it took."""
        if self._pushed == self.state.policy_version:
            return 0.0
        t0 = time.perf_counter()
        await self.source.push_weights(self.accelerator.unwrap_model(self.model), self.state.policy_version)
        self._pushed = self.state.policy_version
        self._note_tag()
        return time.perf_counter() - t0

    async def _sample(self, prompts: list[Prompt], step: int, train_at: int) -> _Batch:
        """Step ``step``'s rollouts from the weights the source holds now, to be trained on at
        trainer version ``train_at`` (the source refuses rollouts of any version not allowed then)."""
        self._note_tag()
        version = self._pushed
        accept = self._accepted(train_at, self.config.rapo.max_staleness if self._async else 0)
        t0 = time.perf_counter()
        groups = await self.source.rollouts(prompts, self.config.rapo.group_size, step, accept=accept)
        stats = dict(getattr(self.source, "last_stats", None) or {})  # now: the next call replaces it
        return _Batch(step, list(prompts), groups, version, stats, time.perf_counter() - t0)

    def _may_prefetch(self) -> bool:
        max_steps = self.config.rapo.max_steps
        return (self._async and self._prefetch is None and not self.schedule.epoch_done
                and (max_steps is None or self.state.step + 1 < max_steps))

    def _start_prefetch(self) -> None:
        """Draw the next batch and start sampling it in the background with the weights pushed
        now; it is trained on one update later."""
        if getattr(self.source, "model", None) is self.accelerator.unwrap_model(self.model):
            raise RuntimeError("asynchronous rollouts need a sampler of their own, but the rollout source "
                               "samples from the trainer's model object (DirectRollouts built with "
                               "rapo.async_rollouts keeps a copy: do not point it at the trainer's model)")
        before = self.schedule.state_dict()
        prompts = self.schedule.next_batch()
        step = self.state.step + 1
        task = asyncio.create_task(self._sample(prompts, step, self.state.policy_version + 1))
        self._prefetch = _Prefetch(step, before, task)

    async def _take_prefetch(self) -> _Batch:
        pre, self._prefetch = self._prefetch, None
        assert pre is not None
        try:
            return await pre.task
        except BaseException:
            self.schedule.load_state_dict(pre.schedule_before)  # its prompts were not trained on
            raise

    async def _update_off_loop(self, flat: list[Any], advantages: list[float]) -> dict[str, float]:
        """``_update`` on the trainer's own thread (with its share of the torch threads), so that the
        event loop keeps serving the background sampling: tool calls, the next turns."""
        if self._train_pool is None:
            self._train_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fathom-train")
        threads = self._threads[1] if self._threads is not None else None
        return await asyncio.get_running_loop().run_in_executor(
            self._train_pool, _with_threads, threads, self._update, flat, advantages)

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
            # Only rollouts with a sampled token train (a trajectory can be all prefill and context).
            idx = [i for i in order[start: start + cfg.minibatch_size]
                   if any(flat[i].mask[: len(flat[i].completion_ids)])]
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
    """One sampled answer per rollout. Synchronous runs sample from the trainer's own model object:
    weights are always the latest, so ``push_weights`` has nothing to copy. Asynchronous runs
    (``rapo.async_rollouts``) sample while the trainer updates, so from a copy of their own, on a
    thread of their own (with the sampler's share of the torch threads); ``push_weights`` copies the
    trainer's weights into it on that thread, between batches. Rollouts carry the trainer version
    they were sampled with as ``policy_version``. Sampling is seeded by (seed, step, prompt), so a
    resumed run draws the same rollouts from the same weights."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: RunConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.version = 0
        split = async_thread_split(config)
        self.threads: int | None = split[0] if split is not None else None
        self._pool: ThreadPoolExecutor | None = None
        if config.rapo.async_rollouts:
            self.model = _frozen_copy(model)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fathom-sample")

    @property
    def expected_version(self) -> str:
        """The ``policy_version`` the next rollouts carry."""
        return str(self.version)

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

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int, *,
                       accept: Collection[str] | None = None) -> list[list[Any]]:
        if accept is not None and self.expected_version not in accept:
            raise StaleRollout(f"step {step}: the sampler holds policy version {self.expected_version}, "
                                 f"the caller accepts {sorted(accept)}")
        base = self.config.seed * 1_000_003 + step * 1_009

        def sample_all() -> list[list[Any]]:
            return [self.sample(p, group_size, base + i) for i, p in enumerate(prompts)]

        if self._pool is None:
            return sample_all()
        return await asyncio.get_running_loop().run_in_executor(self._pool, _with_threads, self.threads,
                                                                sample_all)

    async def push_weights(self, model: torch.nn.Module, version: int) -> None:
        if self._pool is None:
            self.model = model  # the same object the optimizer updates
            self.version = version
            return
        state = {k: v.detach() for k, v in model.state_dict().items()}
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load, state, version)

    def _load(self, state: dict[str, torch.Tensor], version: int) -> None:
        """On the sampling thread, between batches: weights and version change together."""
        with torch.no_grad():
            self.model.load_state_dict(state)
        self.version = version

    async def aclose(self) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True)


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
