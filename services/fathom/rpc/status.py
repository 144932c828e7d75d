"""Typed service errors <-> gRPC status codes with a google.rpc ErrorInfo detail.

Servicers raise ``fathom.core.errors`` types; ``@maps_errors`` turns them into one status code and a
machine-readable ``ErrorInfo`` (reason, domain ``fathom.v1``, metadata) in the rich status details.
Clients call ``error_from_rpc`` to get the same typed error back, so the CLI never parses messages.
Anything unexpected becomes INTERNAL with a generic message: the traceback is logged, never sent.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from fathom.core.errors import (
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    QuotaExceeded,
    ServiceError,
    StoreError,
    Unauthenticated,
    Unavailable,
)
from fathom.core.logging import get_logger

log = get_logger(__name__)

DOMAIN = "fathom.v1"
_ERROR_INFO_TYPES = ("google.rpc.ErrorInfo", "fathom.v1.ErrorInfo")

# Most specific first: the first isinstance match wins.
_CODES: tuple[tuple[type[ServiceError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
)
_TYPES: dict[grpc.StatusCode, type[ServiceError]] = {code: cls for cls, code in _CODES}
_TYPES[grpc.StatusCode.RESOURCE_EXHAUSTED] = QuotaExceeded

# StoreError messages that name a missing object ("no job with id ...", "... not found").
_NOT_FOUND_TEXT = re.compile(r"^no \w+ (with|id|named)\b|\bnot found\b|\bdoes not exist\b", re.IGNORECASE)

F = TypeVar("F", bound=Callable[..., Any])


def _store_error_code(exc: StoreError) -> tuple[grpc.StatusCode, str]:
    from fathom.store.records import RecordNotFound

    if isinstance(exc, RecordNotFound) or _NOT_FOUND_TEXT.search(str(exc)):
        return grpc.StatusCode.NOT_FOUND, "NOT_FOUND"
    return grpc.StatusCode.FAILED_PRECONDITION, "STORE_REFUSED"


def classify(exc: BaseException) -> tuple[grpc.StatusCode, str, str, dict[str, str]]:
    """(code, message, reason, metadata) for an exception; the message is safe to send."""
    if isinstance(exc, ServiceError):
        for cls, code in _CODES:
            if isinstance(exc, cls):
                return code, exc.message, exc.reason, dict(exc.metadata)
        return grpc.StatusCode.UNKNOWN, exc.message, exc.reason, dict(exc.metadata)
    if isinstance(exc, StoreError):
        code, reason = _store_error_code(exc)
        return code, str(exc), reason, {}
    if isinstance(exc, ConfigError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc), "CONFIG_ERROR", {}
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)", "INTERNAL", {}


def error_status(code: grpc.StatusCode, message: str, reason: str,
                 metadata: dict[str, str] | None = None) -> grpc.Status:
    """A grpc.Status carrying google.rpc.Status with one ErrorInfo packed as Any."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    proto = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(proto)


def status_for(exc: BaseException) -> grpc.Status:
    code, message, reason, metadata = classify(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("rpc_internal_error", error_type=type(exc).__name__, exc_info=exc)
    return error_status(code, message, reason, metadata)


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """End the call with the status ``exc`` maps to (never returns)."""
    await context.abort_with_status(status_for(exc))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _passes_through(exc: BaseException) -> bool:
    # An abort already under way, or the call cancelled by the client/deadline: not ours to map.
    return isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError))


def maps_errors(func: F) -> F:
    """Decorate an aio servicer method (coroutine or async generator) so that raised errors become
    statuses with ErrorInfo; works for unary and server-streaming methods alike."""
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in func(self, request, context):
                    yield item
            except BaseException as exc:
                if _passes_through(exc) or not isinstance(exc, Exception):
                    raise
                await abort_for(context, exc)

        return cast(F, stream)

    @functools.wraps(func)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await func(self, request, context)
        except BaseException as exc:
            if _passes_through(exc) or not isinstance(exc, Exception):
                raise
            await abort_for(context, exc)

    return cast(F, unary)


# -- client side -------------------------------------------------------------------------------


def _error_info(exc: grpc.aio.AioRpcError) -> tuple[str | None, dict[str, str]]:
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:  # details that disagree with the code/message: ignore them
        return None, {}
    if status is None:
        return None, {}
    for detail in status.details:
        if detail.TypeName() in _ERROR_INFO_TYPES:
            info = error_details_pb2.ErrorInfo()
            info.ParseFromString(detail.value)
            return info.reason, dict(info.metadata)
    return None, {}


def error_from_rpc(exc: grpc.aio.AioRpcError | grpc.RpcError) -> ServiceError:
    """The typed ServiceError a failed call stands for (reason and metadata from its ErrorInfo)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = (exc.details() if hasattr(exc, "details") else None) or str(code)
    reason, metadata = _error_info(exc) if isinstance(exc, grpc.aio.AioRpcError) else (None, {})
    cls = _TYPES.get(code, ServiceError)
    err = cls(message, reason=reason or (None if cls is not ServiceError else code.name), **metadata)
    err.metadata["grpc_code"] = code.name
    return err
