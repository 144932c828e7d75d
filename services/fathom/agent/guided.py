"""Guided turns: keep a weak model on the tool protocol with prefill and constrained decoding.

A tiny model (the bundled SmolLM2-135M) cannot write ``<tool_call>`` JSON unaided. The guided
policy writes the fixed parts of a turn itself and lets the model fill in only the free parts,
through the same ``ModelBackend``:

  (a) a short free thought, stopped at ``</think>``;
  (b) the action, chosen by constrained decoding among the actions allowed right now
      (a search and a page read are required before answering; a turn cap forces the answer);
  (c) search: the first query is the question itself; later ones come from a short side prompt
      that lists the queries already tried (a copied URL or template text falls back);
  (d) read: the URL chosen among URLs seen in earlier tool responses, then the goal;
  (e) answer: from a short side prompt holding the evidence of the latest page reads (grounded),
      or inside a prefilled ``\\boxed{`` when nothing was read.

The result is the turn text a well-formed model would have written, so the loop parses it on
the same path as a free turn.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from fathom.agent import protocol
from fathom.agent.trajectory import Trajectory
from fathom.core.config import AgentSettings
from fathom.models.base import Completion, ModelBackend, SamplingParams, Usage

Action = Literal["search_urls", "query_url", "answer"]

# The exact prefixes of well-formed calls, up to where the model's own words begin.
SEARCH_PREFILL = protocol.CALL_OPEN + '\n{"name": "search_urls", "arguments": {"query": "'
READ_PREFILL = protocol.CALL_OPEN + '\n{"name": "query_url", "arguments": {"url": "'
GOAL_PREFILL = '", "goal": "'
ACTION_PROMPT = "\nNext action:"  # side prompt for the action choice; not part of the turn text

_THINK_STOPS = (protocol.THINK_CLOSE, protocol.CALL_OPEN, protocol.BOXED_OPEN, *protocol.STOP_STRINGS)
_VALUE_STOPS = ('"', "\n", *protocol.STOP_STRINGS)
_ANSWER_STOPS = ("}", "\n", *protocol.STOP_STRINGS)
_TAG = re.compile(r"</?(?:think|tool_call|tool_response|tools)>|<\|im_(?:start|end)\|>|\\boxed")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MD_LINK_URL = re.compile(r"\]\((https?://[^\s)]+)\)")
_BARE_URL = re.compile(r"https?://[^\s<>\"')\]]+")


@dataclass
class Phase:
    """One piece of a guided turn: text the policy wrote (prefill) or the model generated."""

    name: str
    text: str
    generated: bool
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None


@dataclass
class GuidedTurn:
    completion: Completion  # the whole turn, as if one well-formed completion
    action: Action
    phases: list[Phase] = field(default_factory=list)

    def phases_meta(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.phases]


# --- the decision rules (pure) ---------------------------------------------------------------


def urls_seen(traj: Trajectory) -> list[str]:
    """URLs offered by earlier search results, in order of first appearance."""
    seen: dict[str, None] = {}
    for call in traj.tool_calls:
        if call.name == "search_urls" and call.ok and call.result:
            found = _MD_LINK_URL.findall(call.result) or _BARE_URL.findall(call.result)
            for url in found:
                seen.setdefault(url.rstrip(".,;"), None)
    return list(seen)


def urls_read(traj: Trajectory) -> set[str]:
    return {str(c.arguments.get("url")) for c in traj.tool_calls if c.name == "query_url" and not c.error}


def allowed_actions(traj: Trajectory, *, min_searches: int, min_reads: int, max_turns: int,
                    final: bool = False) -> tuple[Action, ...]:
    """What the guided model may do next. Answering waits for the required searches and reads
    (reads only while there is something left to read); the turn cap forces the answer."""
    if final or len(traj.steps) >= max_turns - 1:
        return ("answer",)
    searches = sum(1 for c in traj.tool_calls if c.name == "search_urls" and c.ok)
    reads = sum(1 for c in traj.tool_calls if c.name == "query_url" and c.ok)
    unread = [u for u in urls_seen(traj) if u not in urls_read(traj)]
    # The required minimums come first, in the order a careful researcher works: search, then read.
    if searches < min_searches:
        return ("search_urls",)
    if reads < min_reads and unread:
        return ("query_url",)
    actions: list[Action] = ["search_urls"]
    if unread:
        actions.append("query_url")
    if searches >= min_searches and (reads >= min_reads or not unread):
        actions.append("answer")
    return tuple(actions)


def clean_think(text: str) -> str:
    """A thought with every protocol tag removed, so it cannot be misread as structure."""
    return " ".join(_TAG.sub(" ", text).split())


_WORD = re.compile(r"[^\W\d_]{2,}")


def usable_text(text: str, min_words: int = 2) -> bool:
    """Whether a generated query, goal or answer is worth using: words, not a copied URL or markup.
    Weak models often echo URLs or template text from their context instead of writing one."""
    lowered = text.lower()
    if "http" in lowered or "www." in lowered or "://" in lowered:
        return False
    return len(_WORD.findall(text)) >= min_words


def last_evidence(traj: Trajectory, max_chars: int = 1500) -> str:
    """The most recent successful page reads, newest first, for a grounded final answer."""
    parts: list[str] = []
    for call in reversed(traj.tool_calls):
        if call.name == "query_url" and call.ok and call.result:
            parts.append(call.result.strip())
        if sum(len(p) for p in parts) >= max_chars:
            break
    return "\n\n".join(parts)[:max_chars]


def side_prompt(system: str, user: str) -> str:
    """A fresh, short ChatML exchange for one sub-task of a guided turn."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def clean_value(text: str, max_chars: int = 200) -> str:
    """A generated query, goal or answer: one line, no control characters, no protocol tags."""
    text = _CONTROL.sub(" ", _TAG.sub(" ", text)).replace("{", " ").replace("}", " ")
    return " ".join(text.split())[:max_chars].strip()


# --- the policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidedPolicy:
    min_searches: int = 1
    min_reads: int = 1
    max_turns: int = 6
    think_tokens: int = 48
    value_tokens: int = 24  # query, goal and answer lengths
    max_url_choices: int = 8

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> GuidedPolicy:
        return cls(min_searches=settings.min_searches, min_reads=settings.min_reads,
                   max_turns=settings.guided_max_turns)

    def actions(self, traj: Trajectory, final: bool = False) -> tuple[Action, ...]:
        return allowed_actions(traj, min_searches=self.min_searches, min_reads=self.min_reads,
                               max_turns=self.max_turns, final=final)

    async def turn(self, backend: ModelBackend, context: str, traj: Trajectory,
                   sampling: SamplingParams, *, final: bool = False) -> GuidedTurn:
        """Generate one assistant turn for ``context`` (which ends inside ``<think>``)."""
        run = _TurnWriter(backend, context, sampling)
        fallback = " ".join(traj.question.split())[:200] or "unknown"

        # (a) a short free thought
        thought = await run.generate("think", self.think_tokens, _THINK_STOPS)
        think = clean_think(thought) or "I will work through this step by step."
        run.prefill("think", f"\n{think}\n{protocol.THINK_CLOSE}\n\n", replaces=thought)

        # (b) the action, among what is allowed now
        allowed = self.actions(traj, final)
        action: Action = allowed[0]
        if len(allowed) > 1:
            picked = await run.choose("action", ACTION_PROMPT, tuple(f" {a}" for a in allowed))
            action = next((a for a in allowed if picked.strip() == a), allowed[0])

        if action == "search_urls":  # (c)
            done = [str(c.arguments.get("query", "")) for c in traj.tool_calls if c.name == "search_urls"]
            if not done:
                # The first search is the question itself: BM25 and web engines take it well, and a
                # weak model's rewrite of it is usually worse.
                query = fallback
            else:
                asked = "\n".join(f"- {q}" for q in done[-4:])
                prompt = side_prompt(
                    "You write short web search queries of a few keywords.",
                    f"Question: {traj.question}\nQueries already tried:\n{asked}\n"
                    "Write one new search query.",
                )
                query = clean_value(await run.generate_side("query", prompt, self.value_tokens, ("\n",)))
                if not usable_text(query) or query in done:
                    query = fallback if fallback not in done else f"{fallback} {len(done) + 1}"
            run.prefill("call", SEARCH_PREFILL)
            body = protocol.format_tool_call("search_urls", {"query": query})
        elif action == "query_url":  # (d)
            read = urls_read(traj)
            seen = urls_seen(traj)
            candidates = [u for u in seen if u not in read] or seen
            candidates = candidates[: self.max_url_choices]
            run.prefill("call", READ_PREFILL)
            url = candidates[0]
            if len(candidates) > 1:
                picked = await run.choose("url", "", tuple(candidates))
                url = picked if picked in candidates else candidates[0]
            run.prefill("url", url + GOAL_PREFILL)
            goal = clean_value(await run.generate("goal", self.value_tokens, _VALUE_STOPS))
            if not usable_text(goal, min_words=3):
                goal = fallback
            body = protocol.format_tool_call("query_url", {"url": url, "goal": goal})
        else:  # (e)
            evidence = last_evidence(traj)
            if evidence:
                prompt = side_prompt(
                    "You answer questions briefly, using only the evidence given.",
                    f"Evidence:\n{evidence}\n\nQuestion: {traj.question}\nAnswer in a few words.",
                )
                answer = clean_value(await run.generate_side("answer", prompt, self.value_tokens, ("\n",)))
            else:
                run.prefill("answer", protocol.BOXED_OPEN)
                answer = clean_value(await run.generate("answer", self.value_tokens, _ANSWER_STOPS))
            if not usable_text(answer, min_words=1):
                answer = "unknown"
            body = f"{protocol.BOXED_OPEN}{answer}}}"

        text = f"\n{think}\n{protocol.THINK_CLOSE}\n\n{body}"
        return GuidedTurn(completion=run.completion(text), action=action, phases=run.phases)


class _TurnWriter:
    """Accumulates one guided turn: prefilled text, generated pieces, their ids and timings."""

    def __init__(self, backend: ModelBackend, context: str, sampling: SamplingParams) -> None:
        self.backend = backend
        self.context = context
        self.sampling = sampling
        self.written = ""  # turn text so far, as the model sees it
        self.phases: list[Phase] = []
        self.latency_s = 0.0
        self.prompt_tokens = 0

    def prefill(self, name: str, text: str, replaces: str | None = None) -> None:
        """Append text the policy writes. ``replaces`` drops the raw generation it cleans up."""
        if replaces is not None:
            self.written = self.written[: len(self.written) - len(replaces)]
        self.written += text
        self.phases.append(Phase(name=name, text=text, generated=False))

    async def generate(self, name: str, max_tokens: int, stop: Sequence[str]) -> str:
        params = replace(self.sampling, max_new_tokens=max(1, max_tokens), stop=tuple(stop), choices=None)
        out = await self._complete(self.context + self.written, params)
        self.written += out.text
        self.phases.append(Phase(name=name, text=out.text, generated=True, token_ids=out.token_ids,
                                 logprobs=out.logprobs))
        return out.text

    async def generate_side(self, name: str, prompt: str, max_tokens: int, stop: Sequence[str]) -> str:
        """Generate from a separate short prompt; the text is used by the policy, not kept as is."""
        params = replace(self.sampling, max_new_tokens=max(1, max_tokens), stop=tuple(stop), choices=None)
        out = await self._complete(prompt, params)
        self.phases.append(Phase(name=name, text=out.text, generated=True, token_ids=out.token_ids,
                                 logprobs=out.logprobs))
        return out.text

    async def choose(self, name: str, side_prompt: str, choices: tuple[str, ...]) -> str:
        """Constrained choice. A side prompt, if any, is shown to the model but not kept."""
        params = replace(self.sampling, max_new_tokens=64, stop=(), choices=choices)
        out = await self._complete(self.context + self.written + side_prompt, params)
        self.phases.append(Phase(name=name, text=out.text, generated=True, token_ids=out.token_ids,
                                 logprobs=out.logprobs))
        return out.text

    async def _complete(self, prompt: str, params: SamplingParams) -> Completion:
        t0 = time.perf_counter()
        out = await self.backend.complete(prompt, params)
        self.latency_s += time.perf_counter() - t0
        if not self.prompt_tokens:
            self.prompt_tokens = out.usage.prompt_tokens
        return out

    def completion(self, text: str) -> Completion:
        # Ids exist only for generated pieces; prefilled text was never sampled. Step.meta keeps
        # the per-phase alignment for anyone who needs it.
        ids = [i for p in self.phases if p.generated and p.token_ids for i in p.token_ids]
        lps = [x for p in self.phases if p.generated and p.logprobs for x in p.logprobs]
        return Completion(
            text=text, finish_reason="stop",
            usage=Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.backend.count_tokens(text)),
            token_ids=ids or None, logprobs=lps or None, model=self.backend.name, latency_s=self.latency_s,
        )
