"""Guided turns: keep a weak model on the tool protocol, and on a research plan, by prefill and
constrained choices.

A tiny model (the bundled SmolLM2-135M) cannot write ``<tool_call>`` JSON, think of a follow-up
query, or tell when it has found the answer. The guided policy writes the fixed parts of each turn
and follows a plan read from the trajectory (``fathom.agent.support``); the model writes its
thought and makes the choices, through the same ``ModelBackend``:

  (a) a short free thought, stopped at ``</think>``;
  (b) the action, by the rules of ``GuidedPolicy.plan``; where they leave two reasonable moves
      (read on or follow up), the model chooses by constrained decoding;
  (c) search: the first query is the question itself; a follow-up query is built from what was
      read: an entity named in the verified quotes (the model picks it among the best few), then
      the words of the question that the quote naming it does not cover;
  (d) read: the model picks the page among the best unread results of the latest search; the goal
      is the question, plus the follow-up query that found the page;
  (e) answer: a span of a verified quote (a name, date or number); the model picks among the
      names of the best supporting quote. So an answer is grounded by construction, and never an
      echo of the prompt ("Page 1: ..."), the question, a URL or a placeholder.

The plan: search; read ``reads_per_search`` results of each search; answer as soon as a candidate
is supported (``support.Candidate.supported``); otherwise search again with a follow-up query.
The turn budget (``max_turns``), or a context nearly full, forces the answer: the best grounded
candidate, or a plain statement without ``\\boxed{}`` when nothing read names one.

The result is the turn text a well-formed model would have written, so the loop parses it on the
same path as a free turn.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from fathom.agent import protocol
from fathom.agent.support import (
    PROTOCOL_TAG,
    answer_candidates,
    bridge_entities,
    follow_up_query,
    norm,
    pages_read,
    reads_since_last_search,
    search_rounds,
    urls_read,
    urls_seen,
)
from fathom.agent.trajectory import Trajectory
from fathom.core.config import AgentSettings
from fathom.core.errors import ModelError
from fathom.models.base import Completion, ModelBackend, SamplingParams, TokenBackend, Usage, supports_tokens

Action = Literal["search_urls", "query_url", "answer"]

# The exact prefixes of well-formed calls, up to where the model's own words begin.
SEARCH_PREFILL = protocol.CALL_OPEN + '\n{"name": "search_urls", "arguments": {"query": "'
READ_PREFILL = protocol.CALL_OPEN + '\n{"name": "query_url", "arguments": {"url": "'
GOAL_PREFILL = '", "goal": "'
ACTION_PROMPT = "\nNext action:"  # side prompt for the action choice; not part of the turn text
NO_ANSWER = "None of the pages read supports an answer to the question."

# Token-exact recording (training rollouts): a turn is a list of segments, each a dict
# {"kind", "ids", "logprobs"}, in the order the ids entered the context. Only SAMPLED_KINDS are the
# policy's own tokens (mask 1): "sampled" was drawn from the model, "choice" is the model's pick
# among offered strings (scored by the model in this context). Everything else (loop prefills,
# end of turn, nudges, tool responses) is context the policy did not write (mask 0).
SAMPLED_KINDS = frozenset({"sampled", "choice"})


def segment(kind: str, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> dict[str, Any]:
    """One recorded piece of the token context (JSON-ready: it is stored in ``Step.meta``)."""
    return {"kind": kind, "ids": [int(t) for t in ids],
            "logprobs": [float(x) for x in logprobs] if logprobs is not None else None}


_THINK_STOPS = (protocol.THINK_CLOSE, protocol.CALL_OPEN, protocol.BOXED_OPEN, *protocol.STOP_STRINGS)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_think(text: str) -> str:
    """A thought with every protocol tag removed, so it cannot be misread as structure."""
    return " ".join(PROTOCOL_TAG.sub(" ", text).split())


def side_prompt(system: str, user: str) -> str:
    """A fresh, short ChatML exchange for one sub-task of a guided turn."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def clean_value(text: str, max_chars: int = 200) -> str:
    """A query or goal: one line, no control characters, no protocol tags."""
    text = _CONTROL.sub(" ", PROTOCOL_TAG.sub(" ", text)).replace("{", " ").replace("}", " ")
    return " ".join(text.split())[:max_chars].strip()


# --- the policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the policy may do next, and why (kept in the step's meta)."""

    actions: tuple[Action, ...]
    reason: str


@dataclass(frozen=True)
class GuidedPolicy:
    min_searches: int = 1
    min_reads: int = 1
    max_turns: int = 10  # the turn budget: the last turn answers
    reads_per_search: int = 2  # results read after each search before a follow-up is considered
    max_searches: int = 4
    support_threshold: float = 0.75
    # The loop's context budget, when known: with less than answer_room_tokens left (about one
    # more search round) the policy answers at once, rather than be cut off without an answer.
    context_tokens: int | None = None
    answer_room_tokens: int = 1_200
    think_tokens: int = 24
    offered: int = 3  # pages, entities or answers the model chooses among

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> GuidedPolicy:
        return cls(min_searches=settings.min_searches, min_reads=settings.min_reads,
                   max_turns=settings.guided_max_turns, reads_per_search=settings.guided_reads_per_search,
                   context_tokens=settings.max_context_tokens)

    # -- the rules (pure) ---------------------------------------------------------------------

    @property
    def top_k(self) -> int:
        """Results asked of each search: those the policy may read."""
        return self.reads_per_search + self.offered

    def read_pool(self, traj: Trajectory) -> list[str]:
        """Unread results of the latest search worth reading, best ranked first."""
        rounds = search_rounds(traj)
        if not rounds:
            return []
        done = urls_read(traj)
        return [h.url for h in rounds[-1].hits[: self.top_k] if h.url not in done]

    def follow_ups(self, traj: Trajectory) -> list[tuple[str, str]]:
        """(entity, query) pairs for a follow-up search not made yet, best first."""
        pages = pages_read(traj)
        done = [r.query for r in search_rounds(traj)]
        done_norm = {norm(q) for q in done}
        out: list[tuple[str, str]] = []
        for entity in bridge_entities(traj.question, pages, done)[: self.offered * 2]:
            query = follow_up_query(entity, traj.question, pages)
            if norm(query) not in done_norm and all(norm(query) != norm(q) for _, q in out):
                out.append((entity, query))
        return out

    def plan(self, traj: Trajectory, final: bool = False, room: int | None = None) -> Plan:
        """The actions allowed now. Answering waits for a supported candidate (or the budget)."""
        if final:
            return Plan(("answer",), "a final answer is required")
        if len(traj.steps) >= self.max_turns - 1:
            return Plan(("answer",), "the turn budget is spent")
        if room is not None and room < self.answer_room_tokens:
            return Plan(("answer",), "the context is nearly full")
        searches = sum(1 for c in traj.tool_calls if c.name == "search_urls" and c.ok)
        reads = sum(1 for c in traj.tool_calls if c.name == "query_url" and c.ok)
        if searches < self.min_searches:
            return Plan(("search_urls",), "no search yet")
        pool = self.read_pool(traj)
        if reads >= self.min_reads:
            best = next(iter(answer_candidates(traj.question, pages_read(traj))), None)
            if best is not None and best.supported(self.support_threshold):
                return Plan(("answer",), f"supported by {best.url}")
        can_search = searches < self.max_searches and bool(self.follow_ups(traj))
        this_round = reads_since_last_search(traj)
        if pool and (this_round < self.reads_per_search or not can_search):
            return Plan(("query_url",), "reading the results of the latest search")
        if can_search and pool:
            return Plan(("search_urls", "query_url"), "nothing supported yet: follow up or read on")
        if can_search:
            return Plan(("search_urls",), "nothing supported yet: follow up")
        return Plan(("answer",), "nothing left to read or search")

    def actions(self, traj: Trajectory, final: bool = False) -> tuple[Action, ...]:
        return self.plan(traj, final).actions

    # -- one turn -----------------------------------------------------------------------------

    async def turn(self, backend: ModelBackend, context: str, traj: Trajectory,
                   sampling: SamplingParams, *, final: bool = False,
                   context_ids: list[int] | None = None) -> GuidedTurn:
        """Generate one assistant turn for ``context`` (which ends inside ``<think>``).

        With ``context_ids`` (the token-exact path; the backend must serve ``TokenBackend``) the
        model is prompted with those ids plus the turn's own ids so far, and the turn is recorded as
        segments (``GuidedTurn.segments``): its text is then exactly the text of those ids.
        """
        run = _TurnWriter(backend, context, sampling, context_ids)

        # (a) a short free thought
        thought = await run.generate("think", self.think_tokens, _THINK_STOPS)
        think = clean_think(thought) or "I will work through this step by step."
        if run.keeps_thought(think, thought):
            # Token-exact: the model's own thought (and its </think>) stay as sampled ids.
            closed = run.last_stop == protocol.THINK_CLOSE
            run.prefill("think", "\n\n" if closed else f"\n{protocol.THINK_CLOSE}\n\n")
        else:
            if think != thought.strip():
                run.phases[-1].side = True  # cleaned up: its tokens are no longer the turn's text
            run.prefill("think", f"\n{think}\n{protocol.THINK_CLOSE}\n\n", replaces=thought)
        run.body_start, run.body_segment = len(run.written), len(run.segments)

        # (b) the action, among what is allowed now
        room = None if self.context_tokens is None else self.context_tokens - backend.count_tokens(context)
        plan = self.plan(traj, final, room=room)
        run.note("plan", plan.reason)
        action: Action = plan.actions[0]
        if len(plan.actions) > 1:
            picked = await run.choose("action", ACTION_PROMPT, tuple(f" {a}" for a in plan.actions))
            action = next((a for a in plan.actions if picked.strip() == a), plan.actions[0])

        if action == "search_urls":  # (c)
            body = await self._search(run, traj)
        elif action == "query_url":  # (d)
            body = await self._read(run, traj)
        else:  # (e)
            body = await self._answer(run, traj)

        if run.tokens is not None:
            text = run.finish_body(body)
            return GuidedTurn(completion=run.completion(text), action=action, phases=run.phases,
                              segments=run.segments)
        text = f"\n{think}\n{protocol.THINK_CLOSE}\n\n{body}"
        return GuidedTurn(completion=run.completion(text), action=action, phases=run.phases)

    async def _search(self, run: _TurnWriter, traj: Trajectory) -> str:
        follow_ups = self.follow_ups(traj)
        if not search_rounds(traj) or not follow_ups:
            # The first search is the question itself: BM25 and web engines take it well, and a
            # weak model's rewrite of it is usually worse.
            query = " ".join(traj.question.split())[:200]
        else:
            offered = follow_ups[: self.offered]
            entity, query = offered[0]
            if len(offered) > 1:
                facts = "\n".join(f"- {q}" for p in pages_read(traj) for q in p.quotes[:2])[:1500]
                prompt = side_prompt(
                    "You help a researcher decide which name to look up next.",
                    f"Question: {traj.question}\nWhat the pages said:\n{facts}\n"
                    "Which name should be searched next to answer the question?")
                picked = await run.choose_side("entity", prompt, tuple(f" {e}" for e, _ in offered))
                entity, query = next(((e, q) for e, q in offered if f" {e}" == picked), offered[0])
            run.note("entity", entity)
        run.prefill("call", SEARCH_PREFILL)
        # Only the results the policy may read are asked for: the rest would fill the (small)
        # context of a weak model with text it never uses.
        return protocol.format_tool_call("search_urls", {"query": clean_value(query), "top_k": self.top_k})

    async def _read(self, run: _TurnWriter, traj: Trajectory) -> str:
        unread = [u for u in urls_seen(traj) if u not in urls_read(traj)]
        candidates = (self.read_pool(traj) or unread or urls_seen(traj))[: self.offered]
        run.prefill("call", READ_PREFILL)
        if len(candidates) > 1:
            url = await run.choose("url", "", tuple(candidates), keep=True)
        else:
            url = candidates[0]
            run.prefill("url", url)
        goal = " ".join(traj.question.split())
        rounds = search_rounds(traj)
        if len(rounds) > 1:
            # A follow-up search names the entity it looks up: put it in the goal, so that the
            # extractor keeps the passages about that entity.
            goal = f"{goal} (looking up: {rounds[-1].query})"
        goal = clean_value(goal, 500)
        run.prefill("goal", GOAL_PREFILL + goal)
        return protocol.format_tool_call("query_url", {"url": url, "goal": goal})

    async def _answer(self, run: _TurnWriter, traj: Trajectory) -> str:
        candidates = answer_candidates(traj.question, pages_read(traj))
        if not candidates:
            # Nothing read names an answer: saying so is better than boxing a guess.
            return NO_ANSWER
        best = candidates[0]
        # The model picks among the best candidates of the best quote: which name in the
        # supporting sentence answers the question is a reading task, not a counting one.
        tied = [c for c in candidates if c.quote == best.quote and c.coverage == best.coverage]
        tied = tied[: self.offered]
        answer = best.text
        if len(tied) > 1:
            prompt = side_prompt(
                "You answer questions with a short name, date or number copied from the evidence.",
                f"Evidence: {best.quote}\n\nQuestion: {traj.question}")
            picked = await run.choose_side("answer", prompt + "Answer:", tuple(f" {c.text}" for c in tied))
            answer = next((c.text for c in tied if f" {c.text}" == picked), best.text)
        run.note("support", f"{best.coverage:.2f} {best.url}")
        run.prefill("answer", protocol.BOXED_OPEN)
        return f"{protocol.BOXED_OPEN}{answer}}}"


@dataclass
class Phase:
    """One piece of a guided turn: text the policy wrote (prefill), text the model generated in the
    turn, or a choice the model made on a side prompt (``side``: not part of the turn text)."""

    name: str
    text: str
    generated: bool
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    side: bool = False


@dataclass
class GuidedTurn:
    completion: Completion  # the whole turn, as if one well-formed completion
    action: Action
    phases: list[Phase] = field(default_factory=list)
    segments: list[dict[str, Any]] | None = None  # token-exact path: the turn's ids, in order

    def phases_meta(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.phases]


class _TurnWriter:
    """Accumulates one guided turn: prefilled text, generated pieces, their ids and timings.

    With ``context_ids`` it also keeps the turn as token segments and prompts the model with ids
    (``TokenBackend.complete_tokens``); ``written`` is then always the text of those ids."""

    def __init__(self, backend: ModelBackend, context: str, sampling: SamplingParams,
                 context_ids: list[int] | None = None) -> None:
        self.backend = backend
        self.context = context
        self.sampling = sampling
        self.written = ""  # turn text so far, as the model sees it
        self.phases: list[Phase] = []
        self.latency_s = 0.0
        self.prompt_tokens = 0
        self.tokens: TokenBackend | None = None
        if context_ids is not None:
            if not supports_tokens(backend):
                raise ModelError(f"{backend.name}: token-exact turns need a backend with complete_tokens")
            self.tokens = backend  # type: ignore[assignment]
        self.context_ids = list(context_ids or [])
        self.segments: list[dict[str, Any]] = []
        self.body_start = 0  # where the body (after the thought) begins: in written, in segments
        self.body_segment = 0
        self.last_stop: str | None = None
        self._last_raw = ""  # text of the last generated piece (token path: with its stop string)
        self._last_finish = "stop"

    def turn_ids(self) -> list[int]:
        return [t for s in self.segments for t in s["ids"]]

    def keeps_thought(self, think: str, thought: str) -> bool:
        """Token path: whether the sampled thought can stay as it was sampled (clean, and ended by
        ``</think>`` or the length cap), so that the turn text is exactly its ids."""
        if self.tokens is None or not self.segments or self.segments[-1]["kind"] != "sampled":
            return False
        ended = (self.last_stop == protocol.THINK_CLOSE
                 or (self.last_stop is None and self._last_finish == "length"))
        return (ended and bool(thought.strip()) and think == thought.strip()
                and self._last_raw == thought + (self.last_stop or ""))

    def prefill(self, name: str, text: str, replaces: str | None = None) -> None:
        """Append text the policy writes. ``replaces`` drops the raw generation it cleans up."""
        if replaces is not None:
            if self.tokens is not None:
                raw = self._last_raw
                if self.segments and self.segments[-1]["kind"] == "sampled":
                    self.segments.pop()
                self.written = self.written[: len(self.written) - len(raw)]
            else:
                self.written = self.written[: len(self.written) - len(replaces)]
        self.written += text
        if self.tokens is not None and text:
            self.segments.append(segment("prefill", self.tokens.tokenize(text)))
        self.phases.append(Phase(name=name, text=text, generated=False))

    def finish_body(self, body: str) -> str:
        """Token path: write the rest of the turn's body (what the policy wrote after the last model
        piece) and return the turn text, which is exactly the text of the turn's ids."""
        assert self.tokens is not None
        so_far = self.written[self.body_start:]
        if not body.startswith(so_far):  # not expected: write the whole body as policy text
            self.segments = self.segments[: self.body_segment]
            self.written = self.written[: self.body_start]
            so_far = ""
        rest = body[len(so_far):]
        if rest:
            self.prefill("rest", rest)
        return self.written

    def note(self, name: str, text: str) -> None:
        """Record a decision of the policy that is not turn text (e.g. the entity followed)."""
        self.phases.append(Phase(name=name, text=text, generated=False, side=True))

    async def generate(self, name: str, max_tokens: int, stop: Sequence[str]) -> str:
        params = replace(self.sampling, max_new_tokens=max(1, max_tokens), stop=tuple(stop), choices=None)
        if self.tokens is not None:
            out = await self._complete_ids(self.context_ids + self.turn_ids(), params)
            self._last_raw = self.tokens.detokenize(out.token_ids or [])
            self.last_stop, self._last_finish = out.stop, out.finish_reason
            self.written += self._last_raw
            self.segments.append(segment("sampled", out.token_ids or [], out.logprobs))
            self.phases.append(Phase(name=name, text=out.text, generated=True, token_ids=out.token_ids,
                                     logprobs=out.logprobs))
            return out.text
        out = await self._complete(self.context + self.written, params)
        self.written += out.text
        self.phases.append(Phase(name=name, text=out.text, generated=True, token_ids=out.token_ids,
                                 logprobs=out.logprobs))
        return out.text

    async def choose(self, name: str, side_prompt: str, choices: tuple[str, ...], keep: bool = False) -> str:
        """Constrained choice in the turn's context. A side prompt, if any, is shown to the model
        but not kept. ``keep``: the choice becomes turn text (a URL in a call, say)."""
        params = replace(self.sampling, max_new_tokens=64, stop=(), choices=choices)
        if self.tokens is not None:
            side_ids = self.tokens.tokenize(side_prompt) if side_prompt else []
            out = await self._complete_ids(self.context_ids + self.turn_ids() + side_ids, params)
            text = out.text if out.text in choices else choices[0]
            if keep and text == out.text and out.token_ids:
                self.written += self.tokens.detokenize(out.token_ids)
                self.segments.append(segment("choice", out.token_ids, out.logprobs))
            elif keep:
                self.prefill(name, text)
        else:
            out = await self._complete(self.context + self.written + side_prompt, params)
            text = out.text if out.text in choices else choices[0]
            if keep:
                self.written += text
        self.phases.append(Phase(name=name, text=text, generated=True, token_ids=out.token_ids,
                                 logprobs=out.logprobs, side=not keep))
        return text

    async def choose_side(self, name: str, prompt: str, choices: tuple[str, ...]) -> str:
        """Constrained choice on a separate short prompt; the policy uses the choice, the turn text
        does not contain it as generated."""
        params = replace(self.sampling, max_new_tokens=64, stop=(), choices=choices)
        out = await self._complete(prompt, params)
        text = out.text if out.text in choices else choices[0]
        self.phases.append(Phase(name=name, text=text, generated=True, token_ids=out.token_ids,
                                 logprobs=out.logprobs, side=True))
        return text

    async def _complete(self, prompt: str, params: SamplingParams) -> Completion:
        t0 = time.perf_counter()
        out = await self.backend.complete(prompt, params)
        self.latency_s += time.perf_counter() - t0
        if not self.prompt_tokens:
            self.prompt_tokens = out.usage.prompt_tokens
        return out

    async def _complete_ids(self, prompt_ids: list[int], params: SamplingParams) -> Completion:
        assert self.tokens is not None
        t0 = time.perf_counter()
        out = await self.tokens.complete_tokens(prompt_ids, params)
        self.latency_s += time.perf_counter() - t0
        if not self.prompt_tokens:
            self.prompt_tokens = out.usage.prompt_tokens or len(prompt_ids)
        return out

    def completion(self, text: str) -> Completion:
        if self.tokens is not None:
            # Token path: the ids of the whole turn text, with the log-probs of the sampled ones
            # (0.0 for policy-written ids; ``token_mask`` in the step's meta tells them apart).
            ids = self.turn_ids()
            turn_lps = [x for s in self.segments for x in (s["logprobs"] or [0.0] * len(s["ids"]))]
            return Completion(text=text, finish_reason="stop",
                              usage=Usage(prompt_tokens=self.prompt_tokens, completion_tokens=len(ids)),
                              token_ids=ids, logprobs=turn_lps, model=self.backend.name,
                              latency_s=self.latency_s)
        # Ids and log-probabilities only of what the model generated inside the turn text, in
        # order; side choices and cleaned-up raw thoughts were sampled from other contexts, so
        # they stay in the per-phase record (Step.meta) only. Prefilled text was never sampled.
        own = [p for p in self.phases if p.generated and not p.side and p.token_ids]
        ids = [i for p in own for i in p.token_ids or []]
        lps: list[float] | None = [x for p in own for x in p.logprobs or []]
        if lps is not None and len(lps) != len(ids):
            lps = None  # a piece without log-probabilities: a partial list would misalign
        return Completion(
            text=text, finish_reason="stop",
            usage=Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.backend.count_tokens(text)),
            token_ids=ids or None, logprobs=lps or None, model=self.backend.name, latency_s=self.latency_s,
        )
