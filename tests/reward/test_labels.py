"""Step labellers on hand-built trajectories whose search results come from the real local index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fathom.agent.trajectory import Step, ToolCall, Trajectory
from fathom.bench.labels import Agreement, cohen_kappa, compare, main, trajectory_from_dict
from fathom.core.config import Settings
from fathom.models.factory import build_backend
from fathom.reward.cache import RewardCache
from fathom.reward.labels import (
    CallView,
    EmbeddingLabeller,
    LlmLabeller,
    StepLabeller,
    build_labeller,
    decide_labels,
    labelled_calls,
    parse_labels,
)
from fathom.tools.search.base import format_results
from fathom.tools.search.local import LocalSearchBackend

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def search(small_corpus_dir: Path) -> LocalSearchBackend:
    return LocalSearchBackend(small_corpus_dir, BASE, snippet_chars=160)


def _search(backend: LocalSearchBackend, index: int, query: str) -> ToolCall:
    hits = backend.search_sync(query, top_k=5)
    return ToolCall(index=index, name="search_urls", arguments={"query": query, "top_k": 5}, raw="",
                    result=format_results(query, hits), ok=True)


def _read(index: int, url: str, goal: str, ok: bool = True) -> ToolCall:
    return ToolCall(index=index, name="query_url", arguments={"url": url, "goal": goal}, raw="",
                    result=f"URL: {url}\nGoal: {goal}\n\nSummary: ..." if ok else "Error (query_url): 404",
                    ok=ok)


def _traj(question: str, *turns: list[ToolCall]) -> Trajectory:
    steps = [Step(index=i, text="", think=None, tool_calls=calls, answer=None)
             for i, calls in enumerate(turns)]
    return Trajectory(question=question, prompt="", steps=steps)


@pytest.fixture(scope="module")
def lilu(search: LocalSearchBackend) -> Trajectory:
    first = _search(search, 0, "Lilu Akkadian demon spirit")
    urls = [line.split("](")[1].split(")")[0] for line in (first.result or "").splitlines() if "](" in line]
    goal = "What kind of being is Lilu in Akkadian mythology?"
    return _traj(
        "What kind of being is Lilu?",
        [first],
        [_search(search, 0, "Lilu Akkadian demon spirit mythology")],  # near-duplicate query
        [_read(0, urls[0], goal), _read(1, urls[0] + "#history", goal)],  # same canonical URL
        [_read(0, urls[1], "Which kind of being is Lilu in Akkadian myth?")],  # new page, same goal
        [_read(0, urls[2], goal)],  # verification beyond B_v = 1
        [_search(search, 0, "Olympic Games host city 1936")],  # new ground
        [_read(0, f"{BASE}/wiki/missing-page", "Where were the 1936 Olympics held?", ok=False),
         ToolCall(index=1, name=None, arguments={}, raw="{not json", error="bad JSON"),
         _read(2, urls[3], "Where were the 1936 Olympic Games held?")],
    )


async def test_embedding_labels_a_hand_built_trajectory(lilu: Trajectory) -> None:
    labeller = EmbeddingLabeller(Settings())
    assert isinstance(labeller, StepLabeller)
    result = await labeller.label_detailed(lilu.question, lilu)
    got = [(c.step, c.index, c.label) for c in result.labels]
    assert got == [
        (0, 0, "UNIQUE_SEARCH"),
        (1, 0, "REDUNDANT_SEARCH"),
        (2, 0, "EXPLORATION"),
        (2, 1, "REDUNDANT_QUERY"),  # canonical URL read before (fragment dropped)
        (3, 0, "VERIFICATION"),
        (4, 0, "REDUNDANT_QUERY"),
        (5, 0, "UNIQUE_SEARCH"),
        (6, 0, "REDUNDANT_QUERY"),  # failed read: by rule
        (6, 2, "EXPLORATION"),  # the malformed call (6, 1) gets no label
    ]
    assert result.sources.count("rule") == 1 and result.fallbacks == 0
    again = await labeller.label(lilu.question, lilu)
    assert again == result.labels  # deterministic


async def test_verifications_allowed_is_a_setting(lilu: Trajectory) -> None:
    none = await EmbeddingLabeller(Settings(reward={"verifications_allowed": 0})).label("q", lilu)
    two = await EmbeddingLabeller(Settings(reward={"verifications_allowed": 2})).label("q", lilu)
    assert [c.label for c in none][4:6] == ["REDUNDANT_QUERY", "REDUNDANT_QUERY"]
    assert [c.label for c in two][4:6] == ["VERIFICATION", "VERIFICATION"]


def _view(tool: str, text: str, urls: tuple[str, ...] = (), goal: str = "g",
          failed: bool = False) -> CallView:
    return CallView(0, 0, tool, text, goal, urls, failed, "")


def test_result_overlap_alone_makes_a_search_redundant() -> None:
    views = [_view("search_urls", "a", ("u1", "u2", "u3", "u4", "u5")),
             _view("search_urls", "b", ("u1", "u2", "u3", "u4", "u9")),  # 4/5 = 0.8 seen
             _view("search_urls", "c", ("u1", "u2", "u7", "u8", "u10"))]  # 2/5 seen
    orthogonal = np.eye(3, dtype=np.float32)  # no two queries alike: only URLs decide
    labels = [lab for lab, _ in decide_labels(views, orthogonal, 1)]
    assert labels == ["UNIQUE_SEARCH", "REDUNDANT_SEARCH", "UNIQUE_SEARCH"]


def test_parse_labels_one_per_call() -> None:
    views = [_view("search_urls", "a")] + [_view("query_url", u) for u in "uvw"]
    reply = "1: UNIQUE_SEARCH\n2. exploration\n**3**: REDUNDANT_SEARCH\n4: VERIFICATION\n4: EXPLORATION"
    # 3 names a search label for a read; 4 is given two labels: both unreadable.
    assert parse_labels(reply, views) == ["UNIQUE_SEARCH", "EXPLORATION", None, None]
    assert parse_labels("I think these calls are fine.", views) == [None] * 4
    assert parse_labels("[1] - REDUNDANT_SEARCH\nCall 2: REDUNDANT_QUERY", views)[:2] == [
        "REDUNDANT_SEARCH", "REDUNDANT_QUERY"]


def test_labelled_calls_and_build(lilu: Trajectory) -> None:
    views = labelled_calls(lilu)
    assert len(views) == 9 and views[0].urls and all(u.startswith(BASE) for u in views[0].urls)
    assert isinstance(build_labeller(Settings()), EmbeddingLabeller)


def test_cohen_kappa_hand_values() -> None:
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "a", "b", "b"]) == 1.0
    # observed 0.5; expected 0.5*0.5 + 0.5*0.5 = 0.5 -> kappa 0
    assert cohen_kappa(["a", "a", "b", "b"], ["a", "b", "a", "b"]) == pytest.approx(0.0)
    # observed 0.75; rater A: a=3,b=1; B: a=2,b=2; expected (3*2 + 1*2)/16 = 0.5 -> 0.5
    assert cohen_kappa(["a", "a", "a", "b"], ["a", "a", "b", "b"]) == pytest.approx(0.5)
    agreement = Agreement(embedding=["UNIQUE_SEARCH", "EXPLORATION"], llm=["UNIQUE_SEARCH", "VERIFICATION"])
    rows = agreement.per_label()
    assert agreement.observed == 0.5 and rows["UNIQUE_SEARCH"]["agreement"] == 1.0
    assert rows["EXPLORATION"] == {"embedding": 1, "llm": 0, "both": 0, "agreement": 0.0}


def test_trajectory_round_trips_through_jsonl(lilu: Trajectory) -> None:
    back = trajectory_from_dict(json.loads(json.dumps({"trajectory": lilu.to_dict()})))
    assert back.to_dict() == lilu.to_dict()


@pytest.mark.slow
async def test_llm_labeller_with_the_bundled_model(lilu: Trajectory, tmp_path: Path) -> None:
    """Constrained (the 135M model picks among each tool's labels) and free-form (it cannot keep the
    format: every call falls back to the embedding label, and the result says so)."""
    settings = Settings(judge={"max_new_tokens": 24})
    backend = build_backend("judge", settings)
    short = _traj(lilu.question, *[s.tool_calls for s in lilu.steps[:3]])
    cache = RewardCache(tmp_path / "labels.sqlite")
    guided = LlmLabeller(backend, settings, cache)
    result = await guided.label_detailed(short.question, short)
    assert len(result.labels) == 4 and set(result.sources) == {"llm"} and guided.model_calls == 4
    again = await guided.label_detailed(short.question, short)
    assert again.labels == result.labels and again.meta == {"cached": True} and guided.model_calls == 4
    free = LlmLabeller(backend, settings, None, constrained=False)
    loose = await free.label_detailed(short.question, short)
    emb = await EmbeddingLabeller(settings).label(short.question, short)
    for label, source, fallback in zip(loose.labels, loose.sources, emb, strict=True):
        assert source in ("llm", "fallback")
        if source == "fallback":
            assert label == fallback
    agreement = await compare([short], EmbeddingLabeller(settings), guided)
    assert agreement.calls == 4 and 0.0 <= agreement.observed <= 1.0


@pytest.mark.slow
def test_bench_cli_over_a_jsonl_file(
    lilu: Trajectory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = _traj(lilu.question, lilu.steps[0].tool_calls, lilu.steps[5].tool_calls)
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(short.to_dict()) + "\n")
    assert main(["--trajectories", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["trajectories"] == 1 and out["calls"] == 2 and set(out["per_label"]) >= {"UNIQUE_SEARCH"}
