"""``Toolbox``: the agent's two tools, ``search_urls`` and ``query_url``, behind one ``ToolRunner``.

``build_toolbox`` is the one place that builds the search backend, the fetch chain and the
extractor from settings. Every tool-level failure (refused URL, fetch error, replay miss, search
error, timeout, bad arguments) comes back as ``ToolResult(ok=False, text=<clear message>)``: the
model reads it and carries on; nothing raises into the agent loop.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Protocol

from fathom.core.config import Settings
from fathom.core.errors import FathomError, ModelError, SSRFError, ToolError
from fathom.core.logging import get_logger
from fathom.models.base import ModelBackend
from fathom.tools.base import (
    QUERY_URL,
    SEARCH_URLS,
    TOOL_SPECS,
    TOP_K_DEFAULT,
    TOP_K_MAX,
    TOP_K_MIN,
    ToolResult,
    ToolSpec,
)
from fathom.tools.extract import EvidenceExtractor, ExtractionCache, format_query_url_result
from fathom.tools.fetch.base import PageSnapshot
from fathom.tools.search.base import SearchBackend, format_results

if TYPE_CHECKING:
    from fathom.tools.fetch.chain import ReadResult

log = get_logger(__name__)

MAX_QUERY_CHARS = 1_000
MAX_GOAL_CHARS = 2_000
MAX_URL_CHARS = 4_096
# Slack on top of the configured per-fetch deadlines: the chain enforces those itself; this outer
# limit only guarantees that one tool call cannot hang the agent if something below misbehaves.
_FETCH_SLACK_S = 5.0


class PageReader(Protocol):
    """What the toolbox needs of the fetch chain."""

    async def read(
        self, url: str, *, render: bool | None = None, deadline_s: float | None = None
    ) -> ReadResult: ...

    async def aclose(self) -> None: ...


class ArgumentError(ToolError):
    """The model's arguments for a tool call are unusable."""


def _error(tool: str, message: str, kind: str, **meta: Any) -> ToolResult:
    return ToolResult(text=f"Error ({tool}): {message}", ok=False, meta={"error": kind, **meta})


def _text_arg(tool: str, arguments: dict[str, Any], name: str, limit: int) -> str:
    value = arguments.get(name)
    if value is None:
        raise ArgumentError(tool, f"missing required argument '{name}'")
    if not isinstance(value, str):
        raise ArgumentError(tool, f"argument '{name}' must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ArgumentError(tool, f"argument '{name}' is empty")
    if len(value) > limit:
        raise ArgumentError(tool, f"argument '{name}' is too long ({len(value)} characters, at most {limit})")
    return value


def top_k_problem(top_k: int) -> str | None:
    """Why ``top_k`` is refused, or None. Out of range is an error the model reads, never a
    silent clamp: it then knows how many results it really got."""
    if TOP_K_MIN <= top_k <= TOP_K_MAX:
        return None
    return f"argument 'top_k' must be between {TOP_K_MIN} and {TOP_K_MAX}, got {top_k}"


def parse_top_k(value: Any) -> int:
    """``top_k`` as written (an integer, or a whole number as float or string), within the tool
    schema's limit; anything else raises ``ArgumentError``."""
    if value is None:
        return TOP_K_DEFAULT
    if isinstance(value, bool):
        raise ArgumentError("search_urls", "argument 'top_k' must be an integer")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ArgumentError("search_urls", f"argument 'top_k' must be an integer, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ArgumentError("search_urls", f"argument 'top_k' must be an integer, got {value!r}")
    problem = top_k_problem(int(number))
    if problem:
        raise ArgumentError("search_urls", problem)
    return int(number)


async def run_search(search: SearchBackend, query: str, top_k: int, *, timeout_s: float) -> ToolResult:
    """``search_urls``: the backend's hits as the original's numbered markdown, or a tool error."""
    problem = top_k_problem(top_k)
    if problem:
        return _error("search_urls", problem, "ArgumentError")
    try:
        async with asyncio.timeout(timeout_s + _FETCH_SLACK_S):
            hits = await search.search(query, top_k)
    except TimeoutError:
        return _error("search_urls", f"the search for '{query}' timed out", "Timeout")
    except ToolError as exc:
        return _error("search_urls", exc.message, type(exc).__name__)
    except FathomError as exc:  # e.g. a config or index problem: still the model's to see
        log.warning("search_urls.failed", query=query, error=str(exc))
        return _error("search_urls", str(exc), type(exc).__name__)
    return ToolResult(
        text=format_results(query, hits),
        meta={"hits": len(hits), "top_k": top_k, "backend": search.name, "urls": [h.url for h in hits]},
    )


def page_meta(url: str, result: ReadResult) -> dict[str, Any]:
    """Provenance of a page read, as tool results and the CLI report it."""
    return {
        "url": url,
        "final_url": result.page.final_url,
        "status": result.page.status,
        "fetcher": result.page.fetcher,
        "content_type": result.page.content_type,
        "snapshot_sha256": result.snapshot.sha256 if result.snapshot is not None else None,
        "title": result.text.title,
        "text_extractor": result.text.extractor,
    }


def _snapshot_json(snapshot: PageSnapshot) -> dict[str, Any]:
    data = asdict(snapshot)
    data["fetched_at"] = snapshot.fetched_at.isoformat()
    return data


def fetch_limit_s(settings: Settings) -> float:
    """Outer bound of one fetch: plain try, browser try, and some slack."""
    return settings.fetch.deadline_s + settings.fetch.browser_deadline_s + _FETCH_SLACK_S


async def read_for_tool(
    reader: PageReader, url: str, *, render: bool | None, limit_s: float
) -> ReadResult | ToolResult:
    """The page's main text, or the tool error the model should read instead."""
    try:
        async with asyncio.timeout(limit_s):
            return await reader.read(url, render=render)
    except TimeoutError:
        return _error("query_url", f"fetching {url} took longer than {limit_s:.0f} s", "Timeout", url=url)
    except SSRFError as exc:
        return _error("query_url", f"this URL may not be fetched — {exc.message}", "SSRFError", url=url)
    except ToolError as exc:  # FetchError, ReplayMiss, ...
        return _error("query_url", exc.message, type(exc).__name__, url=url)


class Toolbox:
    """Runs ``search_urls`` and ``query_url`` for the agent (implements ``ToolRunner``)."""

    specs: tuple[ToolSpec, ...] = TOOL_SPECS

    def __init__(
        self,
        search: SearchBackend,
        reader: PageReader,
        extractor: EvidenceExtractor,
        settings: Settings,
        *,
        owns_extractor_backend: bool = False,
    ) -> None:
        self.search = search
        self.reader = reader
        self.extractor = extractor
        self.settings = settings
        self._owns_backend = owns_extractor_backend
        self._closed = False

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        if not isinstance(arguments, dict):
            return _error(name, "arguments must be a JSON object", "ArgumentError")
        try:
            if name == SEARCH_URLS.name:
                query = _text_arg(name, arguments, "query", MAX_QUERY_CHARS)
                return await self.search_urls(query, parse_top_k(arguments.get("top_k")))
            if name == QUERY_URL.name:
                url = _text_arg(name, arguments, "url", MAX_URL_CHARS)
                goal = _text_arg(name, arguments, "goal", MAX_GOAL_CHARS)
                return await self.query_url(url, goal)
        except ArgumentError as exc:
            return _error(name, exc.message, "ArgumentError")
        except Exception as exc:
            # A defect below must not end a long trajectory: the model is told the call failed,
            # the log keeps the traceback.
            log.exception("tool.internal_error", tool=name)
            return _error(name, f"internal error ({type(exc).__name__}); try again or another source",
                          type(exc).__name__)
        known = ", ".join(s.name for s in self.specs)
        return _error(name, f"unknown tool '{name}'; the tools are: {known}", "UnknownTool")

    async def search_urls(self, query: str, top_k: int = TOP_K_DEFAULT) -> ToolResult:
        return await run_search(self.search, query, top_k, timeout_s=self.settings.search.timeout_s)

    async def query_url(self, url: str, goal: str, *, render: bool | None = None) -> ToolResult:
        result = await read_for_tool(self.reader, url, render=render, limit_s=fetch_limit_s(self.settings))
        if isinstance(result, ToolResult):
            return result
        page_text = result.text.text
        sha = result.snapshot.sha256 if result.snapshot is not None else None
        try:
            # The whole text: the extractor reads its first page_chars, its fallbacks all of it.
            evidence = await self.extractor.extract(url, goal, page_text, page_sha256=sha)
        except ModelError as exc:  # the extractor falls back on its own; this is a last guard
            return _error("query_url", f"the extractor model failed: {exc}", "ModelError", url=url)
        meta: dict[str, Any] = {
            **page_meta(url, result),
            # The whole provenance record, JSON-ready, so the job store can keep the snapshot row
            # beside the tool call that read it (ResearchService records it per step).
            "snapshot": _snapshot_json(result.snapshot) if result.snapshot is not None else None,
            "page_chars": len(page_text),
            "page_truncated": result.text.truncated or len(page_text) > self.settings.extract.page_chars,
            "method": evidence.method,
            "attempts": evidence.attempts,
            "quotes": len(evidence.evidence),
            "dropped_quotes": evidence.dropped_quotes,
            "evidence_source": evidence.evidence_source,
            "extractor_model": evidence.model,
            "extractor_max_new_tokens": self.extractor.max_new_tokens,
            "cached": evidence.cached,
        }
        return ToolResult(text=format_query_url_result(url, goal, evidence), meta=meta)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.search.aclose()
        await self.reader.aclose()
        if self._owns_backend:
            await self.extractor.backend.aclose()
        if self.extractor.cache is not None:
            self.extractor.cache.close()

    async def __aenter__(self) -> Toolbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def build_toolbox(
    settings: Settings,
    *,
    local_web_base: str | None = None,
    extractor_backend: ModelBackend | None = None,
    allow_origins: list[str] | None = None,
) -> Toolbox:
    """Search backend + fetch chain + extractor, from settings.

    ``local_web_base``: the address of a running local web (local mode). Local search hits link
    there, and that origin — and no other private address — is allowlisted for fetching.
    ``extractor_backend``: an already loaded model to use. Either way the toolbox does not close
    the model: one given is the caller's, and one from ``fathom.models.factory`` may be shared with
    other roles (close those with ``factory.close_backends()``).
    """
    from fathom.tools.fetch.chain import build_fetch_chain
    from fathom.tools.search.factory import build_search_backend

    origins = list(allow_origins or [])
    if local_web_base:
        origins.append(local_web_base.rstrip("/"))
    search = build_search_backend(settings, base_url=local_web_base)
    reader = build_fetch_chain(settings.fetch, allow_origins=origins, snapshot_dir=settings.snapshot_dir)
    if extractor_backend is None:
        from fathom.models.factory import build_backend

        extractor_backend = build_backend("extractor", settings)
    cache = ExtractionCache.in_dir(settings.cache_dir) if settings.extract.cache else None
    extractor = EvidenceExtractor(extractor_backend, settings.extractor, settings.extract, cache)
    return Toolbox(search, reader, extractor, settings)
