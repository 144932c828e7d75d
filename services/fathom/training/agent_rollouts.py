"""Agent rollouts for RAPO: the full search protocol through a policy service and the real tools,
token-exact, rewarded by the reward scorer; plus the weight push that keeps the rollout policy on the
trainer's latest weights. ``build_rollout_source`` picks this or ``DirectRollouts`` from the config."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from fathom.core.logging import get_logger
from fathom.training.config import RunConfig
from fathom.training.data import Prompt
from fathom.training.trainer import DirectRollouts, RolloutSource

log = get_logger(__name__)


class WeightSyncUnavailable(RuntimeError):
    """The rollout policy cannot receive the trainer's weights (a policy service over gRPC: the plane
    has no weight-sync endpoint), so training on its rollouts would be off-policy from step 2 on."""


class StaleRollout(RuntimeError):
    """A rollout was sampled by weights other than the last ones pushed."""


def rollout_settings(config: RunConfig, settings: Any) -> Any:
    """A private copy of ``settings`` with the run's agent budget and reward choice written in. The
    agent settings are rebuilt (not ``model_copy``) so that ``guided`` counts as explicitly set: the
    policy service then follows the config instead of its weak-model rule."""
    from fathom.core.config import AgentSettings

    r = config.rollout
    s = settings.model_copy(deep=True)
    agent = s.agent.model_dump(exclude_unset=True) | {
        "guided": r.guided, "max_turns": r.max_turns, "guided_max_turns": r.max_turns,
        "max_new_tokens_per_turn": r.max_new_tokens, "max_context_tokens": r.max_context_tokens,
        "max_tool_calls": r.max_tool_calls}
    s.agent = AgentSettings(**agent)
    reward: dict[str, Any] = {}
    if config.reward_stage is not None:
        reward["stage"] = config.reward_stage
    if config.judge is not None:
        reward["judge"] = config.judge
    if reward:
        s.reward = s.reward.model_copy(update=reward)
    return s


class _TimedTools:
    """The real toolbox with the seconds spent in tool calls added up (the rollout time split)."""

    def __init__(self, tools: Any) -> None:
        self.tools = tools
        self.specs = tools.specs
        self.seconds = 0.0
        self.calls = 0

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.tools.call(name, arguments)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1

    async def aclose(self) -> None:
        return None  # the toolbox is shared by every trajectory; AgentRollouts closes it


class AgentRollouts:
    """The paper's rollouts: the full search protocol through a policy service and the real tools,
    on the train lane; G per prompt via ``group_rollouts``, token-exact via ``token_rollout``,
    rewarded by ``RewardScorer``.

    ``inprocess``: a ``PolicyService`` over a second copy of the model (a ``TransformersBackend``)
    with the real ``Toolbox`` over the configured search (the local web in local mode). After each
    optimizer step ``push_weights`` copies the trainer's weights into that backend, which bumps its
    ``policy_version``; the next rollouts must all carry it (else ``StaleRollout``).
    ``grpc``: a ``PolicyClient`` to a running policy service: rollouts work, the weight push
    refuses (``WeightSyncUnavailable``).

    Seeds: rollout i of the j-th prompt of step s is seeded from (seed, s, j, i), so a resumed run
    samples the same rollouts (the backend runs a seeded request alone, so rollouts do not batch).
    """

    def __init__(self, config: RunConfig, settings: Any) -> None:
        from contextlib import AsyncExitStack

        self.config = config
        self.settings = rollout_settings(config, settings)
        self.stage = int(self.settings.reward.stage)
        self._stack = AsyncExitStack()
        self.policy: Any = None
        self.backend: Any = None
        self.scorer: Any = None
        self.tools: _TimedTools | None = None
        self.expected_version = ""  # the policy_version every next rollout must carry
        self.last_stats: dict[str, Any] = {}  # of the last ``rollouts`` call, merged into the step row
        self._reward_s, self._errors, self._stops = 0.0, 0, Counter[str]()

    async def start(self) -> AgentRollouts:
        """Tools, reward scorer and the policy (model loaded here, not on the first rollout)."""
        from fathom.reward.service import build_scorer

        try:
            self.scorer = build_scorer(self.settings)
            if self.config.rollout.policy == "grpc":
                from fathom.rpc.policy_client import PolicyClient

                client = PolicyClient(self.settings, self.config.rollout.policy_address)
                self._stack.push_async_callback(client.aclose)
                self.policy = client
            else:
                await self._start_inprocess()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _start_inprocess(self) -> None:
        from fathom.agent.policy_service import PolicyService
        from fathom.models.bundled import resolve_model
        from fathom.models.factory import close_backends
        from fathom.models.transformers_backend import TransformersBackend
        from fathom.tools.toolbox import build_toolbox

        s = self.settings
        base_url = _local_web(s, self._stack) if s.search.backend == "local" else None
        # The extractor (a tool) comes from the factory and stays frozen: only the policy learns.
        self._stack.push_async_callback(close_backends)
        toolbox = build_toolbox(s, local_web_base=base_url)
        self._stack.push_async_callback(toolbox.aclose)
        self.tools = _TimedTools(toolbox)
        backend = TransformersBackend(resolve_model(self.config.model, s), device=self.config.device,
                                      dtype=self.config.dtype, name=f"{self.config.name}-policy")
        self._stack.push_async_callback(backend.aclose)
        await asyncio.to_thread(backend.load)
        self.backend = backend
        tools = self.tools
        self.policy = PolicyService(backend, lambda lane, tid, job_id: tools, s)
        self.expected_version = self.policy.policy_version

    def sampling(self, step: int, prompt_index: int, group_size: int) -> Any:
        """This prompt's sampling: the rollout temperature, no repetition penalty (the trainer scores
        logits / temperature only, so the sampling log-probs must be of that distribution), and the
        group's base seed (``group_rollouts`` adds i)."""
        from fathom.agent.policy_service import SamplingOverrides

        r = self.config.rollout
        seed = None
        if r.seeded:
            seed = ((self.config.seed * 100_003 + step) * 1_009 + prompt_index) * group_size
        return SamplingOverrides(temperature=r.temperature, top_p=r.top_p, repetition_penalty=1.0, seed=seed,
                                 max_turns=r.max_turns, max_new_tokens_per_turn=r.max_new_tokens,
                                 max_tool_calls=r.max_tool_calls, logprobs=True)

    async def _group(self, prompt: Prompt, index: int, group_size: int, step: int) -> list[Any]:
        from fathom.training.rollouts import group_rollouts, token_rollout

        sampling = self.sampling(step, index, group_size)
        trajs = await group_rollouts(self.policy, prompt.question, group_size, sampling, "train",
                                     prompt_id=prompt.prompt_id)
        t0 = time.perf_counter()
        breakdowns = await asyncio.gather(*(self.scorer.score(prompt.question, list(prompt.golds), t,
                                                              stage=self.stage) for t in trajs))
        self._reward_s += time.perf_counter() - t0
        out = []
        for traj, bd in zip(trajs, breakdowns, strict=True):
            self._stops[str(traj.stop_reason)] += 1
            if traj.stop_reason == "error":
                log.warning("rapo.rollout_error", prompt_id=prompt.prompt_id, error=traj.meta.get("error"))
                self._errors += 1
            out.append(token_rollout(traj, prompt_id=prompt.prompt_id, reward=float(bd.reward),
                                     breakdown=bd.to_dict(), correct=bool(bd.correct)))
        return out

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int) -> list[list[Any]]:
        if self.policy is None:
            await self.start()
        self._reward_s, self._errors, self._stops = 0.0, 0, Counter[str]()
        tool_s0, calls0 = (self.tools.seconds, self.tools.calls) if self.tools else (0.0, 0)
        t0 = time.perf_counter()
        groups = list(await asyncio.gather(*(self._group(p, i, group_size, step)
                                             for i, p in enumerate(prompts))))
        wall = time.perf_counter() - t0
        versions = sorted({r.policy_version for g in groups for r in g})
        if self.expected_version and versions != [self.expected_version]:
            raise StaleRollout(f"step {step}: rollouts carry policy versions {versions}, "
                               f"the last weights pushed are {self.expected_version!r}")
        self.last_stats = {
            "rollout_policy_version": versions[0] if len(versions) == 1 else ",".join(versions),
            "reward_s": self._reward_s, "rollout_errors": self._errors,
            "tool_s": (self.tools.seconds - tool_s0) if self.tools else 0.0,
            "tool_calls": (self.tools.calls - calls0) if self.tools else 0,
            "sampling_wall_s": wall,
            "stop_reasons": dict(self._stops),
        }
        return groups

    async def push_weights(self, model: torch.nn.Module, version: int) -> None:
        """Copy the trainer's weights into the rollout backend (on its worker thread, between
        batches); every rollout sampled after this returns comes from them."""
        if self.config.rollout.policy == "grpc":
            raise WeightSyncUnavailable(
                "rollout.policy 'grpc': the policy service has no weight-sync endpoint, so the trainer's "
                "weights cannot reach it and every step after the first would train on stale rollouts; "
                "use rollout.policy 'inprocess' (or serve the policy from vLLM with TRL's weight sync)")
        if self.backend is None:
            await self.start()
        state = {k: v.detach() for k, v in model.state_dict().items()}
        before = self.policy.policy_version
        self.expected_version = await asyncio.to_thread(self.backend.load_weights, state)
        if self.expected_version == before or self.policy.policy_version != self.expected_version:
            raise StaleRollout(f"weight push {version}: policy_version stayed {before!r}")
        log.info("rapo.weights_pushed", trainer_version=version, policy_version=self.expected_version)

    async def aclose(self) -> None:
        await self._stack.aclose()
        self.policy = None
        self.backend = None


def _local_web(settings: Any, stack: Any) -> str:
    """The local web over the sample corpus, as the research runtime starts it."""
    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.web import ensure_local_web

    index_dir = settings.search.index_dir = settings.search.index_dir or ensure_sample_index(settings)
    base_url, stop = ensure_local_web(settings, index_dir)
    if stop is not None:
        stack.callback(stop)
    return base_url


async def build_rollout_source(config: RunConfig, settings: Any, model: torch.nn.Module,
                               tokenizer: Any) -> RolloutSource:
    """The rollout source ``config.rollout`` names, started. A training run with a gRPC policy is
    refused here, before any work (see ``WeightSyncUnavailable``)."""
    if config.rollout.kind == "direct":
        return DirectRollouts(model, tokenizer, config)
    if config.rollout.policy == "grpc":
        raise WeightSyncUnavailable(
            "rollout.policy 'grpc' cannot train: the policy service has no weight-sync endpoint, so "
            "after the first update its rollouts would come from stale weights. Use 'inprocess'.")
    return await AgentRollouts(config, settings).start()
