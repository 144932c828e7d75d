"""httpx transport that connects only to addresses the SSRF guard checked (DNS-rebinding pin).

httpcore opens TCP connections through a *network backend*; ours asks the guard for the pinned
addresses of ``host:port`` and connects to those IPs. TLS still verifies against the host name
(httpcore wraps the socket with ``server_hostname`` = the URL's host), and the connection pool is
still keyed by host name, so keep-alive and certificates behave as usual.

A caller that already holds checked addresses (the browser path checks each origin once per page)
can hand them over with ``connect_only_to``: connections opened inside that block go to those
addresses, and the name is not resolved again.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping

import httpcore
import httpx
from httpcore._backends.auto import AutoBackend
from httpcore._utils import is_socket_readable

from fathom.tools.fetch.ssrf import SSRFGuard, normalise_host

AddressBook = Mapping[tuple[str, int], tuple[str, ...]]
# Set per task: httpcore dials in the task that sends the request, so a route handler's block
# covers exactly its own connections.
_CHECKED: contextvars.ContextVar[AddressBook | None] = contextvars.ContextVar("fathom_checked", default=None)


@contextlib.contextmanager
def connect_only_to(addresses: AddressBook) -> Iterator[None]:
    """Within this block, ``(host, port)`` found in ``addresses`` is dialled at those addresses only."""
    token = _CHECKED.set(addresses)
    try:
        yield
    finally:
        _CHECKED.reset(token)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, guard: SSRFGuard) -> None:
        self._guard = guard
        self._inner = AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        book = _CHECKED.get()
        ips = book.get((normalise_host(host), port)) if book is not None else None
        if ips is None:
            ips = await self._guard.pinned_ips(host, port)
        last: Exception | None = None
        for ip in ips:
            try:
                stream = await self._inner.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
                return _CachedSocketStream(stream, stream.get_extra_info("socket"))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}:{port}")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CachedSocketStream(httpcore.AsyncNetworkStream):
    """Answers ``is_readable`` from a socket looked up once.

    httpcore asks every idle pooled connection ``is_readable`` whenever it places a request; the
    anyio stream rebuilds its whole attribute table (getpeername and friends) for each question,
    which dominated CPU time in the fetch benchmark (tens of syscalls per request).
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream, sock: socket.socket | None) -> None:
        self._inner = inner
        self._sock = sock

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        tls = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _CachedSocketStream(tls, self._sock)

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable":
            return is_socket_readable(self._sock)
        if info == "socket":
            return self._sock
        return self._inner.get_extra_info(info)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connection pool dials through ``PinnedBackend``."""

    def __init__(self, guard: SSRFGuard, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx builds its pool without a network-backend hook; replace it with an identical pool
        # that has one. Same request/response mapping and exception translation as httpx.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(guard),
        )
