"""Bearer-token authentication for every gRPC method but health and reflection.

Tokens come from the environment (``FATHOM_PLANE__AUTH_TOKENS="client:token,client2:token2"``) or a
mounted file (``plane.auth_tokens_file``, one ``client:token`` a line, ``#`` comments). The presented
token is compared with every configured one in constant time, with no early exit, so timing tells
nothing about which (or whether a prefix) matched. The client id of the matching token is put in
``current_client_id`` for the servicers (per-client quotas). No tokens configured: auth is off,
said once in the log at startup.
"""

from __future__ import annotations

import contextvars
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from fathom.core.config import Settings
from fathom.core.errors import ConfigError
from fathom.core.logging import get_logger
from fathom.rpc.status import error_status

log = get_logger(__name__)

current_client_id: contextvars.ContextVar[str] = contextvars.ContextVar("fathom_client_id", default="")

EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def _parse_pairs(pairs: list[str], source: str) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for n, raw in enumerate(pairs, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        client, sep, token = line.partition(":")
        client, token = client.strip(), token.strip()
        if not sep or not client or not token:
            # The line number only: the line itself may hold a secret.
            raise ConfigError(f"{source}: entry {n} is not 'client:token'")
        if token in tokens and tokens[token] != client:
            raise ConfigError(f"{source}: entry {n} reuses another client's token")
        tokens[token] = client
    return tokens


def load_tokens(settings: Settings) -> dict[str, str]:
    """token -> client id, from ``plane.auth_tokens`` and ``plane.auth_tokens_file``."""
    plane = settings.plane
    tokens: dict[str, str] = {}
    if plane.auth_tokens is not None:
        tokens.update(_parse_pairs(plane.auth_tokens.get_secret_value().split(","), "plane.auth_tokens"))
    if plane.auth_tokens_file is not None:
        try:
            text = plane.auth_tokens_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read plane.auth_tokens_file {plane.auth_tokens_file}: {exc}") from exc
        tokens.update(_parse_pairs(text.splitlines(), str(plane.auth_tokens_file)))
    return tokens


def match_token(tokens: dict[str, str], presented: str) -> str | None:
    """The client id of ``presented``; every configured token is compared (constant time each)."""
    given = presented.encode()
    found: str | None = None
    for token, client in tokens.items():
        if hmac.compare_digest(token.encode(), given):
            found = client
    return found


def bearer_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


# -- handler wrapping: run something in the handler's own context before its body ---------------

Before = Callable[[], None]


def wrap_handler(handler: grpc.RpcMethodHandler, before: Before) -> grpc.RpcMethodHandler:
    """The same handler, calling ``before()`` inside the call's own task first (contextvars set
    there are seen by the servicer, unlike ones set in ``intercept_service``)."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def uu(request: Any, context: Any) -> Any:
            before()
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(uu, **kwargs)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def us(request: Any, context: Any) -> Any:
            before()
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(us, **kwargs)
    if handler.stream_unary:
        inner_su = handler.stream_unary

        async def su(requests: Any, context: Any) -> Any:
            before()
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(su, **kwargs)
    inner_ss = handler.stream_stream

    async def ss(requests: Any, context: Any) -> Any:
        before()
        async for item in inner_ss(requests, context):
            yield item

    return grpc.stream_stream_rpc_method_handler(ss, **kwargs)


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that only aborts with UNAUTHENTICATED."""
    status = error_status(grpc.StatusCode.UNAUTHENTICATED, message, "UNAUTHENTICATED")
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}

    async def unary(request: Any, context: Any) -> Any:
        await context.abort_with_status(status)

    async def stream(request: Any, context: Any) -> Any:
        await context.abort_with_status(status)
        yield  # pragma: no cover - abort raises

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(stream, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without a known bearer token (UNAUTHENTICATED + ErrorInfo); health and
    reflection are open so that orchestrators and grpcurl can probe without a secret."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = dict(tokens)
        if not self.tokens:
            log.warning("rpc_auth_off", why="no plane.auth_tokens or plane.auth_tokens_file configured")

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.enabled or method.startswith(EXEMPT_PREFIXES):
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        if token is None:
            log.info("rpc_unauthenticated", method=method, why="no authorization metadata")
            return _refusing(handler, "missing bearer token: send metadata 'authorization: Bearer <token>'")
        client = match_token(self.tokens, token)
        if client is None:
            log.info("rpc_unauthenticated", method=method, why="unknown token")
            return _refusing(handler, "invalid bearer token")

        def bind() -> None:
            current_client_id.set(client)

        return wrap_handler(handler, bind)
