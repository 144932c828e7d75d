"""Agent rollouts for RAPO: the full search protocol through a policy service and the real tools,
token-exact, rewarded by the reward scorer; plus the weight push that keeps the rollout policy on the
trainer's latest weights, in process (a second backend) or over gRPC (safetensors in a shared
directory + ``LoadWeights``). ``build_rollout_source`` picks this or ``DirectRollouts`` from the config."""

from __future__ import annotations

import asyncio
import inspect
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fathom.core.errors import ServiceError
from fathom.core.logging import get_logger
from fathom.training.config import RunConfig
from fathom.training.data import Prompt
from fathom.training.trainer import DirectRollouts, RolloutSource, StaleRollout

log = get_logger(__name__)


class WeightSyncUnavailable(RuntimeError):
    """The rollout policy cannot receive the trainer's weights, so training on its rollouts would be
    off-policy from step 2 on: a policy service whose backend loads no weights (a vLLM server, the
    replay model: LoadWeights answers UNIMPLEMENTED), or a gRPC policy with no shared weights
    directory (``rollout.weights_dir`` / ``plane.weights_dir``)."""


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


@dataclass
class _ToolClock:
    """Seconds spent in tool calls and their count, over every trajectory (the rollout time split)."""

    seconds: float = 0.0
    calls: int = 0


class _TimedTools:
    """A tool runner (the in-process toolbox, shared by every trajectory, or one trajectory's
    ``QueueToolRunner``) with its calls timed on a clock. A runner that takes call ids gets the
    loop's ``trajectory:step:call`` ids, so a redelivered queue task answers with its recorded result.
    ``owns``: close the runner with the trajectory (else its owner closes it)."""

    def __init__(self, tools: Any, clock: _ToolClock | None = None, *, owns: bool = False) -> None:
        self.tools = tools
        self.specs = tools.specs
        self.clock = clock or _ToolClock()
        self.owns = owns
        self._takes_call_id = "call_id" in inspect.signature(tools.call).parameters

    @property
    def seconds(self) -> float:
        return self.clock.seconds

    @seconds.setter
    def seconds(self, value: float) -> None:
        self.clock.seconds = value

    @property
    def calls(self) -> int:
        return self.clock.calls

    async def call(self, name: str, arguments: dict[str, Any], **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            if self._takes_call_id and kwargs.get("call_id") is not None:
                return await self.tools.call(name, arguments, call_id=kwargs["call_id"])
            return await self.tools.call(name, arguments)
        finally:
            self.clock.seconds += time.perf_counter() - t0
            self.clock.calls += 1

    async def aclose(self) -> None:
        if self.owns:
            await self.tools.aclose()


class _PinnedPolicy:
    """The rollout policy with every trajectory pinned to the weights of the last push: the policy
    service refuses (FAILED_PRECONDITION) to sample one from other weights."""

    def __init__(self, policy: Any, version: str) -> None:
        self.policy = policy
        self.version = version

    def run_trajectory(self, trajectory_id: str, question: str, lane: str,
                       sampling: Any) -> AsyncIterator[Any]:
        run = getattr(self.policy, "run_trajectory", None) or self.policy.run  # PolicyClient | PolicyService
        events: AsyncIterator[Any] = run(trajectory_id, question, lane, sampling, policy_version=self.version)
        return events


class AgentRollouts:
    """The paper's rollouts: the full search protocol through a policy service and the real tools,
    on the train lane; G per prompt via ``group_rollouts``, token-exact via ``token_rollout``,
    rewarded by ``RewardScorer``.

    ``inprocess``: a ``PolicyService`` over a second copy of the model (a ``TransformersBackend``)
    with the real ``Toolbox`` over the configured search (the local web in local mode), or with
    ``rollout.tools: queue`` the plane's search/fetch workers on the train lane. After each optimizer
    step ``push_weights`` copies the trainer's weights into that backend, which bumps its
    ``policy_version``.
    ``grpc``: a ``PolicyClient`` to a running policy service (its tool calls go to the train-lane
    queues). ``push_weights`` writes the weights as safetensors into the shared ``weights_dir`` and
    calls ``LoadWeights``; the service's new ``policy_version`` comes back.
    Either way every rollout asks for the version of the last push (the service refuses another)
    and must carry it (else ``StaleRollout``).

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
        self.clock: _ToolClock | None = None  # in-process policy: the tool calls' time
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
        from fathom.models.transformers_backend import TransformersBackend

        s = self.settings
        self.clock = _ToolClock()
        tools = self._queue_tools() if self.config.rollout.tools == "queue" else self._toolbox()
        backend = TransformersBackend(resolve_model(self.config.model, s), device=self.config.device,
                                      dtype=self.config.dtype, name=f"{self.config.name}-policy")
        self._stack.push_async_callback(backend.aclose)
        await asyncio.to_thread(backend.load)
        self.backend = backend
        self.policy = PolicyService(backend, tools, s)
        self.expected_version = self.policy.policy_version

    def _toolbox(self) -> Any:
        """One in-process Toolbox shared by every trajectory: a tools factory."""
        from fathom.models.factory import close_backends
        from fathom.tools.toolbox import build_toolbox

        s = self.settings
        base_url = _local_web(s, self._stack) if s.search.backend == "local" else None
        # The extractor (a tool) comes from the factory and stays frozen: only the policy learns.
        self._stack.push_async_callback(close_backends)
        toolbox = build_toolbox(s, local_web_base=base_url)
        self._stack.push_async_callback(toolbox.aclose)
        shared = _TimedTools(toolbox, self.clock)
        return lambda lane, tid, job_id: shared

    def _queue_tools(self) -> Any:
        """A tools factory over the plane's queues, as ``fathom serve policy`` builds it: each
        trajectory's calls go to the ``search``/``fetch`` queues of its lane (train for rollouts) and
        their results are awaited on one shared waiter; the workers own the search index and web."""
        from fathom.queue.app import make_celery
        from fathom.queue.results import ResultWaiter
        from fathom.queue.runner import QueueToolRunner

        s = self.settings
        celery_app = make_celery(s)
        self._stack.callback(celery_app.close)
        waiter = ResultWaiter(s.plane.resolved_redis_url)
        self._stack.push_async_callback(waiter.aclose)
        clock = self.clock

        def factory(lane: str, trajectory_id: str, job_id: str | None = None) -> _TimedTools:
            runner = QueueToolRunner(s, lane, job_id=job_id, trajectory_id=trajectory_id,
                                     celery_app=celery_app, waiter=waiter)
            return _TimedTools(runner, clock, owns=True)

        return factory

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
        policy = _PinnedPolicy(self.policy, self.expected_version) if self.expected_version else self.policy
        trajs = await group_rollouts(policy, prompt.question, group_size, sampling, "train",
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

    async def rollouts(self, prompts: Sequence[Prompt], group_size: int, step: int, *,
                       accept: Collection[str] | None = None) -> list[list[Any]]:
        """G rollouts per prompt. ``accept``: the policy versions the caller takes (an asynchronous
        trainer: those within its staleness bound); None: only the last pushed one."""
        if self.policy is None:
            await self.start()
        self._reward_s, self._errors, self._stops = 0.0, 0, Counter[str]()
        tool_s0, calls0 = (self.clock.seconds, self.clock.calls) if self.clock else (0.0, 0)
        t0 = time.perf_counter()
        groups = list(await asyncio.gather(*(self._group(p, i, group_size, step)
                                             for i, p in enumerate(prompts))))
        wall = time.perf_counter() - t0
        versions = sorted({r.policy_version for g in groups for r in g})
        allowed = {self.expected_version} if accept is None else set(accept)
        if self.expected_version and not set(versions) <= allowed:
            raise StaleRollout(f"step {step}: rollouts carry policy versions {versions}, "
                               f"accepted are {sorted(allowed)}")
        self.last_stats = {
            "rollout_policy_version": versions[0] if len(versions) == 1 else ",".join(versions),
            "reward_s": self._reward_s, "rollout_errors": self._errors,
            # a policy service over gRPC runs the tools itself: its calls are counted from the rollouts
            "tool_s": (self.clock.seconds - tool_s0) if self.clock else 0.0,
            "tool_calls": (self.clock.calls - calls0) if self.clock else sum(r.tool_calls for g in groups
                                                                             for r in g),
            "sampling_wall_s": wall,
            "stop_reasons": dict(self._stops),
        }
        return groups

    def weights_root(self) -> Path:
        """The directory shared with the policy service (gRPC policy); WeightSyncUnavailable if none."""
        root = self.config.rollout.weights_dir or self.settings.plane.weights_dir
        if root is None:
            raise WeightSyncUnavailable(
                "rollout.policy 'grpc' needs a directory shared with the policy service to send it the "
                "trainer's weights: set rollout.weights_dir (or plane.weights_dir) to the volume the "
                "service mounts as its plane.weights_dir")
        return Path(root)

    async def push_weights(self, model: torch.nn.Module, version: int) -> None:
        """Put the trainer's weights into the rollout policy; every rollout sampled after this
        returns comes from them (and asks for their version). In process: a copy into the rollout
        backend (on its worker thread, between batches). gRPC: safetensors into the shared directory,
        then ``LoadWeights`` (compare-and-set on the version last pushed); older pushes of this run
        are deleted once the service has loaded the new one."""
        if self.policy is None:
            await self.start()
        if self.config.rollout.policy == "grpc":
            await self._push_over_grpc(model, version)
            return
        state = {k: v.detach() for k, v in model.state_dict().items()}
        before = self.policy.policy_version
        self.expected_version = await asyncio.to_thread(self.backend.load_weights, state)
        if self.expected_version == before or self.policy.policy_version != self.expected_version:
            raise StaleRollout(f"weight push {version}: policy_version stayed {before!r}")
        log.info("rapo.weights_pushed", trainer_version=version, policy_version=self.expected_version)

    async def _push_over_grpc(self, model: torch.nn.Module, version: int) -> None:
        run = _path_part(self.config.name)
        run_dir = self.weights_root() / run
        name = f"v{version:06d}-{uuid.uuid4().hex[:8]}"
        tag = f"{self.config.name}@{version}"
        t0 = time.perf_counter()
        await asyncio.to_thread(write_weights, model, run_dir, name, tag)
        written_s = time.perf_counter() - t0
        before = self.expected_version
        try:
            served, tensors = await self.policy.load_weights(f"{run}/{name}", version_tag=tag,
                                                             expected_policy_version=before)
        except ServiceError as exc:
            await asyncio.to_thread(shutil.rmtree, run_dir / name, ignore_errors=True)
            if exc.metadata.get("grpc_code") == "UNIMPLEMENTED":
                raise WeightSyncUnavailable(f"the policy service cannot take the trainer's weights: "
                                            f"{exc.message}") from exc
            raise
        if served == before:
            raise StaleRollout(f"weight push {version}: policy_version stayed {before!r}")
        self.expected_version = served
        await asyncio.to_thread(_drop_older, run_dir, name)
        log.info("rapo.weights_pushed", trainer_version=version, policy_version=served, tensors=tensors,
                 path=str(run_dir / name), write_s=round(written_s, 3),
                 load_s=round(time.perf_counter() - t0 - written_s, 3))

    async def aclose(self) -> None:
        await self._stack.aclose()
        self.policy = None
        self.backend = None


def write_weights(model: torch.nn.Module, run_dir: Path, name: str, tag: str) -> Path:
    """``model``'s state dict as ``run_dir/name/model.safetensors`` under its own parameter names
    (what ``load_weights`` matches; tied tensors stored once). Written under a hidden name and
    renamed, so a reader never sees a half-written directory."""
    from safetensors.torch import save_model

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{name}.tmp"
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt", "fathom_version": tag},
                   force_contiguous=True)
        final = run_dir / name
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _drop_older(run_dir: Path, keep: str) -> None:
    """Delete this run's other pushes (and half-written ones a crash left) once ``keep`` is served."""
    for entry in run_dir.iterdir():
        if entry.name != keep and re.fullmatch(r"\.?v\d{6,}-[0-9a-f]{8}(\.tmp)?", entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def _path_part(name: str) -> str:
    """The run name as one safe directory name."""
    part = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")
    return part or "run"


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
    """The rollout source ``config.rollout`` names, started. A gRPC policy first gets the trainer's
    initial weights (it may serve another run's, or a restart's), so step 1 samples from them too;
    one that cannot take weights stops the run here (``WeightSyncUnavailable``)."""
    if config.rollout.kind == "direct":
        return DirectRollouts(model, tokenizer, config)
    source = AgentRollouts(config, settings)
    if config.rollout.policy == "grpc":
        source.weights_root()  # no shared directory: refused before any work
    await source.start()
    if config.rollout.policy == "grpc":
        try:
            await source.push_weights(model, 0)
        except BaseException:
            await source.aclose()
            raise
    return source
