"""The agent loop: generate a turn, run its tool calls, feed the results back, until done.

The protocol (what the text looks like) lives in ``protocol``; this module only drives it:
token budget, concurrency of tool calls, timing, recording steps, cancellation and resume.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from fathom.agent import protocol
from fathom.agent.guided import SAMPLED_KINDS, GuidedPolicy, segment
from fathom.agent.protocol import Mode
from fathom.agent.trajectory import Step, StopReason, ToolCall, Trajectory
from fathom.core.config import AgentSettings
from fathom.core.errors import FathomError, ModelError, ToolError
from fathom.core.logging import get_logger
from fathom.models.base import Completion, ModelBackend, SamplingParams, supports_tokens
from fathom.tools.base import ToolResult, ToolRunner

log = get_logger(__name__)

OnStep = Callable[[Step, Trajectory], Awaitable[None]]

# A trajectory that ended for one of these reasons is complete; resuming it changes nothing.
FINISHED: frozenset[str] = frozenset(
    {"answered", "no_tool_call", "max_turns", "context_budget", "max_tool_calls"}
)


class AgentLoop:
    """Runs the Fathom search protocol with one model backend and one tool runner.

    ``settings.max_new_tokens_per_turn`` caps each turn (``sampling.max_new_tokens`` is not
    used for normal turns); the rest of ``sampling`` (temperature, penalties, seed, logprobs)
    is passed through, and the protocol's stop strings are added to ``sampling.stop``.

    A limit (``max_turns``, ``max_context_tokens``, ``max_tool_calls``) ends the trajectory as
    the original does: no further turn, answer = the last ``\\boxed{}`` written. Only with
    ``settings.force_final_answer`` does the loop nudge the model for one more, answering turn.
    """

    def __init__(self, backend: ModelBackend, tools: ToolRunner, settings: AgentSettings,
                 sampling: SamplingParams, guided: GuidedPolicy | None = None, *,
                 date: str | None = None, final_answer_tokens: int = protocol.FINAL_ANSWER_TOKENS,
                 trajectory_id: str | None = None, token_exact: bool | None = None) -> None:
        self.backend = backend
        self.tools = tools
        self.settings = settings
        self.sampling = replace(sampling, stop=tuple(dict.fromkeys((*sampling.stop, *protocol.STOP_STRINGS))),
                                choices=None)
        self.guided = guided if guided is not None else (
            GuidedPolicy.from_settings(settings) if settings.guided else None)
        self.date = date
        self.final_answer_tokens = final_answer_tokens
        # With a trajectory id and a runner whose ``call`` takes ``call_id``, each tool call gets
        # the id "<trajectory_id>:<step>:<call>": a resumed or redelivered trajectory asks for the
        # same ids again, and a runner that keeps results by id (the queue plane) never runs one twice.
        self.trajectory_id = trajectory_id
        self._runner_takes_call_id = trajectory_id is not None and _takes_call_id(tools)
        # Token-exact recording (training rollouts): the model is prompted with token ids and every
        # id that enters the context is recorded, in order, as ``step.meta["segments"]`` (see
        # ``guided.segment``), so a rollout is never re-tokenized. By default on when log-probs
        # are asked for and the backend serves the token-level path.
        if token_exact is None:
            token_exact = sampling.logprobs and supports_tokens(backend)
        if token_exact and not supports_tokens(backend):
            raise ModelError(f"{backend.name}: token-exact rollouts need a backend with complete_tokens")
        self.token_exact = bool(token_exact)

    # --- public ----------------------------------------------------------------------------

    def new_trajectory(self, question: str, mode: Mode = "search") -> Trajectory:
        """An empty trajectory. Pass it as ``resume`` to keep a handle on it through a cancel."""
        prompt = protocol.build_prompt(question, self.tools.specs, mode, self.date)
        return Trajectory(question=question, prompt=prompt, model=self.backend.name,
                          total_tokens=self.backend.count_tokens(prompt),
                          meta={"mode": mode, "date": self.date, "guided": self.guided is not None})

    async def run(self, question: str, mode: Mode = "search", on_step: OnStep | None = None,
                  resume: Trajectory | None = None) -> Trajectory:
        """Answer ``question``; ``on_step`` is awaited as each step completes.

        With ``resume``, that trajectory is continued in place from its last complete step.
        On cancellation the trajectory keeps its complete steps, gets stop_reason "cancelled",
        and ``asyncio.CancelledError`` propagates. A model failure ends the run with
        stop_reason "error" and the message in ``meta["error"]``.
        """
        if resume is not None and resume.question != question:
            raise ValueError("resume: the trajectory answers a different question")
        traj = resume if resume is not None else self.new_trajectory(question, mode)
        if traj.stop_reason in FINISHED:
            return traj
        traj.stop_reason = None
        traj.meta.pop("error", None)
        try:
            await self._drive(traj, on_step)
        except asyncio.CancelledError:
            traj.stop_reason = "cancelled"
            log.info("agent.cancelled", steps=len(traj.steps))
            raise
        except FathomError as e:
            self._fail(traj, e)
        except Exception as e:
            self._fail(traj, e)
            raise
        return traj

    # --- the loop --------------------------------------------------------------------------

    async def _drive(self, traj: Trajectory, on_step: OnStep | None) -> None:
        budget = self.settings.max_context_tokens
        reserve = self._reserve()
        await self._finish_pending_calls(traj, reserve)
        context = protocol.rebuild_context(traj.prompt, traj.steps)
        ids = self._context_ids(traj, context) if self.token_exact else None

        while True:
            turn = len(traj.steps)
            context_tokens = self.backend.count_tokens(context)
            traj.total_tokens = context_tokens
            if turn >= self.settings.max_turns:
                return await self._limit_reached(traj, context, "max_turns", on_step, ids)
            if self._calls_left(traj) == 0:
                return await self._limit_reached(traj, context, "max_tool_calls", on_step, ids)
            allowance = protocol.turn_allowance(context_tokens, self.settings.max_new_tokens_per_turn,
                                                reserve, budget)
            # A per-turn cap below MIN_TURN_TOKENS is a choice, not a budget running out.
            if allowance < min(protocol.MIN_TURN_TOKENS, self.settings.max_new_tokens_per_turn):
                return await self._limit_reached(traj, context, "context_budget", on_step, ids)

            started = time.perf_counter()
            completion, step_meta = await self._generate(context, traj, allowance, final=False, ids=ids)
            step = self._step(turn, completion, context_tokens, step_meta)
            self._close_turn(step, ids)

            if not step.tool_calls:
                context += step.text + protocol.END_OF_TURN
                traj.steps.append(step)
                traj.total_tokens = self.backend.count_tokens(context)
                self._time(step, started)
                budget_cut = (completion.finish_reason == "length"
                              and allowance < self.settings.max_new_tokens_per_turn)
                if budget_cut and step.answer is None:
                    await self._emit(on_step, step, traj)
                    return await self._limit_reached(traj, context, "context_budget", on_step, ids)
                traj.answer = traj.last_answer
                traj.stop_reason = "answered" if step.answer is not None else "no_tool_call"
                await self._emit(on_step, step, traj)
                return

            context += step.text + protocol.END_OF_TURN
            room = budget - self.backend.count_tokens(context) - reserve - protocol.MIN_TURN_TOKENS
            if room < protocol.MIN_RESPONSE_TOKENS:
                for call in step.tool_calls:
                    call.error = call.error or "not run: the context budget is used up"
                    call.result = None
                traj.steps.append(step)
                self._time(step, started)
                await self._emit(on_step, step, traj)
                return await self._limit_reached(traj, context, "context_budget", on_step, ids)

            step.tools_s = await self._run_calls(step.tool_calls, self._calls_left(traj), turn)
            block = self._fit_responses(step.tool_calls, room)
            if block is None:
                for call in step.tool_calls:  # ran, but nothing of it fits: the model never sees it
                    call.meta["undelivered_result"] = call.result
                    call.result = None
                traj.steps.append(step)
                self._time(step, started)
                await self._emit(on_step, step, traj)
                return await self._limit_reached(traj, context, "context_budget", on_step, ids)
            step.tool_response_tokens = self.backend.count_tokens(block)
            context += block
            self._add_responses(step, block, ids)
            traj.steps.append(step)
            traj.total_tokens = self.backend.count_tokens(context)
            self._time(step, started)
            await self._emit(on_step, step, traj)

    def _reserve(self) -> int:
        """Tokens a normal turn leaves unused: its own end of turn, and with
        ``force_final_answer`` room for the nudge and the answering turn after it."""
        end_tokens = self.backend.count_tokens(protocol.END_OF_TURN)
        if not self.settings.force_final_answer:
            return protocol.end_reserve(end_tokens)
        return protocol.final_reserve(self.backend.count_tokens(protocol.final_answer_nudge()),
                                      end_tokens, self.final_answer_tokens)

    async def _limit_reached(self, traj: Trajectory, context: str, reason: StopReason,
                             on_step: OnStep | None, ids: list[int] | None = None) -> None:
        """A limit ends the run. The original stops right here; a final answer is forced only
        when the settings ask for it."""
        if self.settings.force_final_answer:
            return await self._final_turn(traj, context, reason, on_step, ids)
        traj.stop_reason = reason
        traj.answer = traj.last_answer
        traj.total_tokens = self.backend.count_tokens(context)
        log.info("agent.limit_reached", reason=reason, steps=len(traj.steps),
                 answered=traj.answer is not None)

    async def _final_turn(self, traj: Trajectory, context: str, reason: StopReason,
                          on_step: OnStep | None, ids: list[int] | None = None) -> None:
        """One last turn after the nudge; its tool calls, if any, are not run."""
        budget = self.settings.max_context_tokens
        context += protocol.final_answer_nudge()
        context_tokens = self.backend.count_tokens(context)
        end_tokens = self.backend.count_tokens(protocol.END_OF_TURN)
        room = budget - context_tokens - end_tokens - protocol.BUDGET_SLACK_TOKENS
        allowance = min(self.final_answer_tokens, room)
        traj.stop_reason = reason
        if allowance <= 0:  # only reachable with a reserve smaller than the nudge
            traj.answer = traj.last_answer
            log.warning("agent.no_room_for_final_answer", context_tokens=context_tokens, budget=budget)
            return
        started = time.perf_counter()
        nudge: dict[str, Any] | None = None
        if ids is not None:
            nudge = segment("nudge", self._tokenize(protocol.final_answer_nudge()))
            ids.extend(nudge["ids"])
        completion, step_meta = await self._generate(context, traj, allowance, final=True, ids=ids)
        step = self._step(len(traj.steps), completion, context_tokens, step_meta)
        if nudge is not None:
            step.meta["segments"].insert(0, nudge)
        self._close_turn(step, ids)
        step.forced_final = True
        step.meta["forced_by"] = reason
        for call in step.tool_calls:
            call.error = call.error or "not run: a final answer was required"
            call.result = None
        traj.steps.append(step)
        traj.total_tokens = self.backend.count_tokens(context + step.text + protocol.END_OF_TURN)
        traj.answer = traj.last_answer
        self._time(step, started)
        await self._emit(on_step, step, traj)

    # --- one turn --------------------------------------------------------------------------

    async def _generate(self, context: str, traj: Trajectory, max_new_tokens: int,
                        final: bool, ids: list[int] | None = None) -> tuple[Completion, dict[str, Any]]:
        """One turn. With ``ids`` (token-exact) the model is prompted with exactly those ids and the
        turn's segments come back in ``meta["segments"]``."""
        if self.guided is not None:
            guided_turn = await self.guided.turn(self.backend, context, traj,
                                                 replace(self.sampling, max_new_tokens=max_new_tokens),
                                                 final=final, context_ids=ids)
            completion = guided_turn.completion
            meta: dict[str, Any] = {"guided_action": guided_turn.action,
                                    "guided_phases": guided_turn.phases_meta()}
            if ids is not None:
                meta["segments"] = list(guided_turn.segments or [])
        elif ids is not None:
            params = replace(self.sampling, max_new_tokens=max_new_tokens)
            t0 = time.perf_counter()
            completion = await self.backend.complete_tokens(list(ids), params)  # type: ignore[attr-defined]
            if not completion.latency_s:
                completion = replace(completion, latency_s=time.perf_counter() - t0)
            meta = {"segments": [segment("sampled", completion.token_ids or [], completion.logprobs)]}
        else:
            params = replace(self.sampling, max_new_tokens=max_new_tokens)
            t0 = time.perf_counter()
            completion = await self.backend.complete(context, params)
            if not completion.latency_s:
                completion = replace(completion, latency_s=time.perf_counter() - t0)
            meta = {}
        if completion.finish_reason == "error":
            raise ModelError(f"the policy model {self.backend.name!r} returned an error finish")
        return completion, meta

    def _step(self, index: int, completion: Completion, context_tokens: int,
              meta: dict[str, Any]) -> Step:
        parsed = protocol.parse_turn(completion.text, self.tools.specs)
        if parsed.errors:
            meta["format_errors"] = parsed.errors
        if parsed.stray_text:
            meta["stray_text"] = parsed.stray_text[:2_000]
        if completion.stop:  # the stop string that ended the turn (the format reward reads it)
            meta["stop"] = completion.stop
        if "segments" in meta:
            # Token-exact: the step's ids are the whole turn (sampled and loop-written, in order);
            # token_mask says which the policy wrote, log-probs are 0.0 where it did not.
            turn = meta["segments"]
            token_ids = [t for sg in turn for t in sg["ids"]]
            mask = [int(sg["kind"] in SAMPLED_KINDS) for sg in turn for _ in sg["ids"]]
            logprobs = [x for sg in turn for x in (sg["logprobs"] if sg["kind"] in SAMPLED_KINDS
                                                      and sg["logprobs"] else [0.0] * len(sg["ids"]))]
            meta["token_mask"] = mask
            completion = replace(completion, token_ids=token_ids, logprobs=logprobs)
        return Step(
            index=index, text=completion.text, think=parsed.think, tool_calls=parsed.tool_calls,
            answer=parsed.answer, token_ids=completion.token_ids, logprobs=completion.logprobs,
            prompt_tokens=context_tokens,
            completion_tokens=(completion.usage.completion_tokens
                               or self.backend.count_tokens(completion.text)),
            finish_reason=completion.finish_reason, model_s=completion.latency_s, meta=meta,
        )

    # --- token-exact recording ----------------------------------------------------------------

    def _tokenize(self, text: str) -> list[int]:
        return list(self.backend.tokenize(text))  # type: ignore[attr-defined]

    def _context_ids(self, traj: Trajectory, context: str) -> list[int]:
        """The ids of the context so far: the prompt's, then every recorded segment. A resumed
        trajectory with steps recorded without segments is re-tokenized once (and says so in
        ``meta["retokenized_steps"]``: such a rollout is not fit for training)."""
        prompt_ids = traj.meta.get("prompt_ids")
        if not isinstance(prompt_ids, list):
            prompt_ids = self._tokenize(traj.prompt)
            traj.meta["prompt_ids"] = prompt_ids
        if any("segments" not in st.meta for st in traj.steps):
            traj.meta["retokenized_steps"] = len(traj.steps)
            return self._tokenize(context)
        return list(prompt_ids) + [t for st in traj.steps for sg in st.meta["segments"] for t in sg["ids"]]

    def _close_turn(self, step: Step, ids: list[int] | None) -> None:
        """Token-exact: add the end of turn (the part the model did not sample itself) and put the
        turn's ids into the running context."""
        if ids is None or "segments" not in step.meta:
            return
        end = self._tokenize(protocol.IM_END)
        sampled = step.meta["segments"][-1]["ids"] if step.meta["segments"] else []
        tail = protocol.END_OF_TURN
        if step.meta["segments"] and step.meta["segments"][-1]["kind"] in SAMPLED_KINDS \
                and sampled[-len(end):] == end:
            tail = protocol.END_OF_TURN[len(protocol.IM_END):]
        step.meta["segments"].append(segment("end_of_turn", self._tokenize(tail)))
        ids.extend(t for sg in step.meta["segments"] if sg["kind"] != "nudge" for t in sg["ids"])

    def _add_responses(self, step: Step, block: str, ids: list[int] | None) -> None:
        """Token-exact: the tool-response block (and the reopened assistant turn) as context ids."""
        if "segments" not in step.meta:
            return
        seg = segment("tool_response", self._tokenize(block))
        step.meta["segments"].append(seg)
        if ids is not None:
            ids.extend(seg["ids"])

    async def _run_calls(self, calls: list[ToolCall], calls_left: int | None, step_index: int = 0) -> float:
        """Run the well-formed calls concurrently (bounded); malformed ones answer with their
        error. Returns the wall time of the whole round."""
        gate = asyncio.Semaphore(max(1, self.settings.tool_concurrency))
        budget_left = calls_left

        async def run_one(call: ToolCall) -> None:
            if call.error is not None or call.name is None:
                call.result = protocol.error_response(call.error or "malformed tool call")
                return
            async with gate:
                t0 = time.perf_counter()
                result = await self._call_tool(call.name, call.arguments, self._call_id(step_index, call))
                call.elapsed_s = time.perf_counter() - t0
            call.result, call.ok = result.text, result.ok
            call.meta.update(result.meta)
            sha = result.meta.get("snapshot_sha256")
            call.snapshot_sha256 = sha if isinstance(sha, str) else None

        runnable: list[ToolCall] = []
        for call in calls:
            if call.error is None and budget_left is not None:
                if budget_left <= 0:
                    limit = self.settings.max_tool_calls
                    call.error = (f"not run: the limit of {limit} tool calls is reached; "
                                  "give your final answer")
                budget_left -= 1
            runnable.append(call)
        t0 = time.perf_counter()
        await asyncio.gather(*(run_one(c) for c in runnable))
        return time.perf_counter() - t0

    def _call_id(self, step_index: int, call: ToolCall) -> str | None:
        if not self._runner_takes_call_id:
            return None
        return f"{self.trajectory_id}:{step_index}:{call.index}"

    async def _call_tool(self, name: str, arguments: dict[str, Any],
                         call_id: str | None = None) -> ToolResult:
        try:
            if call_id is not None:
                return await self.tools.call(name, arguments, call_id=call_id)  # type: ignore[call-arg]
            return await self.tools.call(name, arguments)
        except ToolError as e:  # a runner is meant to return these, but tolerate a raise
            return ToolResult(text=protocol.error_response(e.message), ok=False)
        except Exception as e:
            # The model still gets an answer for its call, and the run goes on.
            log.exception("agent.tool_crashed", tool=name)
            detail = f"{type(e).__name__}: {e}"[:300]
            return ToolResult(text=protocol.error_response(f"the {name} tool failed unexpectedly ({detail})"),
                              ok=False, meta={"crashed": True})

    def _fit_responses(self, calls: list[ToolCall], room: int) -> str | None:
        """The tool-response block, with results cut until it fits ``room`` tokens (None: it
        cannot). Cut results are what the model sees, so they replace ``call.result``."""
        block = protocol.format_tool_responses(calls)
        tokens = self.backend.count_tokens(block)
        if tokens <= room:
            return block
        originals = [protocol.call_response(c) for c in calls]
        ratio = room / tokens
        for _ in range(6):
            ratio *= 0.85
            for call, text in zip(calls, originals, strict=True):
                call.result = protocol.truncate_response(text, max(80, int(len(text) * ratio)))
            block = protocol.format_tool_responses(calls)
            if self.backend.count_tokens(block) <= room:
                for call, text in zip(calls, originals, strict=True):
                    if call.result != text:
                        call.meta["truncated_from_chars"] = len(text)
                return block
        for call, text in zip(calls, originals, strict=True):
            call.result = text
        return None

    async def _finish_pending_calls(self, traj: Trajectory, reserve: int) -> None:
        """On resume: run the calls of the last step that never got a result (cut mid-round)."""
        if not traj.steps or traj.steps[-1].forced_final:
            return
        step = traj.steps[-1]
        pending = [c for c in step.tool_calls if c.result is None and c.error is None]
        if not pending:
            return
        context = protocol.rebuild_context(traj.prompt, traj.steps[:-1]) + step.text + protocol.END_OF_TURN
        room = (self.settings.max_context_tokens - self.backend.count_tokens(context) - reserve
                - protocol.MIN_TURN_TOKENS)
        step.tools_s += await self._run_calls(step.tool_calls, self._calls_left(traj, exclude=pending),
                                              step.index)
        block = self._fit_responses(step.tool_calls, room) if room >= protocol.MIN_RESPONSE_TOKENS else None
        if block is None:
            for call in step.tool_calls:
                call.result = None
        else:
            step.tool_response_tokens = self.backend.count_tokens(block)
            if self.token_exact:
                self._add_responses(step, block, None)

    # --- bookkeeping -----------------------------------------------------------------------

    def _calls_left(self, traj: Trajectory, exclude: list[ToolCall] | None = None) -> int | None:
        limit = self.settings.max_tool_calls
        if limit is None:
            return None
        skip = {id(c) for c in exclude or []}
        used = sum(1 for c in traj.tool_calls
                   if c.error is None and c.result is not None and id(c) not in skip)
        return max(0, limit - used)

    @staticmethod
    def _time(step: Step, started: float) -> None:
        wall = time.perf_counter() - started
        step.overhead_s = max(0.0, wall - step.model_s - step.tools_s)

    @staticmethod
    async def _emit(on_step: OnStep | None, step: Step, traj: Trajectory) -> None:
        if on_step is not None:
            await on_step(step, traj)

    @staticmethod
    def _fail(traj: Trajectory, error: BaseException) -> None:
        traj.stop_reason = "error"
        traj.meta["error"] = f"{type(error).__name__}: {error}"
        log.error("agent.failed", error=traj.meta["error"], steps=len(traj.steps))


def _takes_call_id(tools: ToolRunner) -> bool:
    """Whether the runner's ``call`` accepts a ``call_id`` keyword (the ToolRunner protocol does not
    require it: the in-process Toolbox has no use for ids)."""
    try:
        params = inspect.signature(tools.call).parameters
    except (TypeError, ValueError):
        return False
    return "call_id" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
