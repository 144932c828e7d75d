"""``ToolsService``: Fathom's search and fetch for services that want them without an agent.

Calls go onto the same ``search`` / ``fetch`` queues the policy uses, in the request's lane, through
a ``QueueToolRunner`` (``fathom.queue.runner``) with the request's ``call_id`` as the idempotency key
(a retried call returns the recorded result). Malformed requests are INVALID_ARGUMENT before anything
is queued; tool failures (a dead page, a refused URL) are results with ``ok = false``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from fathom.core.errors import InvalidArgument
from fathom.rpc import convert
from fathom.rpc.gen import tools_pb2, tools_pb2_grpc
from fathom.rpc.status import maps_errors
from fathom.tools.base import TOP_K_DEFAULT, TOP_K_MAX, TOP_K_MIN, ToolResult
from fathom.tools.toolbox import MAX_GOAL_CHARS, MAX_QUERY_CHARS, MAX_URL_CHARS

SERVICE_NAME = tools_pb2.DESCRIPTOR.services_by_name["ToolsService"].full_name
_CALL_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_RENDER: dict[int, bool | None] = {tools_pb2.RENDER_MODE_UNSPECIFIED: None,
                                   tools_pb2.RENDER_MODE_NEVER: False, tools_pb2.RENDER_MODE_ALWAYS: True}


class QueueCaller(Protocol):
    """What the servicer needs of ``fathom.queue.runner.QueueToolRunner``."""

    async def call(
        self, name: str, arguments: dict[str, Any], *, call_id: str | None = None, render: bool | None = None
    ) -> ToolResult: ...

    async def fetch(
        self, url: str, *, render: bool | None = None, call_id: str | None = None
    ) -> ToolResult: ...


RunnerFactory = Callable[[str], QueueCaller]  # lane -> runner of that lane


def _text(value: str, field: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise InvalidArgument(f"{field} is empty", reason="EMPTY_FIELD", field=field)
    if len(text) > limit:
        raise InvalidArgument(f"{field} is longer than {limit} characters", reason="FIELD_TOO_LONG",
                              field=field, limit=limit)
    return text


def _call_id(value: str) -> str:
    if not value:
        return uuid.uuid4().hex
    if not _CALL_ID.match(value):
        raise InvalidArgument("call_id must be 1 to 128 characters of [A-Za-z0-9._:-]",
                              reason="BAD_CALL_ID", field="call_id")
    return value


def _render(value: int) -> bool | None:
    try:
        return _RENDER[value]
    except KeyError:
        raise InvalidArgument(f"unknown render enum value {value}", reason="UNKNOWN_RENDER_MODE",
                              field="render") from None


def _error(result: ToolResult) -> str:
    return "" if result.ok else str(result.meta.get("error_message") or result.text)


def tool_result_to_proto(result: ToolResult, call_id: str) -> tools_pb2.ToolResult:
    return tools_pb2.ToolResult(
        ok=result.ok, text=result.text, error=_error(result),
        snapshot_sha256=str(result.meta.get("snapshot_sha256") or ""),
        elapsed_s=float(result.meta.get("elapsed_s") or 0.0), call_id=call_id,
    )


def fetch_result_to_proto(result: ToolResult, url: str) -> tools_pb2.FetchResponse:
    meta = result.meta
    return tools_pb2.FetchResponse(
        ok=result.ok, error=_error(result), url=str(meta.get("url") or url),
        final_url=str(meta.get("final_url") or ""), status=int(meta.get("status") or 0),
        content_type=str(meta.get("content_type") or ""), title=str(meta.get("title") or ""),
        text=result.text if result.ok else "", rendered=bool(meta.get("rendered")),
        snapshot_sha256=str(meta.get("snapshot_sha256") or ""), elapsed_s=float(meta.get("elapsed_s") or 0.0),
    )


class ToolsServicer(tools_pb2_grpc.ToolsServiceServicer):
    def __init__(self, runner_factory: RunnerFactory) -> None:
        self.runner_factory = runner_factory
        self._runners: dict[str, QueueCaller] = {}

    def _runner(self, lane: str) -> QueueCaller:
        if lane not in self._runners:
            self._runners[lane] = self.runner_factory(lane)
        return self._runners[lane]

    async def aclose(self) -> None:
        for runner in self._runners.values():
            aclose = getattr(runner, "aclose", None)
            if aclose is not None:
                await aclose()
        self._runners.clear()

    @maps_errors
    async def SearchUrls(self, request: tools_pb2.SearchUrlsRequest, context: Any) -> tools_pb2.ToolResult:
        query = _text(request.query, "query", MAX_QUERY_CHARS)
        top_k = request.top_k or TOP_K_DEFAULT
        if not TOP_K_MIN <= top_k <= TOP_K_MAX:
            raise InvalidArgument(f"top_k must be between {TOP_K_MIN} and {TOP_K_MAX}",
                                  reason="TOP_K_OUT_OF_RANGE", field="top_k", min=TOP_K_MIN, max=TOP_K_MAX)
        lane, call_id = convert.lane_from_proto(request.lane), _call_id(request.call_id)
        arguments = {"query": query, "top_k": top_k}
        result = await self._runner(lane).call("search_urls", arguments, call_id=call_id)
        return tool_result_to_proto(result, call_id)

    @maps_errors
    async def QueryUrl(self, request: tools_pb2.QueryUrlRequest, context: Any) -> tools_pb2.ToolResult:
        url = _text(request.url, "url", MAX_URL_CHARS)
        goal = _text(request.goal, "goal", MAX_GOAL_CHARS)
        render = _render(request.render)  # None: the fetch chain decides (browser for script-built pages)
        lane, call_id = convert.lane_from_proto(request.lane), _call_id(request.call_id)
        result = await self._runner(lane).call("query_url", {"url": url, "goal": goal}, call_id=call_id,
                                               render=render)
        return tool_result_to_proto(result, call_id)

    @maps_errors
    async def Fetch(self, request: tools_pb2.FetchRequest, context: Any) -> tools_pb2.FetchResponse:
        url = _text(request.url, "url", MAX_URL_CHARS)
        render = _render(request.render)
        lane, call_id = convert.lane_from_proto(request.lane), _call_id(request.call_id)
        result = await self._runner(lane).fetch(url, render=render, call_id=call_id)
        return fetch_result_to_proto(result, url)


def register(server: grpc.aio.Server, servicer: ToolsServicer) -> None:
    tools_pb2_grpc.add_ToolsServiceServicer_to_server(servicer, server)
