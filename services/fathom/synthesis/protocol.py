"""The synthesizer protocol (Fathom-Synthesizer-4B), readable top to bottom. Pure: no I/O.

Input: the question plus the search trace reformatted (system block removed, roles as
USER/ASSISTANT, think tags removed, tool responses marked as search results) and the list of
tool calls made. Output: ``<think>PLAN</think>REPORT``. The citation check lives in
:mod:`fathom.synthesis.citations` and the report record in :mod:`fathom.synthesis.report`; both
are re-exported here so the whole protocol can be imported from one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fathom.agent.trajectory import ToolCall, Trajectory
from fathom.synthesis.citations import CitationCheck, check_citations, normalise_url, url_key
from fathom.synthesis.report import Report, ReportSection

__all__ = [
    "BODY_SECTION_PREFIX",
    "SOURCES_HEADING",
    "SYNTHESIZER_SYSTEM_PROMPT",
    "CitationCheck",
    "Report",
    "ReportSection",
    "build_prompt",
    "check_citations",
    "citable_urls",
    "find_urls",
    "format_call",
    "normalise_url",
    "parse_output",
    "reformat_trace",
    "url_key",
]

# Report layout headings. The guided writer prefills exactly these.
TITLE_PREFIX = "# "
EXEC_SUMMARY_HEADING = "## Executive Summary"
BODY_SECTION_PREFIX = "## S"  # "## S1. <title>", "## S2. <title>", ...
RECOMMENDATIONS_HEADING = "## Recommendations"
CONCLUSION_HEADING = "## Conclusion"
SOURCES_HEADING = "## Sources used"

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TURN_STOPS: tuple[str, ...] = (IM_END, "<|endoftext|>")

# Anything URL-shaped. Parentheses are allowed inside (Wikipedia titles use them); an
# unbalanced closing one is trimmed afterwards, which also handles markdown links "(url)".
_URL_RE = re.compile(r"https?://[^\s<>\"'\[\]{}|\\^`]+")

SYNTHESIZER_SYSTEM_PROMPT = """\
You are a research analyst who turns the record of a web research session into a long, \
well-organised report. You are given a question, the trace of the session (the researcher's \
reasoning, the tool calls it made and the search results it saw) and the list of those tool \
calls. Use only the evidence in the trace.

First think inside <think> and </think> and write a PLAN in three parts:
1. Sub-questions: break the question into the sub-questions the report has to answer.
2. Evidence map: a markdown table with the columns | Section | Item | Content | Confidence | \
that assigns the evidence in the trace to report sections. Cover most of the URLs in the trace; \
confidence is high, medium or low.
3. Insight strategies: 4 to 6 ways to go beyond restating facts, such as comparisons, trends, \
causes, trade-offs, contradictions between sources, gaps and implications.

After </think>, write the REPORT in markdown with this layout:
# <a title for the report>
## Executive Summary
5 to 10 bullet points with the key findings.
## S1. <section title>
... one section per sub-question, numbered S1, S2, ..., Sn ...
## Recommendations
## Conclusion
3 to 6 sentences.
## Sources used
Every URL you cited, once each, one per line.

Rules:
- Put the full URL of the supporting source in square brackets right after each sentence that \
uses evidence, for example: "The bridge opened in 1932. [https://example.org/bridge-history]".
- Cite only the URLs listed under URLS YOU MAY CITE (the pages that were read), copied exactly. \
Never invent, shorten or guess a URL, and never cite a page that was only listed in search results \
or that could not be fetched.
- Whenever three or more related numbers come up, put them in a markdown table.
- Be thorough: aim for 2,000 words or more. Write in the language of the question."""


def find_urls(text: str) -> list[str]:
    """Every URL in ``text``, normalised, in order of first occurrence (duplicates kept)."""
    out = []
    for m in _URL_RE.finditer(text):
        u = normalise_url(m.group(0))
        if len(u) > len("https://") and "." in u.split("//", 1)[1]:
            out.append(u)
    return out


def citable_urls(traj: Trajectory) -> set[str]:
    """The URLs a report may cite: the pages the research read successfully.

    A citation tells the reader "this page says so", so only a page whose fetch succeeded and
    whose evidence reached the trace qualifies (its snapshot is kept, so the claim can be
    audited). Not citable: the URL of a failed read (a 404, a refused or invented address), URLs
    inside error texts or page evidence, URLs only the model wrote (prompt, reasoning), and URLs
    shown only in search results: a snippet is the search engine's words about a page nobody read,
    possibly stale. The original let any URL of the trace be cited; this narrows that on purpose.
    """
    urls: set[str] = set()
    for call in traj.tool_calls:
        if call.name != "query_url" or not call.ok or not call.result:
            continue
        arg = call.arguments.get("url")
        if isinstance(arg, str) and arg.strip().startswith(("http://", "https://")):
            urls.add(normalise_url(arg))
    return urls


def format_call(call: ToolCall) -> str:
    """One tool call as a compact line: ``search_urls(query="...", top_k=5)``."""
    if call.name is None:
        return f"unparsable call: {call.raw.strip()[:200]!r}"
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call.arguments.items())
    return f"{call.name}({args})"


_THINK_TAG_RE = re.compile(r"</?think>")
_CHATML_RE = re.compile(r"<\|im_(?:start|end)\|>(?:user|assistant|system)?|<\|endoftext\|>")
_TOOL_CALL_BLOCK_RE = re.compile(r"<tool_call>.*?</tool_call>", re.DOTALL)
_TOOL_RESPONSE_RE = re.compile(r"</?tool_response>")


_SHORTENED_RESULT = "[search result shortened to fit the context]"


def _clip(text: str, limit: int | None, note: str) -> str:
    if limit is None or len(text) <= limit:
        return text
    if limit <= 0:
        return note
    return text[:limit].rstrip() + f" ... {note}"


def _assistant_text(text: str, call_numbers: list[int], calls: list[ToolCall]) -> str:
    """Think tags dropped (their content kept), tool-call blocks replaced by a numbered line."""
    it = iter(zip(call_numbers, calls, strict=False))

    def repl(_: re.Match[str]) -> str:
        nxt = next(it, None)
        if nxt is None:
            return ""
        n, call = nxt
        return f"[tool call {n}: {format_call(call)}]"

    out = _TOOL_CALL_BLOCK_RE.sub(repl, text)
    out = _THINK_TAG_RE.sub("", out)
    out = _CHATML_RE.sub("", out)
    out = _TOOL_RESPONSE_RE.sub("", out)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


def reformat_trace(
    traj: Trajectory,
    *,
    response_limits: Mapping[int, int] | None = None,
    reasoning_limits: Mapping[int, int] | None = None,
) -> str:
    """The trace as the synthesizer reads it, followed by the list of tool calls made.

    ``response_limits`` maps a tool call number (1-based, over the whole trace) to the most
    characters of its response to keep (0 drops the response); ``reasoning_limits`` does the same
    for the assistant text of a step (by step index). The budget fitter uses them; the list of
    calls is always kept whole.
    """
    response_limits = response_limits or {}
    reasoning_limits = reasoning_limits or {}
    parts = [f"USER: {traj.question.strip()}"]
    all_calls: list[tuple[int, ToolCall]] = []
    n = 0
    for step in traj.steps:
        numbers = list(range(n + 1, n + 1 + len(step.tool_calls)))
        n += len(step.tool_calls)
        all_calls.extend(zip(numbers, step.tool_calls, strict=True))
        said = _assistant_text(step.text, numbers, step.tool_calls)
        said = _clip(said, reasoning_limits.get(step.index), "[reasoning shortened to fit the context]")
        if said:
            parts.append(f"ASSISTANT: {said}")
        if not step.tool_calls:
            continue
        blocks = []
        for num, call in zip(numbers, step.tool_calls, strict=True):
            body = call.result if call.result is not None else (call.error or "(no response)")
            body = _clip(body.strip(), response_limits.get(num), _SHORTENED_RESULT)
            blocks.append(
                f"[SEARCH RESULT {num} for {format_call(call)}]\n{body}\n[END OF SEARCH RESULT {num}]"
            )
        parts.append("USER: " + "\n\n".join(blocks))
    if traj.answer:
        parts.append(f"FINAL ANSWER OF THE RESEARCHER: {traj.answer.strip()}")
    listing = "\n".join(f"{num}. {format_call(call)}" for num, call in all_calls) or "(none)"
    return "\n\n".join(parts) + f"\n\nTOOL CALLS MADE ({len(all_calls)}):\n{listing}"


def build_prompt(
    question: str, trace_text: str, allowed_urls: Iterable[str], *, open_think: bool = True
) -> str:
    """Raw ChatML text for a completions endpoint: system, user, then the assistant turn opened
    inside ``<think>`` so the model starts with its plan."""
    urls = "\n".join(sorted(allowed_urls)) or "(none)"
    user = (
        f"QUESTION:\n{question.strip()}\n\nSEARCH TRACE:\n{trace_text}\n\n"
        f"URLS YOU MAY CITE:\n{urls}\n\n"
        "Write the plan inside <think></think>, then the full report."
    )
    head = (
        f"{IM_START}system\n{SYNTHESIZER_SYSTEM_PROMPT}{IM_END}\n"
        f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n"
    )
    return head + (THINK_OPEN + "\n" if open_think else "")


def build_messages(question: str, trace_text: str, allowed_urls: Iterable[str]) -> list[dict[str, Any]]:
    """The same content as chat messages, for chat-only endpoints."""
    prompt = build_prompt(question, trace_text, allowed_urls, open_think=False)
    user = prompt.split(f"{IM_START}user\n", 1)[1].split(IM_END, 1)[0]
    return [{"role": "system", "content": SYNTHESIZER_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_output(text: str) -> tuple[str, str]:
    """Split ``<think>PLAN</think>REPORT`` into (plan, report markdown).

    The opening tag may be missing (the prompt already opened it). Without a closing tag the
    output is treated as a report with no plan, unless it started with ``<think>`` — then it is
    a plan that never reached its report.
    """
    body = _CHATML_RE.sub("", text).strip()
    if THINK_CLOSE in body:
        plan, _, report = body.partition(THINK_CLOSE)
        plan = plan.replace(THINK_OPEN, "", 1).strip()
        # a stray second think block in the report is not report text
        report = re.sub(r"<think>.*?(</think>|$)", "", report, flags=re.DOTALL)
        return plan, report.strip()
    if body.startswith(THINK_OPEN):
        return body[len(THINK_OPEN):].strip(), ""
    return "", body
