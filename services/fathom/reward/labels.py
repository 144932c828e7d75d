"""Step labels for the steerable reward (FATHOM.md, "The steerable step-level reward").

Every tool call of a trajectory gets one label:
- ``search_urls`` -> UNIQUE_SEARCH (new ground) or REDUNDANT_SEARCH (near-duplicate query or results);
- ``query_url`` -> EXPLORATION (first read of a new page), VERIFICATION (a new page read for a goal
  already pursued: cross-checking, allowed B_v times), REDUNDANT_QUERY (a page read again, or
  verification beyond B_v).

Which calls are labelled: every call whose name is ``search_urls`` or ``query_url``. A call whose
name could not be parsed (or names another tool) is malformed and gets no label. A call with a
known name that did not succeed (bad arguments, the tool failed, or it was not run because a limit
was reached) is labelled with its tool's redundant label, REDUNDANT_SEARCH or REDUNDANT_QUERY, by
rule in both labellers: it brought no information, and counting it as new ground would pay a policy
for spraying broken calls. Failed calls are not remembered as earlier searches or reads either, so
a successful retry of a failed read is still an EXPLORATION.

Two labellers behind one seam (``StepLabeller``):
- ``EmbeddingLabeller``: deterministic, no API. all-MiniLM-L6-v2 cosine similarity of queries and
  goals, overlap of result URLs, canonical-URL novelty. Thresholds are the module constants below.
- ``LlmLabeller``: the paper's; the judge model role reads the trajectory and labels every call. A
  call whose label cannot be read from its reply falls back to the embedding labeller's label, and
  ``LabelResult.sources`` says so ("fallback").
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from fathom.agent.trajectory import ToolCall, Trajectory
from fathom.core.config import Settings, is_weak_model
from fathom.core.logging import get_logger
from fathom.models.base import ChatMessage, ModelBackend, SamplingParams
from fathom.reward.cache import RewardCache, cache_key
from fathom.reward.formulas import LabelledCall, StepLabel
from fathom.tools.fetch.canonical import canonical_url
from fathom.tools.search.base import parse_results

log = get_logger(__name__)

SEARCH_TOOL = "search_urls"
READ_TOOL = "query_url"
SEARCH_LABELS: tuple[StepLabel, ...] = ("UNIQUE_SEARCH", "REDUNDANT_SEARCH")
READ_LABELS: tuple[StepLabel, ...] = ("EXPLORATION", "VERIFICATION", "REDUNDANT_QUERY")
LABELS_OF: dict[str, tuple[StepLabel, ...]] = {SEARCH_TOOL: SEARCH_LABELS, READ_TOOL: READ_LABELS}

# Thresholds of the embedding labeller (cosine similarity of unit-normalised all-MiniLM-L6-v2 vectors).
# Paraphrases of one query ("Eiffel Tower designer" / "who designed the Eiffel Tower") score about
# 0.85-0.95 with this model, related queries about different facts of one topic 0.5-0.75: a search is
# a near-duplicate at or above QUERY_SIMILARITY.
QUERY_SIMILARITY = 0.85
# A search whose results were already shown (at least this share of its result URLs appeared in
# earlier searches) adds no new leads, whatever its wording.
URL_OVERLAP = 0.8
# A page read for a goal this close to an earlier read's goal checks the same finding on another page.
GOAL_SIMILARITY = 0.8

Source = Literal["embedding", "llm", "fallback", "rule"]


@dataclass(frozen=True)
class CallView:
    """What a labeller needs of one labelled call, in trajectory order."""

    step: int
    index: int
    tool: str  # SEARCH_TOOL or READ_TOOL
    text: str  # the query (searches) or the canonical URL (reads)
    goal: str  # reads: the goal; searches: ""
    urls: tuple[str, ...]  # searches: canonical result URLs in rank order
    failed: bool
    excerpt: str  # a short view of the result, for the LLM labeller's prompt


@dataclass
class LabelResult:
    """Labels plus where each came from (``sources`` parallel to ``labels``)."""

    labels: list[LabelledCall]
    sources: list[Source]
    labeller: str
    raw: str = ""  # the model's reply (LLM labeller)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fallbacks(self) -> int:
        return sum(s == "fallback" for s in self.sources)


def _failed(call: ToolCall) -> bool:
    return call.error is not None or not call.ok


def _excerpt(call: ToolCall, limit: int = 360) -> str:
    if call.error is not None:
        return f"FAILED: {call.error}"[:limit]
    text = (call.result or "").strip()
    if call.name == SEARCH_TOOL:
        hits = parse_results(text)
        return "; ".join(f"{t} <{u}>" for t, u in hits[:5]) or text[:limit]
    return " ".join(text.split())[:limit]


def _labelled(views: Sequence[CallView], labels: Sequence[StepLabel]) -> list[LabelledCall]:
    return [LabelledCall(step=v.step, index=v.index, label=lab) for v, lab in zip(views, labels, strict=True)]


def labelled_calls(traj: Trajectory) -> list[CallView]:
    """The calls that get a label (name search_urls / query_url), as ``CallView`` in order."""
    views: list[CallView] = []
    for step in traj.steps:
        for call in step.tool_calls:
            if call.name not in LABELS_OF:
                continue
            args = call.arguments or {}
            failed = _failed(call)
            if call.name == SEARCH_TOOL:
                text, goal = str(args.get("query", "")).strip(), ""
                urls = () if failed else tuple(canonical_url(u) for _, u in parse_results(call.result or ""))
            else:
                text, goal = canonical_url(str(args.get("url", ""))), str(args.get("goal", "")).strip()
                urls = ()
            view = CallView(step.index, call.index, call.name, text, goal, urls, failed, _excerpt(call))
            views.append(view)
    return views


@runtime_checkable
class StepLabeller(Protocol):
    """Labels every labelled call of a trajectory (one ``LabelledCall`` each, in order)."""

    name: str

    async def label(self, question: str, traj: Trajectory) -> list[LabelledCall]: ...


# -- the embedding labeller ---------------------------------------------------------------------

_encoder: Any = None
_encoder_lock = threading.Lock()


def _shared_encoder() -> Any:
    """all-MiniLM-L6-v2 from the shipped package, loaded once per process (it takes seconds)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            from fathom.corpus.dense import load_encoder

            _encoder = load_encoder("cpu")
        return _encoder


def _rule_label(view: CallView) -> StepLabel:
    return "REDUNDANT_SEARCH" if view.tool == SEARCH_TOOL else "REDUNDANT_QUERY"


def _max_similarity(vec: np.ndarray, earlier: list[np.ndarray]) -> float:
    return max((float(vec @ e) for e in earlier), default=0.0)


def decide_labels(
    views: Sequence[CallView],
    vectors: np.ndarray,
    verifications_allowed: int,
    *,
    query_similarity: float = QUERY_SIMILARITY,
    url_overlap: float = URL_OVERLAP,
    goal_similarity: float = GOAL_SIMILARITY,
) -> list[tuple[StepLabel, Source]]:
    """The embedding labeller's rules, given one unit vector per call (query or goal).

    Pure: the encoder is the only model involved, and it runs before this.
    """
    seen_queries: list[np.ndarray] = []
    seen_urls: set[str] = set()
    read_urls: set[str] = set()
    read_goals: list[np.ndarray] = []
    verifications = 0
    out: list[tuple[StepLabel, Source]] = []
    for view, vec in zip(views, vectors, strict=True):
        if view.failed:
            out.append((_rule_label(view), "rule"))
            continue
        if view.tool == SEARCH_TOOL:
            overlap = sum(u in seen_urls for u in view.urls) / len(view.urls) if view.urls else 0.0
            similar = _max_similarity(vec, seen_queries) >= query_similarity
            label: StepLabel = "REDUNDANT_SEARCH" if similar or overlap >= url_overlap else "UNIQUE_SEARCH"
            seen_queries.append(vec)
            seen_urls.update(view.urls)
        elif view.text in read_urls:
            label = "REDUNDANT_QUERY"
        else:
            if _max_similarity(vec, read_goals) >= goal_similarity:
                label = "VERIFICATION" if verifications < verifications_allowed else "REDUNDANT_QUERY"
                verifications += label == "VERIFICATION"
            else:
                label = "EXPLORATION"
            read_urls.add(view.text)
            read_goals.append(vec)
        out.append((label, "embedding"))
    return out


class EmbeddingLabeller:
    """Deterministic labels from query/goal similarity, result-URL overlap and URL novelty."""

    def __init__(
        self,
        settings: Settings,
        *,
        query_similarity: float = QUERY_SIMILARITY,
        url_overlap: float = URL_OVERLAP,
        goal_similarity: float = GOAL_SIMILARITY,
    ) -> None:
        self.verifications_allowed = settings.reward.verifications_allowed
        self.query_similarity = query_similarity
        self.url_overlap = url_overlap
        self.goal_similarity = goal_similarity
        self.name = "embedding:all-MiniLM-L6-v2"

    def _vectors(self, views: Sequence[CallView]) -> np.ndarray:
        if not views:
            return np.zeros((0, 1), dtype=np.float32)
        texts = [v.text if v.tool == SEARCH_TOOL else v.goal for v in views]
        vecs = _shared_encoder().encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def label_views(self, views: Sequence[CallView]) -> LabelResult:
        decided = decide_labels(
            views, self._vectors(views), self.verifications_allowed,
            query_similarity=self.query_similarity, url_overlap=self.url_overlap,
            goal_similarity=self.goal_similarity,
        )
        labels = _labelled(views, [lab for lab, _ in decided])
        return LabelResult(labels, [src for _, src in decided], self.name)

    async def label_detailed(self, question: str, traj: Trajectory) -> LabelResult:
        return await asyncio.to_thread(self.label_views, labelled_calls(traj))

    async def label(self, question: str, traj: Trajectory) -> list[LabelledCall]:
        return (await self.label_detailed(question, traj)).labels


# -- the LLM labeller ---------------------------------------------------------------------------

LABEL_KIND = "labels"
LABEL_PROMPT_VERSION = "v1"

_LABELLER_SYSTEM = (
    "You review the tool calls a web research agent made while answering a question, and give each "
    "call one label.\n"
    "For a search_urls call:\n"
    "- UNIQUE_SEARCH: the query looks for entities or facts no earlier query looked for.\n"
    "- REDUNDANT_SEARCH: the query repeats or barely rephrases an earlier query, or its results are "
    "mostly pages earlier searches already returned.\n"
    "For a query_url call:\n"
    "- EXPLORATION: the first read of a page, looking for something not yet looked for.\n"
    "- VERIFICATION: a new page read to cross-check a finding an earlier read was after.\n"
    "- REDUNDANT_QUERY: a page that was read before, or yet another check of an already checked finding.\n"
    "Answer with one line per call, in order, as `<call number>: <LABEL>`, and nothing else."
)


def _describe(n: int, view: CallView) -> str:
    if view.tool == SEARCH_TOOL:
        head = f"[{n}] search_urls query={view.text!r}"
    else:
        head = f"[{n}] query_url url={view.text} goal={view.goal!r}"
    return f"{head}\n    result: {view.excerpt}"


_LINE_RE = re.compile(
    r"^[\s*\-#]*(?:call\s*)?\[?(\d+)\]?\s*[:.)\-=]\s*\**\s*([A-Za-z_]+)\s*\**\s*$", re.I | re.M
)


def parse_labels(text: str, views: Sequence[CallView]) -> list[StepLabel | None]:
    """One label per call from ``n: LABEL`` lines; None where the reply gives no valid label.

    A label that does not fit the call's tool, a number given two different labels, or a missing
    line leaves that call unlabelled (the caller falls back); the other calls keep theirs.
    """
    found: dict[int, set[str]] = {}
    for m in _LINE_RE.finditer(text):
        found.setdefault(int(m[1]), set()).add(m[2].upper())
    out: list[StepLabel | None] = []
    for n, view in enumerate(views, 1):
        given = found.get(n, set())
        label = next(iter(given)) if len(given) == 1 else None
        out.append(label if label in LABELS_OF[view.tool] else None)  # type: ignore[misc]
    return out


class LlmLabeller:
    """The paper's labeller: the judge model role labels every call, seeing the trajectory so far.

    A capable model labels all calls in one reply (parsed by ``parse_labels``). The bundled 135M
    model cannot keep that format, so for it (``constrained``) each call is one constrained choice
    among its tool's labels, prompted with the calls up to and including it. Either way a call left
    without a readable label takes the embedding labeller's label (source "fallback"), and failed
    calls are labelled by rule (source "rule"), as the embedding labeller does.
    """

    def __init__(
        self,
        backend: ModelBackend,
        settings: Settings,
        cache: RewardCache | None = None,
        *,
        fallback: EmbeddingLabeller | None = None,
        constrained: bool | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.cache = cache
        self.fallback = fallback or EmbeddingLabeller(settings)
        self.model = settings.judge.model
        self.constrained = is_weak_model(settings.judge) if constrained is None else constrained
        self.name = f"llm:{self.model}@{LABEL_PROMPT_VERSION}"
        self.model_calls = 0

    def messages(self, question: str, views: Sequence[CallView], ask: str) -> list[ChatMessage]:
        calls = "\n".join(_describe(n, v) for n, v in enumerate(views, 1))
        user = f"Question: {question.strip()}\n\nTool calls so far:\n{calls}\n\n{ask}"
        return [ChatMessage("system", _LABELLER_SYSTEM), ChatMessage("user", user)]

    def _params(self, **overrides: Any) -> SamplingParams:
        base = SamplingParams(max_new_tokens=self.settings.judge.max_new_tokens, temperature=0.0,
                              top_p=1.0, repetition_penalty=1.0)
        return replace(base, **overrides)

    async def _ask_all(self, question: str, views: Sequence[CallView]) -> tuple[list[StepLabel | None], str]:
        self.model_calls += 1
        ask = f"Label all {len(views)} calls, one line each."
        reply = await self.backend.chat(self.messages(question, views, ask), self._params())
        return parse_labels(reply.text, views), reply.text

    async def _ask_each(self, question: str, views: Sequence[CallView]) -> tuple[list[StepLabel | None], str]:
        labels: list[StepLabel | None] = []
        for n, view in enumerate(views, 1):
            if view.failed:
                labels.append(None)  # labelled by rule below; no need to ask
                continue
            self.model_calls += 1
            messages = self.messages(question, views[:n], f"Label call {n}.")
            prompt = self.backend.render_chat(messages) + f"{n}: "
            params = self._params(max_new_tokens=16, choices=LABELS_OF[view.tool])
            reply = await self.backend.complete(prompt, params)
            text = reply.text.strip()
            labels.append(text if text in LABELS_OF[view.tool] else None)  # type: ignore[arg-type]
        return labels, "\n".join(f"{n}: {lab}" for n, lab in enumerate(labels, 1))

    def _key(self, question: str, views: Sequence[CallView]) -> str:
        calls = [[v.tool, v.text, v.goal, list(v.urls), v.failed, v.excerpt] for v in views]
        return cache_key(question.strip(), calls, self.model, LABEL_PROMPT_VERSION, self.constrained,
                         self.settings.reward.verifications_allowed)

    async def label_detailed(self, question: str, traj: Trajectory) -> LabelResult:
        views = labelled_calls(traj)
        key = self._key(question, views)
        hit = self.cache.get(LABEL_KIND, key) if self.cache is not None else None
        if hit is not None and len(hit["labels"]) == len(views):
            labels = _labelled(views, hit["labels"])
            return LabelResult(labels, hit["sources"], self.name, hit.get("raw", ""), {"cached": True})
        asked: list[StepLabel | None] = [None] * len(views)
        raw = ""
        if any(not v.failed for v in views):
            ask = self._ask_each if self.constrained else self._ask_all
            asked, raw = await ask(question, views)
        backup = await asyncio.to_thread(self.fallback.label_views, views)
        chosen: list[StepLabel] = []
        sources: list[Source] = []
        for view, mine, theirs in zip(views, asked, backup.labels, strict=True):
            if view.failed:
                chosen.append(_rule_label(view))
                sources.append("rule")
            elif mine is None:
                chosen.append(theirs.label)
                sources.append("fallback")
            else:
                chosen.append(mine)
                sources.append("llm")
        if sources.count("fallback"):
            log.info("labeller fell back", calls=len(views), fallbacks=sources.count("fallback"),
                     model=self.model)
        if self.cache is not None:
            self.cache.put(LABEL_KIND, key, {"labels": chosen, "sources": sources, "raw": raw})
        return LabelResult(_labelled(views, chosen), sources, self.name, raw)

    async def label(self, question: str, traj: Trajectory) -> list[LabelledCall]:
        return (await self.label_detailed(question, traj)).labels


def build_labeller(settings: Settings, backend: ModelBackend | None = None) -> StepLabeller:
    """The labeller ``settings.reward.labeller`` names; the LLM one uses the judge model role."""
    if settings.reward.labeller == "embedding":
        return EmbeddingLabeller(settings)
    if backend is None:
        from fathom.models.factory import build_backend

        backend = build_backend("judge", settings)
    cache = RewardCache.for_settings(settings) if settings.reward.cache else None
    return LlmLabeller(backend, settings, cache)
