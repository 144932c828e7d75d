"""Real, small implementations of the agent's seams for loop tests.

``ScriptedBackend`` is a ModelBackend that replays given turn texts while honouring what a real
backend must honour: stop strings, ``max_new_tokens`` (by its own tokenizer), ``choices`` and
token counting. ``InMemoryTools`` is a ToolRunner over a tiny in-memory web: real ranking, the
real result formats (``format_results``, ``format_query_url_result`` with quotes that are verbatim
spans of the page), real page reads, optional latency and crashes.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fathom.core.errors import ModelError
from fathom.models.base import ChatMessage, Completion, SamplingParams, Usage
from fathom.tools.base import TOOL_SPECS, ToolResult, ToolSpec
from fathom.tools.extract import format_query_url_result
from fathom.tools.extract.evidence import Evidence
from fathom.tools.search.base import SearchHit, format_results

Script = Sequence[str] | Callable[[int, str], str]


@dataclass
class Request:
    prompt: str
    params: SamplingParams
    prompt_tokens: int


class ScriptedBackend:
    """Replays turns. ``chars_per_token`` sets its tokenizer: 1 makes budgets easy to reach."""

    def __init__(self, script: Script, *, chars_per_token: int = 4, delay_s: float = 0.0,
                 name: str = "scripted") -> None:
        self.script = script
        self.chars_per_token = chars_per_token
        self.delay_s = delay_s
        self.name = name
        self.requests: list[Request] = []

    def _next(self, prompt: str) -> str:
        i = len(self.requests) - 1
        if callable(self.script):
            return self.script(i, prompt)
        if i >= len(self.script):
            raise ModelError(f"script exhausted after {len(self.script)} completions")
        return self.script[i]

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        self.requests.append(Request(prompt, params, self.count_tokens(prompt)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = self._next(prompt)
        if params.choices is not None:
            # A constrained backend can only return one of the choices. The script may give a
            # "|"-separated order of preference.
            chosen = next((c for c in text.split("|") if c in params.choices), params.choices[0])
            return self._completion(chosen, "stop", None, prompt, params)
        cut, matched = len(text), None
        for s in params.stop:
            j = text.find(s)
            if 0 <= j < cut:
                cut, matched = j, s
        limit = params.max_new_tokens * self.chars_per_token
        if cut > limit:
            return self._completion(text[:limit], "length", None, prompt, params)
        return self._completion(text[:cut], "stop", matched, prompt, params)

    def _completion(self, text: str, finish: Any, stop: str | None, prompt: str,
                    params: SamplingParams) -> Completion:
        n = self.count_tokens(text)
        ids = [ord(c) for c in text] if self.chars_per_token == 1 else None
        return Completion(text=text, finish_reason=finish, stop=stop, model=self.name,
                          usage=Usage(self.count_tokens(prompt), n), token_ids=ids,
                          logprobs=[-0.5] * n if params.logprobs else None)

    async def complete_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        return [await self.complete(p, params) for p in prompts]

    async def chat(self, messages: list[ChatMessage], params: SamplingParams) -> Completion:
        return await self.complete(self.render_chat(messages), params)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)

    def render_chat(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    async def aclose(self) -> None:
        return None


WEB: list[tuple[SearchHit, str]] = [
    (SearchHit("Mount Everest - facts", "https://mountains.example/everest",
               "Everest is Earth's highest mountain above sea level."),
     "Mount Everest is 8,849 metres high. It lies on the border of Nepal and China. "
     "The first confirmed ascent was in 1953 by Tenzing Norgay and Edmund Hillary."),
    (SearchHit("K2 - the savage mountain", "https://mountains.example/k2",
               "K2 is the second-highest mountain on Earth."),
     "K2 is 8,611 metres high. It lies on the border of Pakistan and China. "
     "It was first climbed in 1954 by Lino Lacedelli and Achille Compagnoni."),
    (SearchHit("Danube river", "https://rivers.example/danube",
               "The Danube flows through ten countries."),
     "The Danube is 2,850 kilometres long and flows into the Black Sea."),
]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@dataclass
class InMemoryTools:
    """A ToolRunner over ``WEB``. ``delay_s`` makes each call take that long (to see overlap);
    a query containing ``crash_word`` makes the runner raise, as a buggy runner would."""

    delay_s: float = 0.0
    crash_word: str | None = None
    specs: tuple[ToolSpec, ...] = TOOL_SPECS
    web: list[tuple[SearchHit, str]] = field(default_factory=lambda: list(WEB))

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if name == "search_urls":
            result = self._search(arguments["query"], int(arguments.get("top_k", 10)))
        elif name == "query_url":
            result = self._read(arguments["url"], arguments["goal"])
        else:
            result = ToolResult(f"unknown tool {name}", ok=False)
        result.meta.update(started=started, finished=time.perf_counter())
        return result

    def _search(self, query: str, top_k: int) -> ToolResult:
        if self.crash_word and self.crash_word in query:
            raise RuntimeError("index file vanished")
        terms = _words(query)
        scored = [(len(terms & _words(h.title + " " + h.snippet + " " + page)), h) for h, page in self.web]
        hits = [h for s, h in sorted(scored, key=lambda x: -x[0]) if s > 0][:top_k]
        return ToolResult(format_results(query, hits), meta={"hits": len(hits)})

    def _read(self, url: str, goal: str) -> ToolResult:
        page = next((p for h, p in self.web if h.url == url), None)
        if page is None:
            return ToolResult(f"Could not read {url}: no such page.", ok=False)
        terms = _words(goal)
        # Every sentence sharing a word with the goal, as the page has it: verbatim quotes.
        quotes = [s.strip() for s in page.split(". ") if terms & _words(s)]
        evidence = Evidence(
            rationale="The page bears on the goal." if quotes else "Nothing on the page bears on the goal.",
            evidence=quotes, summary=page[:120], dropped_quotes=0, method="extract", attempts=1,
            evidence_source="model" if quotes else "none",
        )
        return ToolResult(format_query_url_result(url, goal, evidence), meta={"snapshot_sha256": "0" * 64})

    async def aclose(self) -> None:
        return None


class GatedBackend(ScriptedBackend):
    """Scripted turns; the turn ``gate_at`` waits for ``gate`` (and notes a cancellation): a test
    sees a step streamed while the next model call is still running, or a call being cancelled."""

    def __init__(self, script: list[str], gate_at: int, **kw: Any) -> None:
        super().__init__(script, **kw)
        self.gate_at = gate_at
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def complete(self, prompt: str, params: SamplingParams) -> Completion:
        if len(self.requests) == self.gate_at:
            self.waiting.set()
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return await super().complete(prompt, params)
