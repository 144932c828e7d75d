"""One way to build and run every Fathom gRPC server.

``build_server`` gives a grpc.aio server with what each service needs and none writes itself: the
standard health service (SERVING for each service and for ""), reflection, bearer-token auth,
trace-id binding, TLS / mutual TLS from settings, message size limits and bounded concurrency.
``serve`` runs it until SIGTERM/SIGINT, then drains: health goes NOT_SERVING first (load balancers
stop sending), streams are told to end, in-flight calls get ``grace_s`` to finish, owned resources
are closed last.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from fathom.core.config import Settings
from fathom.core.errors import ConfigError
from fathom.core.logging import bind_trace, get_logger
from fathom.rpc.auth import AuthInterceptor, load_tokens, wrap_handler
from fathom.rpc.tls import server_credentials

log = get_logger(__name__)

TRACE_KEY = "x-fathom-trace-id"
_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+|\*)?:(?P<port>\d{1,5})$")

Hook = Callable[[], Awaitable[Any] | Any]


class Health(HealthServicer):
    """The aio health servicer with synchronous initial statuses (no watcher exists yet)."""

    def set_initial(self, names: Sequence[str]) -> None:
        for name in ("", *names):
            self._server_status[name] = health_pb2.HealthCheckResponse.SERVING


class TraceIdInterceptor(grpc.aio.ServerInterceptor):
    """Binds the caller's ``x-fathom-trace-id`` (or a new id) into structlog contextvars, so every
    log line of the call carries it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        trace_id: str | None = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TRACE_KEY:
                trace_id = value.decode() if isinstance(value, bytes) else str(value)
        method = handler_call_details.method

        def bind() -> None:
            # The one trace-id rule (core.logging): a caller's id is checked before it reaches a log
            # line, and replaced by a new one when it is not a valid id.
            bind_trace(trace_id)
            structlog.contextvars.bind_contextvars(rpc=method)

        return wrap_handler(handler, bind)


_CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _code_name(context: Any, default: str) -> str:
    """The status the servicer set (abort or set_code), else ``default``."""
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and code in _CODE_NAMES:
        return _CODE_NAMES[code]
    return default


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """``fathom_grpc_seconds{service,method,code}`` for every unary and server-streaming call (a
    stream is timed to its end). Outermost, so refusals by auth are counted too."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        from fathom.core.metrics import observe_grpc

        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def uu(request: Any, context: Any) -> Any:
                started, code = time.perf_counter(), "UNKNOWN"
                try:
                    result = await inner_uu(request, context)
                    code = _code_name(context, "OK")
                    return result
                except BaseException:
                    code = _code_name(context, "UNKNOWN")
                    raise
                finally:
                    observe_grpc(service, method, code, time.perf_counter() - started)

            return grpc.unary_unary_rpc_method_handler(uu, **kwargs)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            async def us(request: Any, context: Any) -> Any:
                started, code = time.perf_counter(), "UNKNOWN"
                try:
                    async for item in inner_us(request, context):
                        yield item
                    code = _code_name(context, "OK")
                except BaseException:
                    code = _code_name(context, "CANCELLED")
                    raise
                finally:
                    observe_grpc(service, method, code, time.perf_counter() - started)

            return grpc.unary_stream_rpc_method_handler(us, **kwargs)
        return handler


def check_address(address: str) -> tuple[str, int]:
    """HOST:PORT (port 0 = any free one); ConfigError with one clear line otherwise."""
    match = _ADDRESS.match(address.strip())
    if not match or int(match["port"]) > 65535:
        raise ConfigError(f"bad address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
    return match["host"] or "", int(match["port"])


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    limit = settings.plane.max_message_bytes
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.so_reuseport", 0),  # a second server on a used port must fail, not share it
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]


def build_server(
    settings: Settings,
    *,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    address: str,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, Health, int]:
    """A configured, bound, not yet started server; the port is the bound one (``:0`` picks one)."""
    check_address(address)
    credentials = server_credentials(settings)
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(), TraceIdInterceptor(), AuthInterceptor(load_tokens(settings)),
                      *interceptors],
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.plane.max_concurrent_rpcs,
    )
    register(server)
    health = Health()
    health.set_initial(service_names)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {address}: the address is in use or not local ({exc})") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the address is in use or not local")
    log.info("rpc_server_bound", address=address, port=port, tls=credentials is not None,
             mutual_tls=settings.plane.tls_client_ca is not None, services=service_names)
    return server, health, port


async def _run_hook(hook: Hook | None, name: str) -> None:
    if hook is None:
        return
    try:
        result = hook()
        if inspect.isawaitable(result):
            await result
    except Exception:  # a failing hook must not stop the rest of the shutdown
        log.exception("rpc_shutdown_hook_failed", hook=name)


async def serve(
    server: grpc.aio.Server,
    health: Health,
    *,
    grace_s: float,
    on_stop: Hook | None = None,
    on_drain: Hook | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Start, wait for SIGTERM/SIGINT (or ``stop_event``), then drain and stop.

    ``on_drain`` runs after health turns NOT_SERVING and before the drain (tell long streams to
    end); ``on_stop`` after the server stopped (close owned resources)."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    await server.start()
    log.info("rpc_server_started")
    try:
        await stop.wait()
        log.info("rpc_server_draining", grace_s=grace_s)
        await health.enter_graceful_shutdown()
        await _run_hook(on_drain, "on_drain")
        await server.stop(grace_s)
        log.info("rpc_server_stopped")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await _run_hook(on_stop, "on_stop")


async def run_service(
    settings: Settings,
    *,
    name: str,
    register: Callable[[grpc.aio.Server], None],
    service_names: list[str],
    address: str,
    metrics_port: int | None = None,
    on_stop: Hook | None = None,
    on_drain: Hook | None = None,
    stop_event: asyncio.Event | None = None,
) -> None:
    """What every ``fathom serve <service>`` process does: metrics, build, announce, serve, drain."""
    port_for_metrics = metrics_port if metrics_port is not None else settings.plane.metrics_port
    if port_for_metrics is not None:
        from fathom.core.metrics import start_metrics_server

        log.info("metrics_listening", port=start_metrics_server(port_for_metrics))
    try:
        server, health, port = build_server(settings, register=register, service_names=service_names,
                                            address=address)
    except BaseException:
        await _run_hook(on_stop, "on_stop")
        raise
    host, _ = check_address(address)
    # One line a supervisor (fathom stack, tests) reads to learn the bound port of ":0".
    print(f"fathom serve {name}: listening on {host or '0.0.0.0'}:{port}", flush=True)
    await serve(server, health, grace_s=settings.plane.grace_s, on_stop=on_stop, on_drain=on_drain,
                stop_event=stop_event)
