"""The search agent protocol of Fathom-Search-4B, as pure text functions (no I/O).

Read top to bottom against the paper (FATHOM.md, "The search agent protocol"):

1. ``build_prompt``: raw ChatML text. A system turn (who the agent is, the tool schemas as JSON,
   how to think, call tools and answer), the user question, then an assistant turn that is
   already inside a forced ``<think>``.
2. The model writes one turn until end of turn (``<|im_end|>``). ``parse_turn`` reads every
   ``<tool_call>`` block of it and the last ``\\boxed{}``; a malformed call becomes a
   ``ToolCall`` with ``error`` set, never an exception.
3. ``format_tool_responses``: all results of the turn go back in ONE user turn, each wrapped in
   ``<tool_response>``; then the assistant turn is reopened inside ``<think>``.
4. The loop ends on a turn without tool calls or after ``MAX_TURNS``; the whole trace must fit
   ``MAX_CONTEXT_TOKENS``. Reaching a limit ends the trace where it is. Only as an opt-in of
   ours (``AgentSettings.force_final_answer``) does the loop append ``final_answer_nudge`` and
   ask for one more turn.
5. The answer is the content of the last ``\\boxed{}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from fathom.agent.trajectory import Step, ToolCall
from fathom.tools.base import TOOL_SPECS, ToolSpec

# --- the numbers of the protocol -------------------------------------------------------------

MAX_TURNS = 64  # assistant turns before the loop must stop
MAX_CONTEXT_TOKENS = 40_960  # prompt + everything generated + every tool response
FINAL_ANSWER_TOKENS = 1_024  # with force_final_answer: kept in reserve so that answer fits
MIN_TURN_TOKENS = 256  # below this a normal turn is not worth starting: the budget is used up
MIN_RESPONSE_TOKENS = 64  # below this tool responses cannot be delivered at all
BUDGET_SLACK_TOKENS = 16  # counting pieces apart can differ from counting them joined
MAX_STRING_ARG_CHARS = 2_000  # a query, URL or goal longer than this is a runaway generation

# --- ChatML and the tags the model writes ----------------------------------------------------

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TURN = IM_END + "\n"  # appended after every generated assistant turn
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
BOXED_OPEN = "\\boxed{"
ASSISTANT_OPEN = f"{IM_START}assistant\n{THINK_OPEN}"  # every assistant turn starts thinking

# The model generates until the end of its turn: several calls per turn are allowed, so
# `</tool_call>` must NOT stop generation. A model that starts writing a tool response itself
# (or a new ChatML turn) is hallucinating the environment and is cut there.
STOP_STRINGS: tuple[str, ...] = (IM_END, RESPONSE_OPEN, IM_START)

Mode = Literal["search", "report"]
MODES: tuple[str, ...] = ("search", "report")


# --- 1. the prompt ---------------------------------------------------------------------------

_IDENTITY = (
    "You are Fathom, a research agent that finds information on the open web. You are "
    "persistent: when a search comes back empty or a page does not help, you rephrase, look "
    "from another angle and try other sources instead of giving up. You do not trust a single "
    "page: you confirm each important fact in more than one independent source before relying "
    "on it. You pay close attention to details such as names, dates, numbers, units and the "
    "exact wording of the question."
)

_HOW_TO_WORK = """# How to work

1. Start every turn by thinking inside <think> ... </think>: what you know so far, what is \
still missing, and what to do next.
2. To use a tool, write after your thinking one block per call, exactly in this form:
<tool_call>
{"name": "<tool name>", "arguments": {<the arguments as a JSON object>}}
</tool_call>
You may make several calls in one turn. They run together, and all their results come back \
in the next message, each inside <tool_response> ... </tool_response>.
3. Search first, then read the most promising pages with query_url, stating a precise goal."""

_ANSWER_RULE = {
    "search": (
        "4. When the evidence is solid, stop calling tools and write your final answer as "
        "\\boxed{your answer}. Keep it short: a name, a number, a date or a brief phrase."
    ),
    "report": (
        "4. Gather broad, well-sourced evidence that covers every part of the question; a "
        "separate writer will turn your research into a full report that cites the pages you "
        "read, so read the pages you rely on. When the evidence is complete, stop calling tools "
        "and write a brief answer as \\boxed{your answer}."
    ),
}


def tool_schemas_json(tools: Sequence[ToolSpec] = TOOL_SPECS) -> str:
    """One JSON schema per line, the way Qwen-style models expect to see their tools."""
    return "\n".join(json.dumps(spec.schema(), ensure_ascii=False) for spec in tools)


def system_prompt(tools: Sequence[ToolSpec] = TOOL_SPECS, mode: Mode = "search",
                  date: str | None = None) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown agent mode {mode!r}; expected one of {', '.join(MODES)}")
    parts = [_IDENTITY]
    if date:
        parts.append(f"Today's date is {date}.")
    parts.append(
        "# Tools\n\nYou can call these tools. Their signatures, as JSON schemas:\n"
        f"<tools>\n{tool_schemas_json(tools)}\n</tools>"
    )
    parts.append(_HOW_TO_WORK + "\n" + _ANSWER_RULE[mode])
    return "\n\n".join(parts)


def build_prompt(question: str, tools: Sequence[ToolSpec] = TOOL_SPECS, mode: Mode = "search",
                 date: str | None = None) -> str:
    """The initial context: system turn, user question, and an assistant turn opened in <think>."""
    return (
        f"{IM_START}system\n{system_prompt(tools, mode, date)}{END_OF_TURN}"
        f"{IM_START}user\n{question.strip()}{END_OF_TURN}"
        f"{ASSISTANT_OPEN}"
    )


# --- 2. reading a turn -----------------------------------------------------------------------


@dataclass
class ParsedTurn:
    think: str | None  # the reasoning before </think>
    tool_calls: list[ToolCall]  # every <tool_call> block, in order; malformed ones carry .error
    answer: str | None  # content of the last complete \boxed{}
    stray_text: str  # what is left outside the think and the tool-call blocks
    errors: list[str] = field(default_factory=list)  # turn-level format problems (not call errors)


_CALL_EXAMPLE = '<tool_call>\n{"name": "search_urls", "arguments": {"query": "..."}}\n</tool_call>'


def parse_turn(text: str, tools: Sequence[ToolSpec] = TOOL_SPECS) -> ParsedTurn:
    """Read one generated assistant turn (the text after the forced ``<think>``). Never raises."""
    errors: list[str] = []
    if THINK_CLOSE in text:
        think_text, _, _ = text.partition(THINK_CLOSE)
        think: str | None = think_text.strip()
    else:
        # A turn cut short, or a model that never closes its thinking: everything before the
        # first call counts as thinking, so the calls are still honoured.
        cut = text.find(CALL_OPEN)
        think = (text if cut < 0 else text[:cut]).strip() or None
        errors.append(f"the turn has no {THINK_CLOSE}")

    calls: list[ToolCall] = []
    outside: list[str] = []
    pos = 0
    while True:
        start = text.find(CALL_OPEN, pos)
        if start < 0:
            outside.append(text[pos:])
            break
        outside.append(text[pos:start])
        body_start = start + len(CALL_OPEN)
        end = text.find(CALL_CLOSE, body_start)
        next_open = text.find(CALL_OPEN, body_start)
        if end < 0 or (0 <= next_open < end):
            stop = next_open if next_open >= 0 else len(text)
            raw = text[body_start:stop].strip()
            calls.append(ToolCall(index=len(calls), name=None, arguments={}, raw=raw,
                                  error=f"the {CALL_OPEN} block is not closed with {CALL_CLOSE}"))
            pos = stop
            continue
        raw = text[body_start:end].strip()
        calls.append(parse_call(raw, len(calls), tools))
        pos = end + len(CALL_CLOSE)

    stray = "".join(outside)
    # without </think>, the text before the first call was taken as the thinking
    stray = stray.partition(THINK_CLOSE)[2] if THINK_CLOSE in stray else "".join(outside[1:])
    if CALL_CLOSE in "".join(outside):
        errors.append(f"stray {CALL_CLOSE} without an opening {CALL_OPEN}")
    if RESPONSE_OPEN in text or RESPONSE_CLOSE in text:
        errors.append("the model wrote a tool response itself; responses come from the tools")
    return ParsedTurn(think=think, tool_calls=calls, answer=extract_boxed(text),
                      stray_text=stray.strip(), errors=errors)


def parse_call(raw: str, index: int = 0, tools: Sequence[ToolSpec] = TOOL_SPECS) -> ToolCall:
    """Parse and validate the JSON inside one <tool_call> block. Errors go into ``.error``."""

    def bad(message: str, name: str | None = None, arguments: dict[str, Any] | None = None) -> ToolCall:
        return ToolCall(index=index, name=name, arguments=arguments or {}, raw=raw, error=message)

    if not raw:
        return bad(f"the tool call is empty; write it as {_CALL_EXAMPLE}")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        return bad(f"the tool call is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                   f"write it as {_CALL_EXAMPLE}")
    except (ValueError, RecursionError) as e:  # e.g. absurd nesting or integer size
        return bad(f"the tool call is not usable JSON ({type(e).__name__}); write it as {_CALL_EXAMPLE}")
    if not isinstance(obj, dict):
        return bad(f'the tool call must be a JSON object with "name" and "arguments", '
                   f"not a JSON {_json_type(obj)}")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return bad('the tool call has no "name" string')
    specs = {spec.name: spec for spec in tools}
    if name not in specs:
        return bad(f"unknown tool {name!r}; available tools: {', '.join(specs)}", name=None)
    extra_keys = sorted(set(obj) - {"name", "arguments"})
    if extra_keys:
        return bad(f'unexpected key(s) {", ".join(map(repr, extra_keys))} in the tool call; only '
                   f'"name" and "arguments" are allowed', name=name)
    if "arguments" not in obj:
        return bad(f'the call to {name} has no "arguments" object', name=name)
    arguments = obj["arguments"]
    if not isinstance(arguments, dict):
        return bad(f'"arguments" of {name} must be a JSON object, not a JSON {_json_type(arguments)}',
                   name=name)
    problem = check_arguments(specs[name], arguments)
    if problem:
        return bad(problem, name=name, arguments=arguments)
    return ToolCall(index=index, name=name, arguments=arguments, raw=raw)


def check_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> str | None:
    """The first thing wrong with ``arguments`` for ``spec``, as a message for the model."""
    properties: dict[str, Any] = spec.parameters.get("properties", {})
    extra = sorted(set(arguments) - set(properties))
    if extra:
        return (f"{spec.name} does not take {', '.join(map(repr, extra))}; "
                f"its arguments are {', '.join(map(repr, properties))}")
    missing = [k for k in spec.parameters.get("required", []) if k not in arguments]
    if missing:
        return f"{spec.name} needs {', '.join(map(repr, missing))}"
    for key, value in arguments.items():
        expected = properties[key].get("type")
        if expected == "string":
            if not isinstance(value, str):
                return f"{spec.name}: {key!r} must be a string, not a JSON {_json_type(value)}"
            if not value.strip():
                return f"{spec.name}: {key!r} must not be empty"
            if len(value) > MAX_STRING_ARG_CHARS:
                return (f"{spec.name}: {key!r} is too long ({len(value)} characters, "
                        f"at most {MAX_STRING_ARG_CHARS})")
        elif expected == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                return f"{spec.name}: {key!r} must be an integer, not a JSON {_json_type(value)}"
            problem = _out_of_bounds(value, properties[key])
            if problem:
                return f"{spec.name}: {key!r} must be {problem}, not {value}"
    if "url" in arguments:
        parts = urlsplit(arguments["url"].strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"{spec.name}: 'url' must be a full http or https address, not {arguments['url'][:200]!r}"
    return None


def _out_of_bounds(value: int, schema: dict[str, Any]) -> str | None:
    """The bounds ``value`` breaks, in words, from the schema's ``minimum``/``maximum``."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``, with nested and escaped braces handled.

    One pass with a stack of open braces, so adversarial text stays linear. "Last" is the
    one completed last: for ``\\boxed{\\boxed{a}}`` that is the outer box.
    """
    stack: list[tuple[int, bool]] = []  # (content start, opened by \boxed{)
    last: str | None = None
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if text.startswith(BOXED_OPEN, i):
            stack.append((i + len(BOXED_OPEN), True))
            i += len(BOXED_OPEN)
            continue
        if ch == "\\" and i + 1 < n and text[i + 1] in "{}":
            i += 2  # a literal \{ or \} is content, not structure
            continue
        if ch == "{":
            stack.append((i + 1, False))
        elif ch == "}" and stack:
            start, boxed = stack.pop()
            if boxed:
                last = text[start:i].strip()
        i += 1
    return last


# --- 3. writing text the model reads ---------------------------------------------------------

_PROTOCOL_TAGS = (CALL_OPEN, CALL_CLOSE, RESPONSE_OPEN, RESPONSE_CLOSE, THINK_OPEN, THINK_CLOSE,
                  IM_START, IM_END)


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """A well-formed call block, exactly as the system prompt asks the model to write it."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    if any(tag in body for tag in _PROTOCOL_TAGS):
        # "<" only occurs inside JSON strings, so escaping it keeps the JSON equal while a tag
        # in an argument can no longer close the block early.
        body = body.replace("<", "\\u003c")
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def format_turn(think: str, calls: Sequence[tuple[str, dict[str, Any]]] = (),
                answer: str | None = None) -> str:
    """A whole well-formed assistant turn (the text after the forced ``<think>``)."""
    text = f"\n{think.strip()}\n{THINK_CLOSE}\n\n"
    text += "\n".join(format_tool_call(name, args) for name, args in calls)
    if answer is not None:
        text += ("\n\n" if calls else "") + f"{BOXED_OPEN}{answer}}}"
    return text


def error_response(message: str) -> str:
    """The tool response a model sees for a call that could not run."""
    return f"Error: {message}"


def call_response(call: ToolCall) -> str:
    """What the model sees for one call: its result, or its error."""
    if call.result is not None:
        return call.result
    return error_response(call.error or "the call produced no result")


def format_tool_responses(calls: Sequence[ToolCall]) -> str:
    """All results of one turn as ONE user turn, then the assistant turn reopened in <think>.

    Goes right after ``END_OF_TURN`` of the assistant turn that made the calls.
    """
    blocks = "\n".join(f"{RESPONSE_OPEN}\n{call_response(c)}\n{RESPONSE_CLOSE}" for c in calls)
    return f"{IM_START}user\n{blocks}{END_OF_TURN}{ASSISTANT_OPEN}"


_NUDGE = (
    "You cannot call any more tools. Using only what you have found so far, give your final "
    "answer now, as \\boxed{your answer}."
)


def final_answer_nudge() -> str:
    """The user turn appended, with ``force_final_answer`` on, when a limit stops the loop."""
    return f"{IM_START}user\n{_NUDGE}{END_OF_TURN}{ASSISTANT_OPEN}"


TRUNCATION_NOTE = "\n[... response cut to fit the context budget]"


def truncate_response(text: str, max_chars: int) -> str:
    """Cut a tool response to ``max_chars`` (note included) so the trace fits its budget."""
    if len(text) <= max_chars:
        return text
    keep = max(0, max_chars - len(TRUNCATION_NOTE))
    return text[:keep].rstrip() + TRUNCATION_NOTE


def rebuild_context(prompt: str, steps: Sequence[Step]) -> str:
    """The exact context after ``steps``: what the model saw and wrote, in order.

    A forced final turn was preceded by the nudge; a step's tool responses were delivered when
    its calls carry results (calls cut by the budget have none).
    """
    context = prompt
    for step in steps:
        if step.forced_final:
            context += final_answer_nudge()
        context += step.text + END_OF_TURN
        delivered = [c for c in step.tool_calls if c.result is not None]
        if delivered and not step.forced_final:
            context += format_tool_responses(delivered)
    return context


# --- 4. the budget ---------------------------------------------------------------------------


def fits(prompt_tokens: int, new_tokens: int, budget: int = MAX_CONTEXT_TOKENS) -> bool:
    return prompt_tokens + new_tokens <= budget


def turn_allowance(context_tokens: int, max_new_tokens: int, reserve: int,
                   budget: int = MAX_CONTEXT_TOKENS) -> int:
    """New tokens a normal turn may write while leaving ``reserve`` for a forced final answer."""
    return max(0, min(max_new_tokens, budget - context_tokens - reserve))


def end_reserve(end_tokens: int) -> int:
    """Tokens kept back so that the end-of-turn after a turn cut at its allowance still fits."""
    return end_tokens + BUDGET_SLACK_TOKENS


def final_reserve(nudge_tokens: int, end_tokens: int, final_answer_tokens: int = FINAL_ANSWER_TOKENS) -> int:
    """Tokens kept back so that a final-answer turn (nudge + answer + end) always fits."""
    return nudge_tokens + final_answer_tokens + end_tokens + end_reserve(end_tokens)
