"""The seam between the agent and its tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments

    def schema(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolResult:
    text: str  # what the model sees inside <tool_response>
    ok: bool = True  # False: the text is an error message for the model
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"snapshot_sha256": ..., "hits": n}


# The one limit on search_urls' top_k: the schema shows it to the model, the agent's validator
# reads it from the schema, the toolbox refuses anything outside it. The default is the original's.
TOP_K_DEFAULT, TOP_K_MIN, TOP_K_MAX = 10, 1, 20

SEARCH_URLS = ToolSpec(
    name="search_urls",
    description="Search the web. Returns the top results, each with title, URL and a snippet.",
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "The search query."},
            "top_k": {"type": "integer", "description": "How many results to return.",
                      "default": TOP_K_DEFAULT, "minimum": TOP_K_MIN, "maximum": TOP_K_MAX},
        },
        "required": ["query"],
    },
)

QUERY_URL = ToolSpec(
    name="query_url",
    description=(
        "Read one web page and pull out the evidence it holds for a goal. Returns a rationale, "
        "verbatim evidence quotes and a summary."
    ),
    parameters={
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": "The page to read (http or https)."},
            "goal": {"type": "string", "description": "What to look for on the page."},
        },
        "required": ["url", "goal"],
    },
)

TOOL_SPECS: tuple[ToolSpec, ...] = (SEARCH_URLS, QUERY_URL)


@runtime_checkable
class ToolRunner(Protocol):
    """Runs one validated tool call. Implementations never raise for tool-level failures:
    they return ``ToolResult(ok=False, text=<clear message>)`` so the model can react."""

    specs: tuple[ToolSpec, ...]

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult: ...

    async def aclose(self) -> None: ...
