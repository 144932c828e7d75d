"""A realistic trajectory: several turns, parallel tool calls, a malformed call, token ids with
log-probabilities (one of them -inf), unicode and a large page text."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fathom.agent.trajectory import Step, ToolCall, Trajectory
from fathom.tools.fetch.base import PageSnapshot

QUESTION = "Wer gewann 2019 den Nobelpreis für Chemie, und wofür? 🔬"
PROMPT = (
    "<|im_start|>system\nYou are a research assistant. Use search_urls and query_url.<|im_end|>\n"
    f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n<think>"
)
BIG_PAGE = ("Lithium-ion batteries — Li⁺ shuttles between electrodes. 锂离子电池。 " * 20_000)[:1_200_000]


def snapshot(url: str = "https://www.nobelprize.org/prizes/chemistry/2019/summary/") -> PageSnapshot:
    return PageSnapshot(
        sha256="ab" * 32,
        url=url,
        final_url=url.replace("/summary/", "/summary"),
        status=200,
        content_type="text/html",
        fetched_at=datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        fetcher="httpx",
        extractor_version="trafilatura-2.0/v1",
        size=48_213,
        encoding="utf-8",
        truncated=False,
    )


def steps() -> list[Step]:
    search = ToolCall(
        index=0,
        name="search_urls",
        arguments={"query": "Nobel Prize Chemistry 2019", "top_k": 5},
        raw='{"name": "search_urls", "arguments": {"query": "Nobel Prize Chemistry 2019", "top_k": 5}}',
        result="1. The Nobel Prize in Chemistry 2019 — nobelprize.org\n   John B. Goodenough, …",
        ok=True,
        elapsed_s=0.412,
        meta={"backend": "local", "hits": 5},
    )
    read = ToolCall(
        index=1,
        name="query_url",
        arguments={"url": snapshot().url, "goal": "who won and why"},
        raw='{"name": "query_url", "arguments": {"url": "…", "goal": "who won and why"}}',
        result=BIG_PAGE,
        ok=True,
        elapsed_s=2.5,
        snapshot_sha256="ab" * 32,
        meta={"snapshot": {"sha256": "ab" * 32}, "chars": len(BIG_PAGE), "nested": {"list": [1, 2.5, None]}},
    )
    broken = ToolCall(
        index=2,
        name=None,
        arguments={},
        raw='{"name": "query_url", "arguments": {"url": ',
        error="the tool call is not valid JSON: unexpected end of input",
    )
    first = Step(
        index=0,
        text="Ich suche zuerst.</think>\n<tool_call>…</tool_call>",
        think="Ich suche zuerst.",
        tool_calls=[search, read, broken],
        answer=None,
        token_ids=[151644, 77091, 198, 13, 0, 2**31 - 1],
        logprobs=[-0.0123456789012345, -1.5, -math.inf, -0.0, -7.25e-8, -30.000000000000004],
        prompt_tokens=812,
        completion_tokens=6,
        tool_response_tokens=3_400,
        finish_reason="stop",
        model_s=1.25,
        tools_s=2.9,
        overhead_s=0.0031,
        meta={"format_errors": ["invalid json"], "guided_phases": ["search"]},
    )
    second = Step(
        index=1,
        text="Goodenough, Whittingham und Yoshino.</think>\n\\boxed{John B. Goodenough, M. Stanley "
        "Whittingham, Akira Yoshino — Lithium-Ionen-Akkus}",
        think="Goodenough, Whittingham und Yoshino.",
        tool_calls=[],
        answer="John B. Goodenough, M. Stanley Whittingham, Akira Yoshino — Lithium-Ionen-Akkus",
        token_ids=list(range(1000, 1400)),
        logprobs=[-(i % 17) / 10 for i in range(400)],
        prompt_tokens=4_218,
        completion_tokens=400,
        finish_reason="stop",
        model_s=3.0,
        forced_final=True,
    )
    third = Step(  # a turn with no token record (API backend without logprobs)
        index=2, text="", think=None, tool_calls=[], answer=None, finish_reason="length"
    )
    return [first, second, third]


def trajectory() -> Trajectory:
    return Trajectory(
        question=QUESTION,
        prompt=PROMPT,
        steps=steps(),
        answer="John B. Goodenough, M. Stanley Whittingham, Akira Yoshino — Lithium-Ionen-Akkus",
        stop_reason="answered",
        total_tokens=4_618,
        model="fathom-search-4b",
        meta={"seed": 7, "guided": False, "timings": {"agent_s": 9.5}},
    )
